"""The first check a GPU machine runs: the GPU tests (tests/test_gpu.py), then Pong's steps
per second on the GPU beside the CPU, written as one row naming the GPU.

    python tests/gpu_check.py                 # about 5 minutes on one GPU

Where no CUDA device is present it says so in one line and exits 0. The timing runs the
Pong preset for --steps steps (default 40,960) in float32 on the GPU, in bfloat16 where the
GPU has bfloat16 arithmetic (compute capability 8.0 or more), and in float32 on the CPU, each
in its own process, and reads the steps per second of metrics.csv's last row (start-up
excluded). It writes tests/results/gpu-check-<gpu>.csv under comment lines that give the
command, the GPU, the CPU, the commit, the versions and the date.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import RESULTS, machine_line, slug  # noqa: E402  (beside this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pong_steps_per_second(steps: int, *flags: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        run_dir = os.path.join(folder, "run")
        subprocess.run([sys.executable, "ppo.py", "--env", "Pong", "--total-steps", str(steps), "--run-dir", run_dir, *flags],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(run_dir, "metrics.csv"), newline="") as file:
            return float(list(csv.DictReader(file))[-1]["steps_per_second"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40_960, help="Pong steps of each timed run (default 40,960)")
    arguments = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device is present (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              "nothing to check here")
        return 0
    gpu = torch.cuda.get_device_name()
    tests = subprocess.run([sys.executable, "-m", "pytest", "--all", "-q", "tests/test_gpu.py"], cwd=ROOT)
    row = {"gpu": gpu, "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())),
           "gpu_tests": "passed" if tests.returncode == 0 else "failed",
           "pong_cuda_float32_sps": round(pong_steps_per_second(arguments.steps, "--device", "cuda")),
           "pong_cuda_bfloat16_sps": (round(pong_steps_per_second(arguments.steps, "--device", "cuda", "--precision", "bfloat16"))
                                      if torch.cuda.get_device_capability() >= (8, 0) else ""),
           "pong_cpu_float32_sps": round(pong_steps_per_second(arguments.steps, "--device", "cpu"))}
    path = os.path.join(RESULTS, f"gpu-check-{slug(gpu)}.csv")
    with open(path, "w", newline="") as file:
        file.write(f"# command: python tests/gpu_check.py --steps {arguments.steps}\n")
        file.write(f"# gpu: {gpu}; {machine_line()}\n")
        file.write("# steps per second: metrics.csv's last row of a Pong preset run of that many steps (start-up excluded)\n")
        writer = csv.DictWriter(file, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    print(", ".join(f"{name} {value}" for name, value in row.items()))
    print(f"written to {path}")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
