"""PPO-Clip against PPO with the adaptive KL penalty, the comparison of the PPO paper
(section 6.1, Table 1) on a small scale: the same presets, seeds and step budget for each
objective, one process per run.

Run from the repository root (not collected by pytest):
    python tests/compare_objectives.py --env CartPole --seeds 1-5 --jobs 2
    python tests/compare_objectives.py --env Pendulum --seeds 1-5 --jobs 2

For each setting (clip; kl-penalty with d_targ 0.003, 0.01 and 0.03) and seed it runs
`python ppo.py --env ENV --seed SEED --objective ... --target-return none` for the preset's
whole budget and reads the run's metrics.csv: the final mean return of the last 100
training episodes, and the environment steps after which that mean first reached the
threshold (ppo.py's own per-iteration check). It writes one row per run to
tests/results/objectives-<env>-<cpu>.csv, prints the median of each setting, and draws the
median learning curves to tests/results/objectives-<env>.png when matplotlib is installed.
Wall times are not measured (runs may share the cores), so --jobs only saves time.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import cpu_family_and_model, cpu_model, machine_line, slug  # noqa: E402  (beside this file)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
THRESHOLDS = {"CartPole": 475.0, "Pendulum": -200.0}
SETTINGS = {
    "clip": ["--objective", "clip"],
    "kl-penalty d_targ=0.003": ["--objective", "kl-penalty", "--kl-penalty-target", "0.003"],
    "kl-penalty d_targ=0.01": ["--objective", "kl-penalty", "--kl-penalty-target", "0.01"],
    "kl-penalty d_targ=0.03": ["--objective", "kl-penalty", "--kl-penalty-target", "0.03"],
}


def seed_list(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def run(env: str, setting: str, seed: int, folder: str) -> dict:
    """One training run; its curve as (steps, mean return) and its two figures."""
    run_dir = os.path.join(folder, f"{env}-{setting}-{seed}".replace(" ", "_"))
    command = [sys.executable, os.path.join(ROOT, "ppo.py"), "--env", env, "--seed", str(seed),
               "--target-return", "none", "--run-dir", run_dir, *SETTINGS[setting]]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited {finished.returncode}: {finished.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(run_dir, "metrics.csv")) as file:
        rows = list(csv.DictReader(file))
    curve = [(int(row["global_step"]), float(row["mean_return"])) for row in rows]
    full = [(int(row["global_step"]), float(row["mean_return"])) for row in rows if int(row["episodes"]) >= 100]
    reached = next((steps for steps, mean in full if mean >= THRESHOLDS[env]), None)
    return {"setting": setting, "seed": seed, "final_mean_return": curve[-1][1], "steps_to_threshold": reached,
            "total_steps": curve[-1][0], "curve": curve}


def draw(env: str, results: list[dict], path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 4))
    for setting in SETTINGS:
        curves = [result["curve"] for result in results if result["setting"] == setting]
        length = min(len(curve) for curve in curves)
        steps = [curves[0][i][0] for i in range(length)]
        medians = [statistics.median(curve[i][1] for curve in curves) for i in range(length)]
        axes.plot(steps, medians, label=setting)
    axes.axhline(THRESHOLDS[env], color="gray", linestyle=":", linewidth=1)
    axes.set(xlabel="environment steps", ylabel="mean return of the last 100 episodes",
             title=f"{env}: median over {len(curves)} seeds")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(THRESHOLDS), required=True)
    parser.add_argument("--seeds", type=seed_list, default=seed_list("1-5"))
    parser.add_argument("--jobs", type=int, default=1)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(arguments.jobs) as pool:
        jobs = [(setting, seed) for seed in arguments.seeds for setting in SETTINGS]
        results = list(pool.map(lambda job: run(arguments.env, job[0], job[1], folder), jobs))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"objectives-{arguments.env}-{slug(cpu_model())}-{cpu_family_and_model()}.csv")
    with open(path, "w", newline="") as file:
        file.write(f"# command: python tests/compare_objectives.py {' '.join(sys.argv[1:])}\n# {machine_line()}\n"
                   "# final_mean_return: of the last 100 training episodes at the end of the preset's budget; "
                   "steps_to_threshold: metrics.csv's global_step at the first iteration whose mean reached the threshold\n")
        writer = csv.writer(file)
        writer.writerow(["setting", "seed", "final_mean_return", "steps_to_threshold", "total_steps"])
        for result in results:
            writer.writerow([result["setting"], result["seed"], f"{result['final_mean_return']:.1f}",
                             result["steps_to_threshold"] or "", result["total_steps"]])
    print(f"wrote {path}")
    for setting in SETTINGS:
        mine = [result for result in results if result["setting"] == setting]
        reached = [result["steps_to_threshold"] for result in mine if result["steps_to_threshold"] is not None]
        print(f"{setting}: final mean return median {statistics.median(r['final_mean_return'] for r in mine):.1f} "
              f"(worst {min(r['final_mean_return'] for r in mine):.1f}); reached {THRESHOLDS[arguments.env]:g} in "
              f"{len(reached)}/{len(mine)} runs, median steps of those {statistics.median(reached) if reached else 'none':}")
    picture = os.path.join(RESULTS, f"objectives-{arguments.env}.png")
    if draw(arguments.env, results, picture):
        print(f"wrote {picture}")


if __name__ == "__main__":
    main()
