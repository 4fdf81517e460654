"""How many environment steps and wall seconds ppo.py takes to solve a task, over seeds.

The measurement is made from outside the program under test. Each seed runs in its own
process, which records every finished episode as it happens (by wrapping
gymnasium.make and gymnasium.make_vec) and then runs the program unchanged. A seed is
solved at the first finished episode after which the mean return of the last WINDOW
episodes reaches THRESHOLD; its cost is the wall time since the process was launched
(Python start and imports included) and the environment steps taken by then, summed
over all environments. The step after an episode ends in NEXT_STEP autoreset only
resets the environment: it is not counted.

With --peer sb3, Stable-Baselines3's PPO runs the same seeds with the tuned
hyperparameters of rl-baselines3-zoo (hyperparams/ppo.yml), in the same sitting: each
seed runs ppo.py, then SB3, so both see the same machine. SB3 trains for the zoo's full
budget; the recorder finds when it first solved. stable-baselines3 is not a
requirement of the project: pip install stable-baselines3.

Run from the repository root:
    python tests/benchmark.py --env CartPole --seeds 1-20
    python tests/benchmark.py --env CartPole --seeds 1-20 --peer sb3
    python tests/benchmark.py --env CartPole --seeds 101-120 --peer sb3 --peer-steps 150000   # ppo.py's budget for both
    python tests/benchmark.py --env Pendulum --seeds 1-10 --peer sb3
    python tests/benchmark.py --env Acrobot-v1 --seeds 1,2,5 --threshold -100
    python tests/benchmark.py --env CartPole --seeds 1-5 -- --learning-rate 1e-3   # flags after -- go to ppo.py
    python tests/benchmark.py --env CartPole --seeds 1-20 --jobs 2   # step counts only: not a timing

Each implementation gets tests/results/<implementation>-<env>-seeds<seeds>-<cpu model>-<cpu
family and model>.csv (--label adds a word), one row per seed (seed, solved, env_steps,
wall_seconds, episodes, torch_threads) under comment lines that give the command, the CPU,
the commit of ppo.py, the versions and the date; a summary line per
implementation is printed. An unsolved seed's row holds the cost of its whole run and
counts as the worst seed in the summary. Percentiles are nearest-rank: the p-th
percentile of n sorted values is the one at rank ceil(p/100 * n), so the median of 20
seeds is the 10th.

ppo.py's CartPole and Pendulum presets use one torch thread; --peer-threads (default 1)
gives SB3 the same, and the torch_threads column records what each process ran with.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import gymnasium
import gymnasium.envs.registration
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PPO_PROGRAM = os.path.join(os.path.dirname(HERE), "ppo.py")
RESULTS = os.path.join(HERE, "results")

# The thresholds at which each of ppo.py's presets counts as solved.
DEFAULT_THRESHOLDS = {"CartPole": 475.0, "Pendulum": -200.0}

# rl-baselines3-zoo hyperparams/ppo.yml, entries CartPole-v1 and Pendulum-v1 (marked
# "Tuned" there), keyed by ppo.py's preset names. lin_X is a linear schedule from X to 0.
ZOO_PPO = {
    "CartPole": ("CartPole-v1", dict(
        n_envs=8, n_timesteps=100_000, policy="MlpPolicy", n_steps=32, batch_size=256, gae_lambda=0.8,
        gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate="lin_0.001", clip_range="lin_0.2",
    )),
    "Pendulum": ("Pendulum-v1", dict(
        n_envs=4, n_timesteps=100_000, policy="MlpPolicy", n_steps=1024, gae_lambda=0.95, gamma=0.9,
        n_epochs=10, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4,
    )),
}

# ---------------------------------------------------------------------------------------
# The child process: record episodes, then run the program under test
# ---------------------------------------------------------------------------------------


class EpisodeLog:
    """The child's record, one line per finished episode:
        wall_seconds_since_launch env_steps_so_far episode_return
    where env_steps_so_far counts the real steps of every environment of the process.
    A last line `end wall_seconds env_steps torch_threads` closes it (torch_threads 0:
    the program did not load torch)."""

    def __init__(self, path: str, launched_at: float):
        self.file = open(path, "a", buffering=1)  # line-buffered: a killed run keeps its episodes
        self.launched_at = launched_at
        self.env_steps = 0
        self.inside_make_vec = False  # make_vec's own sub-environments are counted by the vector recorder

    def wall_seconds(self) -> float:
        return time.time() - self.launched_at

    def episode_finished(self, episode_return: float) -> None:
        self.file.write(f"{self.wall_seconds():.3f} {self.env_steps} {episode_return!r}\n")

    def close(self) -> None:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else 0
        self.file.write(f"end {self.wall_seconds():.3f} {self.env_steps} {threads}\n")
        self.file.close()


class EpisodeRecorder(gymnasium.Wrapper):
    """Counts the steps and sums the rewards of one environment."""

    def __init__(self, env: gymnasium.Env, log: EpisodeLog):
        super().__init__(env)
        self.log = log
        self.episode_return = 0.0

    def reset(self, **kwargs):
        self.episode_return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.log.env_steps += 1
        self.episode_return += float(reward)
        if terminated or truncated:
            self.log.episode_finished(self.episode_return)
            self.episode_return = 0.0
        return observation, reward, terminated, truncated, info


class VectorEpisodeRecorder(gymnasium.vector.VectorWrapper):
    """Counts the steps and sums the rewards of each of N environments in NEXT_STEP
    autoreset, where the step after an episode ends only resets: no step, no reward."""

    def __init__(self, envs: gymnasium.vector.VectorEnv, log: EpisodeLog):
        super().__init__(envs)
        mode = envs.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
        if mode != gymnasium.vector.AutoresetMode.NEXT_STEP:
            raise RuntimeError(f"the benchmark counts steps of vector environments in NEXT_STEP autoreset only, not {mode}")
        self.log = log
        self.episode_returns = np.zeros(envs.num_envs)
        self.resetting = np.zeros(envs.num_envs, dtype=bool)  # True where this step only resets

    def reset(self, **kwargs):
        self.episode_returns[:], self.resetting[:] = 0.0, False
        return self.env.reset(**kwargs)

    def step(self, actions):
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        real = ~self.resetting
        self.log.env_steps += int(real.sum())
        self.episode_returns[real] += np.asarray(rewards, dtype=float)[real]
        ended = (np.asarray(terminated) | np.asarray(truncated)) & real
        for index in np.flatnonzero(ended):
            self.log.episode_finished(float(self.episode_returns[index]))
            self.episode_returns[index] = 0.0
        self.resetting = ended
        return observations, rewards, terminated, truncated, infos


def install_recorder(log: EpisodeLog) -> None:
    """Wrap every environment the program makes through gymnasium.make or make_vec."""
    original_make, original_make_vec = gymnasium.envs.registration.make, gymnasium.envs.registration.make_vec

    def make(*args, **kwargs):
        env = original_make(*args, **kwargs)
        return env if log.inside_make_vec else EpisodeRecorder(env, log)

    def make_vec(*args, **kwargs):
        log.inside_make_vec = True
        try:
            envs = original_make_vec(*args, **kwargs)
        finally:
            log.inside_make_vec = False
        return VectorEpisodeRecorder(envs, log)

    gymnasium.envs.registration.make, gymnasium.envs.registration.make_vec = make, make_vec
    gymnasium.make, gymnasium.make_vec = make, make_vec


def run_script(path: str, arguments: list[str]) -> None:
    """Run a Python file as `python path arguments` would, in this process."""
    sys.argv = [path, *arguments]
    sys.path[0] = os.path.dirname(path)
    runpy.run_path(path, run_name="__main__")


def zoo_value(value):
    """A hyperparameter as rl-baselines3-zoo reads it: lin_X is X times the fraction of
    training that remains, from X at the start to 0 at the end."""
    if isinstance(value, str) and value.startswith("lin_"):
        initial_value = float(value[len("lin_"):])
        return lambda progress_remaining: progress_remaining * initial_value
    return value


def train_sb3(env_name: str, seed: int, torch_threads: int, total_timesteps: int) -> None:
    """Stable-Baselines3's PPO with the zoo's hyperparameters for env_name.

    Imported here: only this child needs them, and stable-baselines3 is optional.
    Everything not set by the zoo is at SB3's defaults, except the torch threads and
    the device: the CPU, where ppo.py runs its MLP presets.
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(torch_threads)
    env_id, zoo = ZOO_PPO[env_name]
    settings = {key: zoo_value(value) for key, value in zoo.items()}
    num_envs, policy = settings.pop("n_envs"), settings.pop("policy")
    total_timesteps = total_timesteps or settings.pop("n_timesteps")
    settings.pop("n_timesteps", None)
    envs = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    model = PPO(policy, envs, seed=seed, device="cpu", **settings)
    model.learn(total_timesteps=total_timesteps)


def run_child(arguments: list[str]) -> None:
    """`benchmark.py --child LOG LAUNCHED_AT PROGRAM ARGS...`: PROGRAM is a Python file,
    run with ARGS as its command line, or `sb3` with ARGS `ENV SEED TORCH_THREADS STEPS`
    (STEPS 0: the zoo's budget)."""
    log_path, launched_at, program, *program_arguments = arguments
    log = EpisodeLog(log_path, float(launched_at))
    install_recorder(log)
    try:
        if program == "sb3":
            env_name, seed, torch_threads, steps = program_arguments
            train_sb3(env_name, int(seed), int(torch_threads), int(steps))
        else:
            run_script(program, program_arguments)
    finally:
        log.close()


# ---------------------------------------------------------------------------------------
# The parent process: launch one child per seed, read their logs, report
# ---------------------------------------------------------------------------------------


class ChildFailed(Exception):
    """A run exited with an error: the benchmark stops and keeps the run's output."""


@dataclasses.dataclass
class Outcome:
    """One seed of one implementation. Unsolved: the cost of the whole run."""
    seed: int
    solved: bool
    env_steps: int
    wall_seconds: float
    episodes: int
    torch_threads: int


def solve_outcome(seed: int, log_path: str, threshold: float, window: int) -> Outcome:
    """The first finished episode after which the mean of the last `window` returns
    reaches `threshold`, from a child's EpisodeLog."""
    with open(log_path) as file:
        lines = [line.split() for line in file]
    _, end_wall_seconds, end_env_steps, torch_threads = lines[-1]
    episodes = [(float(wall), int(steps), float(episode_return)) for wall, steps, episode_return in lines[:-1]]
    recent: deque = deque(maxlen=window)
    for count, (wall_seconds, env_steps, episode_return) in enumerate(episodes, start=1):
        recent.append(episode_return)
        if len(recent) == window and sum(recent) / window >= threshold:
            return Outcome(seed, True, env_steps, wall_seconds, count, int(torch_threads))
    return Outcome(seed, False, int(end_env_steps), float(end_wall_seconds), len(episodes), int(torch_threads))


def program_arguments(implementation: str, settings: argparse.Namespace, seed: int, folder: str) -> list[str]:
    """What the child runs for one seed: ppo.py with the preset, or SB3."""
    if implementation == "ppo":
        run_dir = os.path.join(folder, f"ppo-run-{seed}")
        return [PPO_PROGRAM, "--env", settings.env, "--seed", str(seed), "--run-dir", run_dir, *settings.ppo_flags]
    return ["sb3", settings.env, str(seed), str(settings.peer_threads), str(settings.peer_steps or 0)]


def run_seed(implementation: str, seed: int, settings: argparse.Namespace, folder: str) -> Outcome:
    """Launch one child, wait for it, and read when it solved."""
    log_path = os.path.join(folder, f"{implementation}-{seed}.episodes")
    output_path = os.path.join(folder, f"{implementation}-{seed}.out")
    program = program_arguments(implementation, settings, seed, folder)
    with open(output_path, "w") as output:
        launched_at = time.time()
        command = [sys.executable, os.path.abspath(__file__), "--child", log_path, repr(launched_at), *program]
        status = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise ChildFailed(f"{implementation} seed {seed} exited with status {status}; its output is in {output_path}")
    outcome = solve_outcome(seed, log_path, settings.threshold, settings.window)
    state = "solved" if outcome.solved else "unsolved, whole run"
    print(f"{implementation} seed {seed}: {state}: {outcome.env_steps:,} env steps, "
          f"{outcome.wall_seconds:.1f} s, {outcome.episodes} episodes", flush=True)
    return outcome


def run_all(implementations: list[str], settings: argparse.Namespace, folder: str) -> dict[str, list[Outcome]]:
    """Every seed of every implementation, `settings.jobs` at a time, in the order
    seed 1 ppo, seed 1 sb3, seed 2 ppo, ..."""
    tasks = [(implementation, seed) for seed in settings.seeds for implementation in implementations]
    executor = ThreadPoolExecutor(max_workers=settings.jobs)
    try:
        outcomes = list(executor.map(lambda task: run_seed(*task, settings, folder), tasks))
    finally:
        executor.shutdown(cancel_futures=True)
    return {name: [outcome for (implementation, _), outcome in zip(tasks, outcomes) if implementation == name]
            for name in implementations}


def nearest_rank(sorted_values: list[float], percent: float) -> float:
    """The value at rank ceil(percent/100 * n) of n ascending values."""
    return sorted_values[max(math.ceil(percent / 100 * len(sorted_values)), 1) - 1]


def percentiles(values: list[float], decimals: int) -> str:
    """Median, 90th percentile and worst; an unsolved seed is infinite, the worst."""
    ordered = sorted(values)
    shown = [nearest_rank(ordered, percent) for percent in (50, 90, 100)]
    text = ["unsolved" if math.isinf(value) else f"{value:,.{decimals}f}" for value in shown]
    return f"median {text[0]}, p90 {text[1]}, worst {text[2]}"


def summary(implementation: str, outcomes: list[Outcome], jobs: int) -> str:
    solved = [outcome for outcome in outcomes if outcome.solved]
    unsolved = len(outcomes) - len(solved)
    steps = [outcome.env_steps if outcome.solved else math.inf for outcome in outcomes]
    seconds = [outcome.wall_seconds if outcome.solved else math.inf for outcome in outcomes]
    threads = sorted({outcome.torch_threads for outcome in outcomes})
    line = (f"{implementation}: solved {len(solved)}/{len(outcomes)} | env steps {percentiles(steps, 0)} | "
            f"wall seconds {percentiles(seconds, 1)} | torch threads {', '.join(map(str, threads))}")
    if unsolved:
        line += f" | unsolved: {unsolved}, counted as worst"
    if jobs > 1:
        line += f" | wall times measured with {jobs} parallel jobs: not a timing"
    return line


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux) or platform.processor()."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_family_and_model() -> str:
    """'family25-model17' from /proc/cpuinfo (the model name alone, 'AMD EPYC', does not tell
    a Zen 1 part from a Zen 4 one), or '' where it is not known."""
    fields = {}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            for line in file:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    return f"family{fields['cpu family']}-model{fields['model']}" if "cpu family" in fields and "model" in fields else ""


def source_commit() -> str:
    """The commit of ppo.py measured, marked where ppo.py differs from it."""
    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=os.path.dirname(PPO_PROGRAM), capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with uncommitted changes to ppo.py" if git("status", "--porcelain", "ppo.py") else "")


def machine_line(*packages: str) -> str:
    """What a results file says of where it was measured: the CPU with its family and model,
    the commit of ppo.py, Python, torch, gymnasium and any further packages, the date."""
    versions = "; ".join(f"{name} {package_version(name)}" for name in ("torch", "gymnasium", *packages))
    return (f"cpu: {cpu_model()} {cpu_family_and_model()}; ppo.py at {source_commit()}; python {platform.python_version()}; "
            f"{versions}; date {datetime.datetime.now().isoformat(timespec='seconds')}")


def slug(text: str) -> str:
    """A short file-name part: 'Intel(R) Xeon(R) CPU @ 2.20GHz' -> 'Intel-Xeon',
    'AMD EPYC 7B13 64-Core Processor' -> 'AMD-EPYC-7B13'."""
    text = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|\b\d+-Core\b|@.*", " ", text, flags=re.IGNORECASE)
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", " ", text).split()[:4])


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_program(implementation: str, settings: argparse.Namespace) -> str:
    if implementation == "ppo":
        return shlex.join(["python", "ppo.py", "--env", settings.env, "--seed", "SEED", "--run-dir", "TEMPORARY", *settings.ppo_flags])
    env_id, zoo = ZOO_PPO[settings.env]
    hyperparameters = " ".join(f"{key}={settings.peer_steps if key == 'n_timesteps' and settings.peer_steps else value}"
                               for key, value in zoo.items())
    return (f"stable_baselines3.PPO {package_version('stable-baselines3')} on make_vec_env({env_id!r}, seed=SEED), "
            f"rl-baselines3-zoo hyperparams/ppo.yml {env_id}: {hyperparameters}; device cpu")


def write_csv(implementation: str, outcomes: list[Outcome], settings: argparse.Namespace, cpu: str) -> str:
    """tests/results/<implementation>-<env>-seeds<seeds>[-<label>]-<cpu>-<family and model>.csv,
    comment lines first."""
    parts = [implementation, slug(settings.env), "seeds" + slug(settings.seed_text), re.sub(r"[^A-Za-z0-9.]+", "-", settings.label or "").strip("-"), slug(cpu), cpu_family_and_model()]
    path = os.path.join(RESULTS, "-".join(filter(None, parts)) + ".csv")
    comments = [
        f"command: {shlex.join(['python', *sys.argv])}",
        f"program: {describe_program(implementation, settings)}",
        machine_line(),
        f"solved: the mean return of the last {settings.window} finished episodes first reached {settings.threshold:g}; "
        "env_steps summed over all environments, wall_seconds since the process was launched; "
        "an unsolved seed's row holds its whole run",
    ]
    if settings.jobs > 1:
        comments.append(f"wall times measured with {settings.jobs} parallel jobs: not a timing")
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w", newline="") as file:
        file.writelines(f"# {comment}\n" for comment in comments)
        writer = csv.writer(file)
        writer.writerow(["seed", "solved", "env_steps", "wall_seconds", "episodes", "torch_threads"])
        for outcome in outcomes:
            writer.writerow([outcome.seed, str(outcome.solved).lower(), outcome.env_steps,
                             f"{outcome.wall_seconds:.2f}", outcome.episodes, outcome.torch_threads])
    return path


def parse_seeds(text: str) -> list[int]:
    """'1-20' or '1,2,5' (or both: '1-3,7') -> a list of seeds."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if not (first.isdigit() and (last.isdigit() or not last)) or int(last or first) < int(first):
            raise ValueError(f"--seeds {text!r} is not a list of seeds like 1-20 or 1,2,5")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Environment steps and wall seconds for ppo.py to solve a task, over seeds.")
    parser.add_argument("--env", required=True, help="ppo.py's --env: a preset (CartPole, Pendulum, Pong) or a gymnasium id")
    parser.add_argument("--seeds", required=True, help="seeds to run, one process each: 1-20 or 1,2,5")
    parser.add_argument("--threshold", type=float, help="solved once the mean return reaches this (default: CartPole 475, Pendulum -200)")
    parser.add_argument("--window", type=int, default=100, help="finished episodes in that mean (default 100)")
    parser.add_argument("--peer", choices=["sb3"], help="also run Stable-Baselines3 with rl-zoo's hyperparameters, seed by seed")
    parser.add_argument("--peer-threads", type=int, default=1, help="torch threads of the peer (default 1, as ppo.py's CartPole and Pendulum presets)")
    parser.add_argument("--peer-steps", type=int, help="the peer's step budget (default: the zoo's n_timesteps); "
                        "ppo.py's CartPole preset trains for 150000")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1); above 1 the wall times are not a timing")
    parser.add_argument("--label", help="a word added to the names of the files written, e.g. before")
    parser.add_argument("ppo_flags", nargs="*", metavar="-- PPO_FLAGS", help="further flags for ppo.py, after --")
    return parser


def check_settings(settings: argparse.Namespace) -> None:
    """Read the seeds, fill in the default threshold; raise ValueError on settings that cannot run."""
    settings.seed_text, settings.seeds = settings.seeds, parse_seeds(settings.seeds)
    if settings.threshold is None:
        if settings.env not in DEFAULT_THRESHOLDS:
            raise ValueError(f"no default threshold for {settings.env}: give --threshold")
        settings.threshold = DEFAULT_THRESHOLDS[settings.env]
    if settings.window < 1 or settings.jobs < 1 or settings.peer_threads < 1 or (settings.peer_steps is not None and settings.peer_steps < 1):
        raise ValueError("--window, --jobs, --peer-threads and --peer-steps must be at least 1")
    if settings.peer == "sb3" and settings.env not in ZOO_PPO:
        raise ValueError(f"--peer sb3 knows rl-zoo's hyperparameters for {' and '.join(ZOO_PPO)} only, not {settings.env}")
    if settings.peer == "sb3" and importlib.util.find_spec("stable_baselines3") is None:
        raise ValueError("--peer sb3 needs stable-baselines3: pip install stable-baselines3")


def main(argv: list[str]) -> int:
    settings = build_parser().parse_args(argv)
    try:
        check_settings(settings)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    implementations = ["ppo", *([settings.peer] if settings.peer else [])]
    folder = tempfile.mkdtemp(prefix="ppo-benchmark-")
    try:
        results = run_all(implementations, settings, folder)
    except ChildFailed as error:  # the folder stays, for the run's output
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        shutil.rmtree(folder)
        print("interrupted: no results written", file=sys.stderr)
        return 130
    shutil.rmtree(folder)
    cpu = cpu_model()
    for implementation, outcomes in results.items():
        print(f"wrote {os.path.relpath(write_csv(implementation, outcomes, settings, cpu))}")
        print(summary(implementation, outcomes, settings.jobs))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
