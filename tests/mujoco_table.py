"""The PPO paper's MuJoCo benchmark (sections 6.1-6.2: Table 1's score, Figure 3's curves):
seven tasks at one million steps, three seeds each, scored as the paper scores them: the
mean total reward of the last 100 training episodes, here the mean return that ppo.py logs
at the end of each run.

Each task and seed trains with ppo.py's settings for MuJoCo ids, unchanged (Table 3's sizes
and rates, plus ppo.py's observation normalization, reward scaling and learning-rate decay):
    python ppo.py --env TASK --seed SEED --run-dir RUNS/TASK-seedSEED
A folder of RUNS that already holds that run, finished, is read, not trained again, so the
table can be built over several sittings; every folder is checked before anything trains,
and one that holds an unfinished run or other settings is refused.

It writes, for each run, its config.json and metrics.csv to tests/results/mujoco/TASK-seedSEED/
(folders that `python ppo.py --plot` draws), the picture of all the tasks' curves,
tests/results/mujoco-learning-curves.png, and tests/results/mujoco-table-<cpu>.csv (one row
per run under comment lines with the command, the CPU, the commit and the versions), then
prints the table in Markdown beside the published figures. With --jobs above 1 the wall
times are not a timing. Not collected by pytest: hours of training are a measurement.

Run from the repository root:
    python tests/mujoco_table.py --jobs 2
    python tests/mujoco_table.py --tasks Hopper-v5 --seeds 1-3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

from benchmark import PPO_PROGRAM, RESULTS, cpu_family_and_model, cpu_model, machine_line, parse_seeds, slug

sys.path.insert(0, os.path.dirname(PPO_PROGRAM))
import ppo  # noqa: E402  (the settings a run should have, and its metrics as --plot reads them)

# Published mean returns at one million steps. The PPO paper gives them only as curves
# (Figure 3, the v1 tasks): the values read off it are approximate. CleanRL:
# ppo_continuous_action on the v4 tasks, 3 seeds, mean +/- std. Stable-Baselines3: the
# rl-baselines3-zoo benchmark (v3 tasks, hyperparameters tuned per task, one run, the return
# of the trained agent's evaluation episodes rather than of its training episodes).
PUBLISHED = {
    "HalfCheetah-v5": ("~1,800", "1,442.64 ± 46.03", "5,819.1"),
    "Hopper-v5": ("~2,330", "2,382.86 ± 271.74", "2,410.4"),
    "Walker2d-v5": ("~3,460", "2,287.95 ± 571.78", "3,478.8"),
    "Swimmer-v5": ("~108", "-", "281.6"),
    "Reacher-v5": ("~-7", "-", "-"),
    "InvertedPendulum-v5": ("~1,000", "963.09 ± 22.20", "-"),
    "InvertedDoublePendulum-v5": ("~8,000", "-", "-"),
}
TABLE_FOLDER = os.path.join(RESULTS, "mujoco")


def run_folder(runs: str, task: str, seed: int) -> str:
    return os.path.join(runs, f"{task}-seed{seed}")


def check_folder(task: str, seed: int, runs: str) -> None:
    """Refuse a folder that holds an unfinished run, or a run of other settings than ppo.py's
    for this task and seed: the table holds only whole runs of one setting."""
    run_dir = run_folder(runs, task, seed)
    if not os.path.isdir(run_dir):
        return
    try:
        values, metrics = ppo.read_run_config(run_dir), ppo.read_metrics(run_dir)
    except ppo.UserError:
        raise SystemExit(f"{run_dir} does not hold a run that ppo.py wrote; delete it or give another --runs")
    expected = json.loads(json.dumps(dataclasses.asdict(ppo.make_config(task, seed=seed))))  # tuples as JSON lists
    if ppo.learning_settings(values) != ppo.learning_settings(expected):
        raise SystemExit(f"{run_dir} holds a run of other settings than ppo.py's for {task}; delete it or give another --runs")
    if metrics["global_step"].size < ppo.config_from_dict(values).num_iterations:
        raise SystemExit(f"{run_dir} holds an unfinished run: finish it (python ppo.py --resume {run_dir}/checkpoint.pt) "
                         "or delete the folder")


def train(task: str, seed: int, runs: str) -> tuple[str, int, dict]:
    """The finished run of task and seed, trained now or read from its folder: its final mean
    return, steps and wall seconds (summed over its launches, if it was resumed)."""
    run_dir = run_folder(runs, task, seed)
    if not os.path.isdir(run_dir):
        command = [sys.executable, PPO_PROGRAM, "--env", task, "--seed", str(seed), "--run-dir", run_dir]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = ppo.read_metrics(run_dir)
    final = {"mean_return": float(metrics["mean_return"][-1]), "global_step": int(metrics["global_step"][-1]),
             "wall_seconds": float(metrics["wall_seconds"][-1])}
    print(f"{task} seed {seed}: mean return {final['mean_return']:,.1f} after {final['global_step']:,} steps", flush=True)
    return task, seed, final


def keep(task: str, seed: int, runs: str) -> str:
    """Copy a run's config.json and metrics.csv into tests/results/mujoco/; return the copy."""
    kept = os.path.join(TABLE_FOLDER, f"{task}-seed{seed}")
    os.makedirs(kept, exist_ok=True)
    for name in ("config.json", "metrics.csv"):
        shutil.copyfile(os.path.join(run_folder(runs, task, seed), name), os.path.join(kept, name))
    return kept


def markdown_table(results: dict[str, list[float]], seeds: list[int]) -> str:
    lines = [f"| task | ppo.py, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}: median (range) | PPO paper, Fig. 3 (v1, approx.) "
             "| CleanRL (v4, 3 seeds) | SB3 zoo (v3, tuned, 1 run, evaluation) |", "| --- | --- | --- | --- | --- |"]
    for task, returns in results.items():
        spread = f"{statistics.median(returns):,.1f} ({min(returns):,.1f} to {max(returns):,.1f})"
        lines.append(f"| {task} | {spread} | " + " | ".join(PUBLISHED.get(task, ("-", "-", "-"))) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(PUBLISHED), help="MuJoCo ids (default: the paper's seven, v5)")
    parser.add_argument("--seeds", default="1-3", help="seeds of each task: 1-3 or 1,2,5 (default 1-3)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1); above 1 the wall times are not a timing")
    parser.add_argument("--runs", default=os.path.join("runs", "mujoco"), help="folder of the run folders (default runs/mujoco)")
    settings = parser.parse_args()
    try:
        seeds = parse_seeds(settings.seeds)
    except ValueError as error:
        parser.error(str(error))
    if settings.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {settings.jobs}")
    pairs = [(task, seed) for task in settings.tasks for seed in seeds]
    for task, seed in pairs:
        check_folder(task, seed, settings.runs)
    with concurrent.futures.ThreadPoolExecutor(settings.jobs) as pool:
        finished = list(pool.map(lambda pair: train(*pair, settings.runs), pairs))
    kept = [keep(task, seed, settings.runs) for task, seed, _ in finished]
    name = f"mujoco-table-{slug(cpu_model())}-{cpu_family_and_model()}.csv"
    with open(os.path.join(RESULTS, name), "w", newline="") as file:
        file.write(f"# command: python tests/mujoco_table.py {shlex.join(sys.argv[1:])}\n# {machine_line('mujoco')}\n")
        file.write("# final_mean_return: the mean return of the last 100 training episodes at the end of the run (the paper's "
                   "score); wall_seconds: metrics.csv's, the run's own clock" + (" (several runs at once: not a timing)\n"
                                                                                     if settings.jobs > 1 else "\n"))
        file.write("# a run read from its folder may have been trained by an earlier commit of ppo.py; its settings were "
                   "checked to be those of this one\n")
        writer = csv.writer(file)
        writer.writerow(["task", "seed", "final_mean_return", "env_steps", "wall_seconds"])
        for task, seed, final in finished:
            writer.writerow([task, seed, f"{final['mean_return']:.1f}", final["global_step"], f"{final['wall_seconds']:.0f}"])
    picture = os.path.join(RESULTS, "mujoco-learning-curves.png")
    subprocess.run([sys.executable, PPO_PROGRAM, "--plot", *kept, "--plot-output", picture], check=True, stdout=subprocess.DEVNULL)
    results: dict[str, list[float]] = {}
    for task, _, final in finished:
        results.setdefault(task, []).append(final["mean_return"])
    print(markdown_table(results, seeds))
    print(f"wrote {os.path.relpath(os.path.join(RESULTS, name))}, {os.path.relpath(picture)} and {os.path.relpath(TABLE_FOLDER)}/")


if __name__ == "__main__":
    main()
