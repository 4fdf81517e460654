"""What a machine with a GPU can tell about ppo.py, in one go, written to one CSV file.

    python tests/gpu_check.py        # then commit the CSV it names (tests/results/gpu-check-<gpu>.csv)

No GPU has run ppo.py yet: this is the check that adds the first GPU row. In order:

1. the GPU tests, `python -m pytest --all tests/test_gpu.py`: their result in one row;
2. steps per second of the Pong preset on the GPU in float32 and in bfloat16 (bfloat16 only
   where the GPU has its arithmetic, compute capability 8.0 or more) beside the CPU, each
   `--speed-runs` times (default 2) in alternating order, each run in its own process and
   counted over the rows of its metrics.csv after the first --warm-up iterations (CUDA's
   start, cuDNN's choice of kernels and the first Adam step are left out): one row a run;
3. Pong learning on the GPU: the preset, seed 1, for --learn-seconds of training (default
   150), then stopped with SIGTERM, as `kill` would (ppo.py saves and exits): the mean score
   of the last 20 games every 30 seconds of training, and when it first rose above 0 (the
   agent beats the built-in AI) if it did, read from the run's metrics.csv.

Each row is appended to the file as soon as it is measured, and a run that fails is a row
with its error; the check goes on to the next. The file's comment lines name the command,
the GPU, the CPU, the commit of ppo.py (or 'unknown' where git is not there), the versions
and the date. Each stage stops at its own time limit, and all of them together at --minutes
(default 7.5), so the check ends in about 8 minutes; the limits leave room for what one GPU
and 16 CPU cores are expected to need (none of it has run on a GPU yet).

Where no CUDA device is present it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmark.py, beside this file
from benchmark import cpu_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLUMNS = ["check", "device", "precision", "run", "steps", "seconds", "steps_per_second", "mean_return", "result", "detail"]
SCORE_TIMES = 30  # seconds between the learning run's rows


class Results:
    """The CSV file: its comment lines and column names at the start, then one row at a time,
    each on the disk before the next measurement starts."""

    def __init__(self, path: str, comment_lines: list[str]):
        self.path = path
        self.failures = 0
        with open(path, "w", newline="") as file:
            file.writelines(f"# {line}\n" for line in comment_lines)
            csv.writer(file).writerow(COLUMNS)

    def add(self, **row) -> None:
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=COLUMNS).writerow(row)
        self.failures += row.get("result") == "failed"
        print(", ".join(f"{name} {value}" for name, value in row.items() if value not in ("", None)), flush=True)


def git_commit() -> str:
    """The commit of ppo.py, marked where ppo.py differs from it; 'unknown' without git."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "ppo.py")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git here)"
    return (commit or "unknown (not a git checkout)") + (" with uncommitted changes to ppo.py" if changed else "")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA-H100-80GB-HBM3'."""
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", " ", text).split()[:5])


def metrics_rows(run_dir: str) -> list[dict]:
    """metrics.csv's complete rows as numbers (a row being written is left out)."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        lines = [line for line in file if line.endswith("\n")]
    rows = []
    for row in csv.DictReader(lines):
        try:
            rows.append({name: float(row[name]) for name in ("global_step", "wall_seconds", "mean_return", "episodes")})
        except (KeyError, TypeError, ValueError):
            break
    return rows


def run_ppo(flags: list[str], run_dir: str, limit: float, train_seconds: float | None = None) -> tuple[list[dict], str]:
    """Run `python ppo.py FLAGS --run-dir RUN_DIR`. With train_seconds, stop it with SIGTERM
    once metrics.csv shows that many seconds of training (ppo.py saves and exits 143); stop
    it in any case after `limit` seconds. Returns metrics.csv's rows and the error, '' if none."""
    command = [sys.executable, "ppo.py", *flags, "--run-dir", run_dir]
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        started, stopped = time.time(), None
        while process.poll() is None:
            rows = metrics_rows(run_dir) if train_seconds is not None else []
            trained_enough = rows and rows[-1]["wall_seconds"] >= train_seconds
            if stopped is None and (trained_enough or time.time() - started > limit):
                process.send_signal(signal.SIGTERM)
                stopped = "time limit" if not trained_enough else "enough training"
            if stopped and time.time() - started > limit + 60:
                process.kill()
            time.sleep(1)
        errors.seek(0)
        error_lines = [line.strip() for line in errors.read().splitlines() if line.strip()]
    rows = metrics_rows(run_dir)
    if stopped == "time limit":
        return rows, f"stopped at the time limit of {limit:.0f} s after {len(rows)} iterations"
    if process.returncode == 0 or (stopped and process.returncode == 128 + signal.SIGTERM):
        return rows, ""
    return rows, error_lines[-1] if error_lines else f"exit status {process.returncode}"


def shown(command: list[str]) -> str:
    return " ".join(command)


def check_the_gpu_tests(results: Results, limit: float) -> None:
    command = [sys.executable, "-m", "pytest", "--all", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    started = time.time()
    try:
        finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        results.add(check="gpu-tests", device="cuda", seconds=round(time.time() - started, 1), result="failed",
                    detail=f"stopped at the time limit of {limit:.0f} s")
        return
    lines = finished.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else finished.stderr.strip()[-300:]
    failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in lines if line.startswith(("FAILED", "ERROR"))]
    results.add(check="gpu-tests", device="cuda", seconds=round(time.time() - started, 1),
                result="passed" if finished.returncode == 0 else "failed",
                detail="; ".join([summary, *failed]))


def measure_speed(results: Results, device: str, precision: str, run: int, steps: int, warm_up: int, limit: float) -> None:
    """One Pong run of `steps` steps; its steps per second after `warm_up` iterations."""
    flags = ["--env", "Pong", "--device", device, "--precision", precision, "--total-steps", str(steps), "--target-return", "none"]
    with tempfile.TemporaryDirectory() as folder:
        rows, error = run_ppo(flags, os.path.join(folder, "run"), limit)
    row = dict(check="speed", device=device, precision=precision, run=run)
    if error or len(rows) <= warm_up:
        results.add(**row, result="failed", detail=error or f"{len(rows)} iterations, not more than the {warm_up} of warm-up")
        return
    first, last = rows[warm_up - 1], rows[-1]
    counted_steps, seconds = last["global_step"] - first["global_step"], last["wall_seconds"] - first["wall_seconds"]
    results.add(**row, steps=int(counted_steps), seconds=round(seconds, 2), steps_per_second=round(counted_steps / seconds),
                result="ok", detail=f"iterations {warm_up + 1} to {len(rows)}")


def check_pong_learning(results: Results, train_seconds: float, limit: float) -> None:
    flags = ["--env", "Pong", "--seed", "1", "--device", "cuda"]
    with tempfile.TemporaryDirectory() as folder:
        rows, error = run_ppo(flags, os.path.join(folder, "run"), limit, train_seconds=train_seconds)
    row = dict(device="cuda", precision="float32", run=1)
    if error or not rows:
        results.add(check="pong-learning", **row, result="failed", detail=error or "no iteration finished")
    for mark in range(SCORE_TIMES, int(train_seconds) + 1, SCORE_TIMES):
        reached = [r for r in rows if r["wall_seconds"] <= mark]
        if reached and rows[-1]["wall_seconds"] >= mark:
            at = reached[-1]
            results.add(check="pong-learning", **row, steps=int(at["global_step"]), seconds=mark,
                        mean_return=round(at["mean_return"], 2), result="ok",
                        detail=f"the mean score of the last {int(at['episodes'])} games at {at['wall_seconds']:.1f} s of training")
    if not rows:
        return
    win = next((r for r in rows if r["episodes"] >= 20 and r["mean_return"] > 0), None)
    if win:
        results.add(check="pong-beats-builtin-ai", **row, steps=int(win["global_step"]), seconds=round(win["wall_seconds"], 1),
                    mean_return=round(win["mean_return"], 2), result="ok",
                    detail="the first iteration whose mean score of the last 20 games was above 0")
    else:
        results.add(check="pong-beats-builtin-ai", **row, steps=int(rows[-1]["global_step"]),
                    seconds=round(rows[-1]["wall_seconds"], 1), mean_return=round(rows[-1]["mean_return"], 2), result="not reached",
                    detail="the mean score of the last 20 games did not rise above 0 in this run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-steps", type=int, default=20_480, help="Pong steps of each speed run (default 20,480: 20 iterations)")
    parser.add_argument("--speed-runs", type=int, default=2, help="runs of each setting (default 2)")
    parser.add_argument("--warm-up", type=int, default=4, help="iterations of each speed run left out of its count (default 4)")
    parser.add_argument("--learn-seconds", type=float, default=150, help="seconds of Pong training on the GPU (default 150)")
    parser.add_argument("--minutes", type=float, default=7.5, help="the time limit of all the stages together (default 7.5)")
    parser.add_argument("--output", help="the CSV file (default tests/results/gpu-check-<gpu>.csv)")
    arguments = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device is present (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              "nothing to check here")
        return 0
    deadline = time.time() + 60 * arguments.minutes
    gpu, capability = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
    path = arguments.output or os.path.join(HERE, "results", f"gpu-check-{slug(gpu)}.csv")
    results = Results(path, [
        f"command: python tests/gpu_check.py {' '.join(sys.argv[1:])}".rstrip(),
        f"gpu: {gpu} (compute capability {capability[0]}.{capability[1]}), {torch.cuda.device_count()} on this machine; "
        f"cpu: {cpu_model()} ({os.cpu_count()} logical cores)",
        f"ppo.py at {git_commit()}; python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"gymnasium {version('gymnasium')}; ale-py {version('ale-py')}; date {datetime.datetime.now().isoformat(timespec='seconds')}",
        "gpu-tests: python -m pytest --all tests/test_gpu.py; speed: python ppo.py --env Pong --device DEVICE --precision "
        f"PRECISION --total-steps {arguments.speed_steps} --target-return none, steps per second over metrics.csv's rows after "
        f"the first {arguments.warm_up} iterations; pong-learning: python ppo.py --env Pong --seed 1 --device cuda, stopped "
        f"with SIGTERM after {arguments.learn_seconds:.0f} s of training; seconds: of training, from metrics.csv (start-up "
        "excluded); mean_return: the mean score of the last 20 games (fewer at the start); a failed run: result 'failed' "
        "and its error in detail",
    ])
    print(f"writing {path}", flush=True)

    def left(reserve: float) -> float:
        """Seconds this stage may take, keeping `reserve` for the stages after it."""
        return max(deadline - time.time() - reserve, 0)

    check_the_gpu_tests(results, min(180, left(270)))
    settings = [("cuda", "float32"), *([("cuda", "bfloat16")] if capability >= (8, 0) else []), ("cpu", "float32")]
    if capability < (8, 0):
        results.add(check="speed", device="cuda", precision="bfloat16", result="not run",
                    detail=f"compute capability {capability[0]}.{capability[1]}: no bfloat16 arithmetic (8.0 or more)")
    for run in range(1, arguments.speed_runs + 1):
        for device, precision in settings if run % 2 else reversed(settings):  # alternating, so no setting always goes first
            limit = min(120, left(arguments.learn_seconds + 30))
            if limit < 20:
                results.add(check="speed", device=device, precision=precision, run=run, result="not run",
                            detail="no time left within --minutes")
                continue
            measure_speed(results, device, precision, run, arguments.speed_steps, arguments.warm_up, limit)
    check_pong_learning(results, arguments.learn_seconds, left(0))
    print(f"written to {path}" + (f" ({results.failures} failed; see the rows)" if results.failures else ""))
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
