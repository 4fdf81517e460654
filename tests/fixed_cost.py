"""The fixed cost of a run: a CartPole run that stops after one iteration, against the
imports that every PyTorch program pays, timed from launch to exit.

    baseline:  python -c "import torch, gymnasium, torch._dynamo"
    one run:   python ppo.py --total-steps 512 --target-return none --run-dir TEMPORARY

(torch.optim's first call imports torch._dynamo, so the baseline holds it too.) The two
commands alternate, one pair after another, so that both see the same machine; a first
unmeasured pair fills the file cache. The run's fixed cost is the ratio of the medians.
Not collected by pytest: a timing is a measurement, not a test.

Run from the repository root, on a machine where nothing else runs:
    python tests/fixed_cost.py --pairs 7

It writes tests/results/fixed-cost-<cpu model>-<family and model>.csv (one row per pair, under comment
lines that give the commands, the CPU, the versions and the date) and prints the medians.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from benchmark import RESULTS, cpu_family_and_model, cpu_model, machine_line, slug

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = [sys.executable, "-c", "import torch, gymnasium, torch._dynamo"]


def one_run(folder: str) -> list[str]:
    return [sys.executable, "ppo.py", "--total-steps", "512", "--target-return", "none", "--run-dir", folder]


def wall_seconds(command: list[str]) -> float:
    """Seconds from launch to exit of command, which must succeed."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure_pair() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        return wall_seconds(BASELINE), wall_seconds(one_run(os.path.join(folder, "run")))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="measured pairs of baseline and one run (default 7)")
    settings = parser.parse_args(argv)
    measure_pair()  # fills the file cache; not counted
    pairs = [measure_pair() for _ in range(settings.pairs)]
    baseline, run = (statistics.median(times) for times in zip(*pairs))
    cpu, family = cpu_model(), cpu_family_and_model()
    path = os.path.join(RESULTS, "-".join(filter(None, ["fixed-cost", slug(cpu), family])) + ".csv")
    with open(path, "w", newline="") as file:
        file.write(f"# command: {shlex.join(['python', *sys.argv])}\n"
                   f"# baseline: {shlex.join(['python', *BASELINE[1:]])}; one run: {shlex.join(['python', *one_run('TEMPORARY')[1:]])}\n"
                   f"# {machine_line()}\n")
        writer = csv.writer(file)
        writer.writerow(["pair", "baseline_seconds", "one_run_seconds"])
        writer.writerows([index, f"{first:.3f}", f"{second:.3f}"] for index, (first, second) in enumerate(pairs, 1))
    print(f"wrote {os.path.relpath(path)}")
    print(f"{cpu} {family}: baseline median {baseline:.2f} s, one run median {run:.2f} s, ratio {run / baseline:.2f} "
          f"({settings.pairs} pairs; one run {min(second for _, second in pairs):.2f} to {max(second for _, second in pairs):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
