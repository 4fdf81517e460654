"""Wall time at the PPO paper's MuJoCo settings, ppo.py beside Stable-Baselines3's PPO.

The paper's settings (Table 3): 1 environment x 2048 steps, 10 epochs of minibatches of 64
(320 gradient steps per 2,048 samples), Adam 3e-4, gamma 0.99, lambda 0.95, clip 0.2, no
entropy bonus, two hidden layers of 64 tanh units, separate policy and value networks.
ppo.py takes them from its generic continuous-control settings (which also normalize the
observations and scale the rewards, and use one torch thread); SB3 gets the same settings,
VecNormalize for the two normalizations, and one torch thread.

    ppo.py:  python ppo.py --env ENV --total-steps STEPS --seed SEED --target-return none --run-dir TEMPORARY
    SB3:     PPO("MlpPolicy", VecNormalize(1 env), n_steps=2048, batch_size=64, n_epochs=10, ...)

Each pair runs ppo.py, then SB3, whole processes timed from launch to exit (imports
included); a first unmeasured pair of at most 20,480 steps fills the file cache. The speedup
is the ratio of the medians. Also printed: each one's mean return of its last 100 training
episodes. Not collected by pytest: a timing is a measurement, not a test. Needs
stable-baselines3, which is not a requirement of the project: pip install stable-baselines3.

Run from the repository root, on a machine where nothing else runs:
    python tests/mujoco_speed.py --env InvertedPendulum-v5 --steps 20480 --pairs 5

It writes tests/results/mujoco-speed-<env>-<steps>-<cpu model>-<family and model>.csv (one
row per pair, under comment lines that give the commands, the CPU, the versions and the date).
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

from benchmark import RESULTS, cpu_family_and_model, cpu_model, machine_line, package_version, slug
from fixed_cost import ROOT

PAPER_SETTINGS = dict(n_steps=2048, batch_size=64, n_epochs=10, learning_rate=3e-4, gamma=0.99, gae_lambda=0.95,
                      clip_range=0.2, ent_coef=0.0, max_grad_norm=0.5)


def train_sb3(env_id: str, steps: int, seed: int) -> None:
    """SB3's PPO at the paper's settings; prints the mean return of its last 100 episodes."""
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    envs = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=PAPER_SETTINGS["gamma"])
    model = PPO("MlpPolicy", envs, seed=seed, device="cpu", **PAPER_SETTINGS)
    model.learn(steps)
    returns = [episode["r"] for episode in model.ep_info_buffer]
    print(f"mean_return {statistics.fmean(returns) if returns else float('nan')}")


def ppo_command(settings: argparse.Namespace, folder: str) -> list[str]:
    return [sys.executable, "ppo.py", "--env", settings.env, "--total-steps", str(settings.steps), "--seed", str(settings.seed),
            "--target-return", "none", "--run-dir", folder]


def sb3_command(settings: argparse.Namespace) -> list[str]:
    return [sys.executable, os.path.join("tests", "mujoco_speed.py"), "--sb3-child", settings.env, str(settings.steps), str(settings.seed)]


def timed(command: list[str]) -> tuple[float, str]:
    """Seconds from launch to exit of command, which must succeed, and what it printed."""
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return time.perf_counter() - start, finished.stdout


def last_mean_return(run_dir: str) -> float:
    with open(os.path.join(run_dir, "metrics.csv")) as file:
        rows = list(csv.DictReader(line for line in file if not line.startswith("#")))
    return float(rows[-1]["mean_return"])


def measure_pair(settings: argparse.Namespace) -> tuple[float, float, float, float]:
    """Seconds and final mean return of ppo.py, then of SB3."""
    with tempfile.TemporaryDirectory() as folder:
        run_dir = os.path.join(folder, "run")
        ppo_seconds, _ = timed(ppo_command(settings, run_dir))
        ppo_return = last_mean_return(run_dir)
    sb3_seconds, printed = timed(sb3_command(settings))
    return ppo_seconds, ppo_return, sb3_seconds, float(printed.split("mean_return")[-1])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--sb3-child"]:
        env_id, steps, seed = argv[1:]
        train_sb3(env_id, int(steps), int(seed))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="InvertedPendulum-v5", help="a MuJoCo task (default InvertedPendulum-v5)")
    parser.add_argument("--steps", type=int, default=20480, help="environment steps of each run (default 20480: 10 iterations)")
    parser.add_argument("--pairs", type=int, default=5, help="measured pairs of ppo.py and SB3 (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    settings = parser.parse_args(argv)
    measure_pair(argparse.Namespace(**{**vars(settings), "steps": min(settings.steps, 20480)}))  # fills the file cache; not counted
    pairs = [measure_pair(settings) for _ in range(settings.pairs)]
    ppo_median, sb3_median = statistics.median(pair[0] for pair in pairs), statistics.median(pair[2] for pair in pairs)
    cpu, family = cpu_model(), cpu_family_and_model()
    path = os.path.join(RESULTS, "-".join(filter(None, ["mujoco-speed", settings.env, str(settings.steps), slug(cpu), family])) + ".csv")
    with open(path, "w", newline="") as file:
        file.write(f"# command: {shlex.join(['python', *sys.argv])}\n"
                   f"# ppo.py: {shlex.join(['python', *ppo_command(settings, 'TEMPORARY')[1:]])}\n"
                   f"# sb3: stable-baselines3 {package_version('stable-baselines3')} PPO('MlpPolicy', VecNormalize(1 env), "
                   f"{', '.join(f'{name}={value}' for name, value in PAPER_SETTINGS.items())}), 1 torch thread\n"
                   f"# {machine_line('mujoco')}\n")
        writer = csv.writer(file)
        writer.writerow(["pair", "ppo_seconds", "ppo_mean_return", "sb3_seconds", "sb3_mean_return"])
        writer.writerows([index, *(f"{value:.3f}" if column % 2 == 0 else f"{value:.1f}" for column, value in enumerate(pair))]
                         for index, pair in enumerate(pairs, 1))
    print(f"wrote {os.path.relpath(path)}")
    print(f"{cpu} {family}, {settings.env}, {settings.steps} steps, {settings.pairs} pairs: ppo.py median {ppo_median:.2f} s, "
          f"SB3 median {sb3_median:.2f} s, speedup {sb3_median / ppo_median:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
