"""One process against two (torchrun) on the same flags and total batch: the steps per
second of each run, as the last row of its metrics.csv gives it (start-up excluded).

    python tests/torchrun_speed.py --env CartPole --steps 65536 --pairs 3
    python tests/torchrun_speed.py --env Pong --steps 40960 --pairs 2

The two commands alternate, one pair after another, so that both see the same machine:
    python ppo.py --env ENV --total-steps STEPS --target-return none --run-dir TEMPORARY
    torchrun --standalone --nproc-per-node 2 ppo.py (the same flags)
It writes tests/results/torchrun-speed-<env>-<cpu model>-<family and model>.csv, one row per
pair under comment lines that give the commands, the CPU, the commit, the versions and the
date, and prints the medians. Run it where nothing else runs: a timing is a measurement.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import RESULTS, cpu_family_and_model, cpu_model, machine_line, slug  # noqa: E402  (beside this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = {"1 process": [sys.executable, "ppo.py"],
             "2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "ppo.py"]}


def steps_per_second(launcher: list[str], flags: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        run_dir = os.path.join(folder, "run")
        subprocess.run([*launcher, *flags, "--run-dir", run_dir], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(run_dir, "metrics.csv"), newline="") as file:
            return float(list(csv.DictReader(file))[-1]["steps_per_second"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole", help="ppo.py's --env (default CartPole)")
    parser.add_argument("--steps", type=int, default=65_536, help="--total-steps of each run (default 65,536)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs, alternating (default 3)")
    arguments = parser.parse_args()
    flags = ["--env", arguments.env, "--total-steps", str(arguments.steps), "--target-return", "none"]
    rows = []
    for pair in range(1, arguments.pairs + 1):
        row = {"pair": pair, **{name: round(steps_per_second(launcher, flags)) for name, launcher in LAUNCHERS.items()}}
        print(", ".join(f"{name} {value:,}" for name, value in row.items() if name != "pair") + f" steps/s (pair {pair})", flush=True)
        rows.append(row)
    path = os.path.join(RESULTS, f"torchrun-speed-{slug(arguments.env)}-{slug(cpu_model())}-{cpu_family_and_model()}.csv")
    with open(path, "w", newline="") as file:
        file.write(f"# command: python tests/torchrun_speed.py {' '.join(sys.argv[1:])}\n")
        file.write(f"# runs: python ppo.py {' '.join(flags)} --run-dir TEMPORARY, and the same under "
                   "torchrun --standalone --nproc-per-node 2, alternating\n")
        file.write(f"# {machine_line()}\n# steps per second: metrics.csv's last row (start-up excluded)\n")
        writer = csv.DictWriter(file, fieldnames=["pair", *LAUNCHERS])
        writer.writeheader()
        writer.writerows(rows)
    one, two = (statistics.median(row[name] for row in rows) for name in LAUNCHERS)
    print(f"median: 1 process {one:,.0f}, 2 processes {two:,.0f} steps/s ({two / one:.2f}x); wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
