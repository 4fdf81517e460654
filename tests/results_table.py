"""The README's results table and the current tables of docs/results.md, rebuilt from the
result files in tests/results: every figure they quote comes from a CSV here, each of which
names the code it ran (a commit, or a commit and the changes it carried), the CPU, the
command and the date in its comment lines.

    python tests/results_table.py            # rewrite the generated parts of README.md and docs/results.md
    python tests/results_table.py --check    # exit 1, naming the first row that differs, if either is stale

The generated parts lie between `<!-- results_table.py: NAME -->` and `<!-- end -->` lines;
the rest of both files is prose. Percentiles are nearest-rank, as tests/benchmark.py prints
them: the p-th of n sorted values is the one at rank ceil(p/100 * n); an unsolved seed counts
as the worst (in the objectives' tables the median is of the runs that reached the
threshold). The quick test suite runs the check.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
MACHINE = "Intel family 6 model 207"  # where the current figures were measured: lscpu's family and model

# The files each figure comes from (all in tests/results).
CARTPOLE_PPO = "ppo-CartPole-seeds1-101-120-same-budget-Intel-Xeon-family6-model207.csv"
CARTPOLE_SB3 = "sb3-CartPole-seeds1-101-120-same-budget-Intel-Xeon-family6-model207.csv"
CARTPOLE_FRESH = "ppo-CartPole-seeds101-200-advantage-std-floor-1-Intel-Xeon-family6-model167.csv"
PENDULUM = ["ppo-Pendulum-seeds101-120-float64-moments-Intel-Xeon-family6-model207.csv"]
OBJECTIVES = {"CartPole": "objectives-CartPole-Intel-Xeon-family6-model207.csv",
              "Pendulum": "objectives-Pendulum-Intel-Xeon-family6-model207.csv"}
TORCHRUN_SPEED = {"CartPole": "torchrun-speed-CartPole-Intel-Xeon-family6-model207.csv",
                  "Pong": "torchrun-speed-Pong-Intel-Xeon-family6-model207.csv"}
TORCHRUN_LEARNING = "torchrun-2-ranks-CartPole-seeds1-12-Intel-Xeon-family6-model207.csv"
MUJOCO_SPEED = "mujoco-speed-InvertedPendulum-v5-204800-Intel-Xeon-family6-model207.csv"
MUJOCO_TABLE = "mujoco-table-Intel-Xeon-family6-model167.csv"
# The PPO paper's Fig. 3 at one million steps (read off the curves), CleanRL's v4 runs (3 seeds),
# the SB3 zoo's tuned v3 runs (1 run, its evaluation).
MUJOCO_REFERENCES = {
    "HalfCheetah-v5": ("~1,800", "1,442.64 ± 46.03", "5,819.1"), "Hopper-v5": ("~2,330", "2,382.86 ± 271.74", "2,410.4"),
    "Walker2d-v5": ("~3,460", "2,287.95 ± 571.78", "3,478.8"), "Swimmer-v5": ("~108", "-", "281.6"),
    "Reacher-v5": ("~-7", "-", "-"), "InvertedPendulum-v5": ("~1,000", "963.09 ± 22.20", "-"),
    "InvertedDoublePendulum-v5": ("~8,000", "-", "-"),
}


def rows(name: str) -> list[dict]:
    """A results file's rows, its comment lines skipped."""
    with open(os.path.join(RESULTS, name), newline="") as file:
        return list(csv.DictReader(line for line in file if not line.startswith("#")))


def commit_of(name: str) -> str:
    """The commit of ppo.py a results file names, and "with uncommitted changes" where it says
    the code that ran was that commit changed."""
    with open(os.path.join(RESULTS, name)) as file:
        header = "".join(line for line in file if line.startswith("#"))
    match = re.search(r"ppo\.py at ([0-9a-f]{7,40})( with uncommitted changes)?", header)
    if not match:
        raise SystemExit(f"error: {name} names no commit of ppo.py in its comment lines")
    return match[1] + (match[2] or "")


def rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(percent / 100 * len(ordered)), 1) - 1]


def count(value: float) -> str:
    return f"{value:,.0f}"


def seconds(value: float) -> str:
    return f"{value:.1f} s"


def steps(value: float) -> str:
    return f"{value:,.0f} steps"


class Seeds:
    """The seeds of a tests/benchmark.py file: solved or not, steps and wall seconds."""

    def __init__(self, table: list[dict], seeds: range | None = None):
        self.table = [row for row in table if seeds is None or int(row["seed"]) in seeds]
        self.solved = [row for row in self.table if row["solved"] == "true"]

    def figure(self, column: str, percent: float) -> float:
        values = [float(row[column]) if row["solved"] == "true" else math.inf for row in self.table]
        return rank(values, percent)

    def worst(self, column: str, show=count) -> str:
        unsolved = [row["seed"] for row in self.table if row["solved"] != "true"]
        if unsolved:
            return f"not reached (seed{'s' if len(unsolved) > 1 else ''} {', '.join(unsolved)})"
        return show(self.figure(column, 100))

    def one(self, show=seconds) -> str:
        """The one seed of this table: when it solved, or that it did not."""
        (row,) = self.table
        if row["solved"] != "true":
            return f"not solved ({count(float(row['env_steps']))} steps, {show(float(row['wall_seconds']))})"
        return f"solved in {show(float(row['wall_seconds']))}, {count(float(row['env_steps']))} steps"

    def summary(self, column: str, show=count) -> str:
        return (f"{len(self.solved)} of {len(self.table)}; median {show(self.figure(column, 50))}, "
                f"90th percentile {show(self.figure(column, 90))}, worst {self.worst(column, show)}")


def cartpole_sitting() -> tuple[Seeds, Seeds, Seeds, Seeds]:
    fresh = range(101, 121)
    return (Seeds(rows(CARTPOLE_PPO), fresh), Seeds(rows(CARTPOLE_SB3), fresh),
            Seeds(rows(CARTPOLE_PPO), range(1, 2)), Seeds(rows(CARTPOLE_SB3), range(1, 2)))


def pendulum() -> Seeds:
    return Seeds([row for name in PENDULUM for row in rows(name)])


def objectives(env: str) -> dict[str, list[dict]]:
    table: dict[str, list[dict]] = {}
    for row in rows(OBJECTIVES[env]):
        table.setdefault(row["setting"], []).append(row)
    return table


def objective_summary(runs: list[dict], threshold: str) -> str:
    """How many runs reached the threshold, and the nearest-rank median of their steps."""
    reached = [int(run["steps_to_threshold"]) for run in runs if run["steps_to_threshold"]]
    median = f", median {count(rank(reached, 50))} steps" if reached else ""
    return f"{len(reached)} of {len(runs)} reached {threshold}{median}"


def torchrun_speed(env: str) -> tuple[float, float]:
    table = rows(TORCHRUN_SPEED[env])
    return statistics.median(float(row["1 process"]) for row in table), statistics.median(float(row["2 processes"]) for row in table)


def readme_rows() -> list[str]:
    ppo, sb3, ppo_seed_1, sb3_seed_1 = cartpole_sitting()
    fresh = Seeds(rows(CARTPOLE_FRESH))
    pendulum_seeds = pendulum()
    clip, penalty = objectives("CartPole")["clip"], objectives("CartPole")["kl-penalty d_targ=0.01"]
    pendulum_clip, pendulum_penalty = objectives("Pendulum")["clip"], objectives("Pendulum")["kl-penalty d_targ=0.01"]
    cartpole_one, cartpole_two = torchrun_speed("CartPole")
    pong_one, pong_two = torchrun_speed("Pong")
    learning = Seeds(rows(TORCHRUN_LEARNING))
    speed = rows(MUJOCO_SPEED)
    ppo_seconds, sb3_seconds = (statistics.median(float(row[name]) for row in speed) for name in ("ppo_seconds", "sb3_seconds"))
    return [
        "| task | ppo.py | beside | machine | details |",
        "| --- | --- | --- | --- | --- |",
        f"| CartPole-v1 (`python ppo.py`), seeds 101-120, mean of 100 episodes >= 475, wall time from launch | solved "
        f"{ppo.summary('wall_seconds', seconds)}; median {count(ppo.figure('env_steps', 50))} steps | Stable-Baselines3 (zoo "
        f"settings, the same 150,000 steps), the same sitting: solved {sb3.summary('wall_seconds', seconds)} | {MACHINE} | "
        "[results](docs/results.md#cartpole-v1) |",
        f"| CartPole-v1, seed 1 (the default) | {ppo_seed_1.one()} | Stable-Baselines3: {sb3_seed_1.one()} | {MACHINE} | "
        "[results](docs/results.md#cartpole-v1) |",
        f"| CartPole-v1, fresh seeds 101-200 (the preset chosen on 1-100), steps | solved {fresh.summary('env_steps', steps)} "
        f"within 150,000 | no side-by-side run | Intel family 6 model 167 | [the tail](docs/results.md#the-tail-over-100-seeds) |",
        f"| Pendulum-v1, fresh seeds 101-120 (the preset chosen on 1-100), mean of 100 episodes >= -200 within 200,000 "
        f"steps | reached -200: "
        f"{pendulum_seeds.summary('env_steps', steps)} | no side-by-side run | {MACHINE} | "
        "[results](docs/results.md#pendulum-v1) |",
        f"| the KL penalty (PPO eq. 8, d_targ 0.01) against clipping, 5 seeds, the presets' budgets | CartPole: clipping "
        f"{objective_summary(clip, '475')}, the penalty {objective_summary(penalty, '475')}; Pendulum: clipping "
        f"{objective_summary(pendulum_clip, '-200')}, the penalty {objective_summary(pendulum_penalty, '-200')} | the paper "
        f"(MuJoCo, normalized score): 0.82 clipping, 0.68 to 0.74 the penalty | {MACHINE} | "
        "[results](docs/results.md#ppo-clip-against-the-adaptive-kl-penalty) |",
        f"| torchrun, 2 processes on 2 cores | steps per second {cartpole_two / cartpole_one:.2f}x one process's on CartPole, "
        f"{pong_two / pong_one:.2f}x on Pong; CartPole solved on {len(learning.solved)} of {len(learning.table)} seeds "
        f"(median {count(learning.figure('env_steps', 50))} steps) | one process | {MACHINE} | "
        "[torchrun](docs/distributed.md#what-scales-and-what-does-not) |",
        f"| Speed at the PPO paper's MuJoCo settings, InvertedPendulum-v5, 204,800 steps, whole process | "
        f"{seconds(ppo_seconds)}, {sb3_seconds / ppo_seconds:.2f}x as fast as Stable-Baselines3 | Stable-Baselines3, the same "
        f"settings: {seconds(sb3_seconds)} | {MACHINE} | [results](docs/results.md#speed-at-the-ppo-papers-mujoco-settings) |",
        "| The PPO paper's MuJoCo benchmark: 7 tasks (Gymnasium v5), 3 seeds, 1,000,000 steps, the mean return of the "
        f"last 100 episodes | {mujoco_summary()} | the PPO paper (Fig. 3), CleanRL (v4) | Intel family 6 model 167 | "
        "[the table](docs/results.md#the-ppo-papers-mujoco-benchmark) |",
    ]


def mujoco_returns() -> dict[str, list[float]]:
    """Each task's final mean returns, a value per seed."""
    table: dict[str, list[float]] = {}
    for row in rows(MUJOCO_TABLE):
        table.setdefault(row["task"], []).append(float(row["final_mean_return"]))
    return table


def mujoco_rows() -> list[str]:
    table = mujoco_returns()
    lines = ["| task | ppo.py, 3 seeds: median (range) | PPO paper, Fig. 3 (v1, approx.) | CleanRL (v4, 3 seeds) "
             "| SB3 zoo (v3, tuned, 1 run, evaluation) |",
             "| --- | --- | --- | --- | --- |"]
    for task, (paper, cleanrl, zoo) in MUJOCO_REFERENCES.items():
        values = table[task]
        lines.append(f"| {task} | {statistics.median(values):,.1f} ({min(values):,.1f} to {max(values):,.1f}) "
                     f"| {paper} | {cleanrl} | {zoo} |")
    return lines


def mujoco_summary() -> str:
    """How ppo.py's seeds stand beside the paper's value and CleanRL's mean, task by task."""
    table, paper_below, above_cleanrl, shared = mujoco_returns(), 0, 0, 0
    for task, (paper, cleanrl, _) in MUJOCO_REFERENCES.items():
        values = table[task]
        paper_below += float(paper.strip("~").replace(",", "")) <= max(values)
        if cleanrl != "-":
            shared += 1
            above_cleanrl += statistics.median(values) > float(cleanrl.split(" ± ")[0].replace(",", ""))
    return (f"the paper's value within or below the seeds' range on {paper_below} of {len(table)} tasks; the median "
            f"above CleanRL's mean on {above_cleanrl} of the {shared} tasks both ran")


def at_least(seeds: Seeds, column: str, value: float) -> int:
    """How many seeds took `value` or more (an unsolved seed counts)."""
    return sum(row["solved"] != "true" or float(row[column]) >= value for row in seeds.table)


def first_run_lines() -> list[str]:
    ppo, sb3, ppo_seed_1, _ = cartpole_sitting()
    median, peer_median = ppo.figure("wall_seconds", 50), sb3.figure("wall_seconds", 50)
    slow = ppo.figure("wall_seconds", 90)
    return [f"How long, counted from launch with the imports: over seeds 101 to 120, one after the other in one sitting on a "
            f"2-core Intel Xeon (lscpu: {MACHINE.removeprefix('Intel ')}), `python ppo.py` solved in a median of {seconds(median)} "
            f"({at_least(ppo, 'wall_seconds', slow)} of the {len(ppo.table)} seeds took {seconds(slow)} or more, the slowest "
            f"{ppo.worst('wall_seconds', seconds)}), and Stable-Baselines3 with the same 150,000-step budget in "
            f"{seconds(peer_median)}: {peer_median / median:.2f}x as fast. Seed 1, the default, {ppo_seed_1.one()}. The "
            f"seconds depend on the CPU and on what else runs beside (the result file does not record how quiet the machine "
            f"was), and a seed is a draw from that spread; the ratio beside Stable-Baselines3 in one sitting is the figure "
            f"that carries across machines ([details](docs/results.md#cartpole-v1))."]


def results_doc_rows() -> list[str]:
    ppo, sb3, _, _ = cartpole_sitting()
    pendulum_seeds = pendulum()
    lines = [f"Measured on a 2-core Intel Xeon (lscpu: {MACHINE.removeprefix('Intel ')}) unless a row says otherwise; each row's file "
             "in `tests/results/` names the code it ran (the link's text), its command and date. No row is of a GPU.", "",
             "| CartPole-v1, seeds 101-120, one sitting | solved | median | 90th percentile | worst | median steps | file |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, seeds, path in (("ppo.py", ppo, CARTPOLE_PPO), ("Stable-Baselines3, 150,000 steps", sb3, CARTPOLE_SB3)):
        lines.append(f"| {name} | {len(seeds.solved)} of {len(seeds.table)} | {seconds(seeds.figure('wall_seconds', 50))} | "
                     f"{seconds(seeds.figure('wall_seconds', 90))} | {seeds.worst('wall_seconds', seconds)} | "
                     f"{count(seeds.figure('env_steps', 50))} | [{commit_of(path)}](../tests/results/{path}) |")
    lines += ["", "| Pendulum-v1, seeds 101-120 | reached -200 within 200,000 steps | median steps | 90th percentile | worst | files |",
              "| --- | --- | --- | --- | --- | --- |",
              f"| ppo.py | {len(pendulum_seeds.solved)} of {len(pendulum_seeds.table)} | {count(pendulum_seeds.figure('env_steps', 50))} | "
              f"{count(pendulum_seeds.figure('env_steps', 90))} | {pendulum_seeds.worst('env_steps')} | "
              + ", ".join(f"[{commit_of(path)}](../tests/results/{path})" for path in PENDULUM) + " |"]
    lines += ["", "| objective, 5 seeds, the preset's whole budget | CartPole: reached 475 | Pendulum: reached -200 |", "| --- | --- | --- |"]
    cartpole, pendulum_runs = objectives("CartPole"), objectives("Pendulum")
    for setting in cartpole:
        lines.append(f"| {setting} | {objective_summary(cartpole[setting], '475').split(' reached')[0]}"
                     f"{objective_summary(cartpole[setting], '475').split('475')[1]} | "
                     f"{objective_summary(pendulum_runs[setting], '-200').split(' reached')[0]}"
                     f"{objective_summary(pendulum_runs[setting], '-200').split('-200')[1]} |")
    lines += ["", f"Files: [{commit_of(OBJECTIVES['CartPole'])}](../tests/results/{OBJECTIVES['CartPole']}), "
              f"[{commit_of(OBJECTIVES['Pendulum'])}](../tests/results/{OBJECTIVES['Pendulum']})."]
    lines += ["", "The PPO paper's MuJoCo benchmark: [its table](#the-ppo-papers-mujoco-benchmark), from "
              f"[{commit_of(MUJOCO_TABLE)}](../tests/results/{MUJOCO_TABLE}), on Intel family 6 "
              "model 167: the runs trained by ppo.py at 4ee71f8 to 59f996a, tabled at fbd4551; later commits change the rounding "
              "of these runs (the normalizers' moments in float64), not their settings."]
    learning = Seeds(rows(TORCHRUN_LEARNING))
    lines += ["", "| torchrun, 2 processes against 1 on 2 cores | steps per second, 1 process | 2 processes | file |",
              "| --- | --- | --- | --- |"]
    for env in TORCHRUN_SPEED:
        one, two = torchrun_speed(env)
        lines.append(f"| {env} preset | {count(one)} | {count(two)} ({two / one:.2f}x) | "
                     f"[{commit_of(TORCHRUN_SPEED[env])}](../tests/results/{TORCHRUN_SPEED[env]}) |")
    lines += ["", f"2 processes, CartPole seeds 1-12, solved: {learning.summary('env_steps', steps)} "
              f"([{commit_of(TORCHRUN_LEARNING)}](../tests/results/{TORCHRUN_LEARNING}))."]
    speed = rows(MUJOCO_SPEED)
    ppo_seconds, sb3_seconds = (statistics.median(float(row[name]) for row in speed) for name in ("ppo_seconds", "sb3_seconds"))
    lines += ["", "| speed beside Stable-Baselines3, whole processes | ppo.py | Stable-Baselines3 | ppo.py's speed | file |",
              "| --- | --- | --- | --- | --- |",
              f"| CartPole-v1 to 475, seeds 101-120, median | {seconds(ppo.figure('wall_seconds', 50))} | "
              f"{seconds(sb3.figure('wall_seconds', 50))} | {sb3.figure('wall_seconds', 50) / ppo.figure('wall_seconds', 50):.2f}x | "
              f"[{commit_of(CARTPOLE_PPO)}](../tests/results/{CARTPOLE_PPO}) |",
              f"| InvertedPendulum-v5 at the PPO paper's settings, 204,800 steps | {seconds(ppo_seconds)} | {seconds(sb3_seconds)} | "
              f"{sb3_seconds / ppo_seconds:.2f}x | [{commit_of(MUJOCO_SPEED)}](../tests/results/{MUJOCO_SPEED}) |"]
    return lines


REGIONS = {  # file -> {region name: what it holds}
    "README.md": {"first-run": first_run_lines, "results": readme_rows},
    os.path.join("docs", "results.md"): {"current": results_doc_rows, "mujoco": mujoco_rows},
}


def rebuilt(path: str, text: str) -> str:
    for name, lines in REGIONS[path].items():
        pattern = re.compile(rf"(<!-- results_table.py: {name} -->\n)(.*?)(<!-- end -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"error: {path} has no <!-- results_table.py: {name} --> ... <!-- end --> region")
        text = pattern.sub(lambda match: match[1] + "\n".join(lines()) + "\n" + match[3], text, count=1)
    return text


def first_difference(old: str, new: str) -> str:
    """The first line that differs, shown around its first differing character."""
    for number, (was, wanted) in enumerate(zip(old.splitlines(), new.splitlines()), 1):
        if was != wanted:
            at = next((index for index, (a, b) in enumerate(zip(was, wanted)) if a != b), min(len(was), len(wanted)))
            start = max(at - 40, 0)
            return f"line {number} ({was[:40]}...): ...{was[start:at + 60]!r} should be ...{wanted[start:at + 60]!r}"
    return "its length differs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated part is stale")
    arguments = parser.parse_args()
    stale = []
    for path in REGIONS:
        with open(os.path.join(ROOT, path)) as file:
            text = file.read()
        new = rebuilt(path, text)
        if new == text:
            continue
        if arguments.check:
            stale.append(f"{path} differs from its results files at {first_difference(text, new)}")
        else:
            with open(os.path.join(ROOT, path), "w") as file:
                file.write(new)
            print(f"rewrote {path}")
    for line in stale:
        print(f"error: {line}; run python tests/results_table.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
