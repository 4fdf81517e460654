"""End-to-end behaviour: learning within step budgets, determinism, the Atari and the
continuous-control pipelines."""
import collections
import csv
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import ppo

VOLATILE = {"wall_seconds", "steps_per_second", "run_dir", "checkpoint"}


# CartPole's budget comes from a measured distribution, not from one seed's trajectory:
# rounding differs between CPUs, so on another machine every seed is a fresh draw. With the
# preset, 40 seeds on an AMD EPYC solved (mean of the last 100 episodes >= 475, ppo.py's
# own check) after a median of about 65,000 steps; 39 of 40 within the preset's 150,000
# steps, the slowest after 118,384, and one (seed 22) not at all. So one seed alone would
# fail about 1 time in 40 on a new machine; two of three seeds failing has a chance of
# about 3 * (1/40)^2, or 0.2%.
CARTPOLE_SEEDS = (1, 2, 3)


@pytest.mark.long
def test_cartpole_solves_within_its_step_budget(tmp_path):
    solved = []
    for seed in CARTPOLE_SEEDS:
        metrics = ppo.ppo(ppo.make_config("CartPole", seed=seed, run_dir=str(tmp_path / str(seed))))
        if metrics["status"] == "solved":
            assert metrics["mean_return"] >= 475 and metrics["episodes"] == 100
            assert metrics["global_step"] <= 150_000
            solved.append(metrics)
        if len(solved) == 2:
            break
    assert len(solved) == 2, "fewer than 2 of 3 seeds solved CartPole within 150,000 steps"
    mean, _ = ppo.evaluate(solved[0]["checkpoint"], episodes=5)
    assert mean >= 475  # the deterministic policy of the checkpoint balances too


@pytest.mark.long
def test_cartpole_learns_with_the_kl_penalty_within_a_step_budget(tmp_path):
    """A random policy scores about 20. With --objective kl-penalty, seeds 1 to 20 of the
    preset on an AMD EPYC first reached a mean of 200 after 24,907 to 34,581 steps (18 of
    them went on to solve, 475, within 150,000 steps; 2 did not). The budget is 1.5 times
    that worst seed: on another CPU this seed's trajectory is a fresh draw, and no seed came
    within 2/3 of the budget."""
    config = ppo.make_config("CartPole", seed=1, objective="kl-penalty", target_return=200.0, run_dir=str(tmp_path))
    metrics = ppo.ppo(config)
    assert metrics["status"] == "solved" and metrics["mean_return"] >= 200
    assert metrics["global_step"] <= 52_000


def short_cartpole(run_dir, **overrides):
    settings = dict(seed=3, run_dir=str(run_dir), total_steps=4096, target_return=None)
    return ppo.make_config("CartPole", **{**settings, **overrides})


def weights_of(checkpoint_path):
    return torch.load(checkpoint_path, weights_only=True)["model"]


def test_same_seed_gives_identical_metrics_and_parameters(tmp_path):
    first = ppo.ppo(short_cartpole(tmp_path / "a"))
    second = ppo.ppo(short_cartpole(tmp_path / "b"))
    assert {k: v for k, v in first.items() if k not in VOLATILE} == {k: v for k, v in second.items() if k not in VOLATILE}
    for name, tensor in weights_of(first["checkpoint"]).items():
        assert torch.equal(tensor, weights_of(second["checkpoint"])[name]), name
    other = ppo.ppo(short_cartpole(tmp_path / "c", seed=4))
    assert not torch.equal(weights_of(other["checkpoint"])["critic.value_net.0.weight"],
                           weights_of(first["checkpoint"])["critic.value_net.0.weight"])


def test_learn_is_the_loop_that_ppo_runs(tmp_path, monkeypatch):
    """Part I's learn(), called from Python, yields each iteration's diagnostics, and they
    are what ppo() writes to metrics.csv for the same config on the same machine: ppo() runs
    Part I's ppo_iteration once per iteration, at the rates learn anneals, as learn does."""
    config = short_cartpole(tmp_path)
    yielded = list(ppo.learn(config))
    rates = []
    real_iteration = ppo.ppo_iteration
    monkeypatch.setattr(ppo, "ppo_iteration", lambda learner, config, rate: rates.append(rate) or real_iteration(learner, config, rate))
    ppo.ppo(config)
    assert rates == [diagnostics["learning_rate"] for diagnostics in yielded]
    with open(tmp_path / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [diagnostics["iteration"] for diagnostics in yielded] == list(range(1, config.num_iterations + 1))
    recent = collections.deque(maxlen=config.return_window)  # the episodes whose mean return ppo() logs
    global_step = 0
    for row, diagnostics in zip(rows, yielded, strict=True):
        for name in (*ppo.UPDATE_DIAGNOSTICS, "explained_variance", "learning_rate"):
            assert float(row[name]) == diagnostics[name] or math.isnan(diagnostics[name]) and row[name] == "nan", name
        recent.extend(diagnostics["episode_returns"])
        global_step += diagnostics["environment_steps"]
        assert int(row["episodes"]) == len(recent) and int(row["global_step"]) == global_step
        assert float(row["mean_return"]) == float(np.mean(recent)) if recent else row["mean_return"] == "nan"


def test_each_iterations_line_shows_the_time_elapsed_and_the_time_left(tmp_path, capsys, monkeypatch):
    """elapsed<left as tqdm shows it, left at the pace of the iterations so far: on a clock that
    advances 10 s an iteration, iteration 2 of 8 has taken 20 s and has 60 s left."""
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(ppo.time, "time", lambda: float(next(ticks)))
    config = short_cartpole(tmp_path)  # 8 iterations
    ppo.ppo(config)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("iter")]
    assert len(lines) == config.num_iterations == 8
    assert " | 0:20<1:00 | " in lines[1] and " | 1:20<0:00 | " in lines[7], lines
    assert [ppo.clock(seconds) for seconds in (0, 75, 3725)] == ["0:00", "1:15", "1:02:05"]


def test_metrics_are_means_over_the_iteration_and_the_csv_has_a_row_per_iteration(tmp_path):
    config = short_cartpole(tmp_path)
    metrics = ppo.ppo(config)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == list(ppo.METRIC_COLUMNS)
    assert len(lines) == 1 + config.num_iterations
    assert metrics["iteration"] == config.num_iterations
    assert 0 <= metrics["clip_fraction"] <= 1 and metrics["approx_kl"] >= 0


@pytest.mark.long
def test_pong_pipeline_keeps_uint8_frames_and_reports_game_scores():
    config = ppo.make_config("Pong", num_envs=2, num_steps=1100, num_minibatches=2, cnn="small")
    learner = ppo.build_learner(config, torch.device("cpu"))
    envs, agent, buffer = learner.envs, learner.agent, learner.buffer
    assert envs.single_observation_space.shape == (3, 84, 84)
    assert isinstance(agent.actor, ppo.CategoricalActor) and isinstance(agent.encoder[0], ppo.FramePreStacking)
    torch.manual_seed(0)
    episode_returns, last_values = learner.runner.collect(agent, buffer)
    envs.close()
    assert buffer.observations.shape == (1100, 2, 3, 84, 84) and buffer.observations.dtype == torch.uint8
    assert buffer.actions.shape == (1100, 2) and buffer.actions.dtype == torch.int64
    assert last_values.shape == (2,)
    assert set(np.unique(buffer.rewards)) <= {-1.0, 0.0, 1.0}  # the clipped training reward
    # A random policy loses most points: the logged returns are whole game scores.
    assert len(episode_returns) >= 1
    for score in episode_returns:
        assert score == int(score) and -21 <= score <= 21
    assert min(episode_returns) <= -15
    assert not buffer.valid.all()  # each finished game is followed by its autoreset step


def test_pong_trains_end_to_end_for_a_few_iterations(tmp_path):
    config = ppo.make_config("Pong", num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2,
                             total_steps=128, cnn="small", run_dir=str(tmp_path))
    metrics = ppo.ppo(config)
    assert metrics["status"] == "finished" and metrics["iteration"] == 2 and metrics["global_step"] == 128
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert checkpoint["env_id"] == "ALE/Pong-v5" and checkpoint["runner"]["environment"] is None


def test_pong_at_a_frame_size_of_42_sees_42x42_frames_and_trains(tmp_path):
    config = ppo.make_config("Pong", num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2,
                             total_steps=128, frame_size=42, run_dir=str(tmp_path))
    assert ppo.single_spaces(config)[0].shape == (3, 42, 42)
    metrics = ppo.ppo(config)
    assert metrics["iteration"] == 2
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert tuple(checkpoint["runner"]["raw_observations"].shape) == (2, 3, 42, 42)
    # The networks' shapes depend on it: a resume at another size is refused.
    with pytest.raises(ppo.UserError, match="frame_size=42"):
        ppo.ppo(ppo.dataclasses.replace(config, frame_size=84, total_steps=256, run_dir=None), resume=metrics["checkpoint"])


def test_generic_environment_ids_choose_actor_and_network_from_their_spaces(tmp_path):
    acrobot = ppo.make_config("Acrobot-v1", total_steps=256, num_envs=2, num_steps=64, run_dir=str(tmp_path / "a"))
    assert ppo.ppo(acrobot)["status"] == "finished"
    mountain = ppo.make_config("MountainCarContinuous-v0", total_steps=256, num_steps=128, num_minibatches=4, run_dir=str(tmp_path / "m"))
    assert mountain.normalize_observations and mountain.scale_rewards  # the generic continuous defaults
    assert ppo.ppo(mountain)["status"] == "finished"
    envs = ppo.make_environments(mountain, 1)
    agent = ppo.build_actor_critic(envs.single_observation_space, envs.single_action_space, mountain)
    assert isinstance(agent.actor, ppo.GaussianActor)


def test_the_buffer_stores_the_unclipped_action_and_the_update_uses_its_log_prob():
    config = ppo.make_config("Pendulum", num_envs=2, num_steps=64, num_minibatches=2, log_std_init=1.5)
    learner = ppo.build_learner(config, torch.device("cpu"))
    agent, buffer = learner.agent, learner.buffer
    torch.manual_seed(0)
    learner.runner.collect(agent, buffer)
    learner.envs.close()
    assert buffer.actions.abs().max() > 2.0  # outside Pendulum's [-2, 2]: stored unclipped
    advantages, value_targets = buffer.advantages_and_value_targets(torch.zeros(2), config.gamma, config.gae_lambda)
    batch = buffer.flatten_valid(advantages, value_targets)
    with torch.no_grad():
        new_log_probs, _, _, _ = agent(batch["observations"], batch["actions"])
        mean = agent.actor(batch["observations"])
        clipped_log_probs = agent.actor.log_prob(mean, batch["actions"].clamp(-2.0, 2.0))
    torch.testing.assert_close(new_log_probs, batch["old_log_probs"])  # ratio 1 before the first step
    assert not torch.allclose(clipped_log_probs, batch["old_log_probs"])


def test_normalizers_round_trip_through_a_checkpoint_exactly(tmp_path):
    config = ppo.make_config("Pendulum", num_envs=2, num_steps=64, num_minibatches=2)
    device = torch.device("cpu")
    learner = ppo.build_learner(config, device)
    runner = learner.runner
    runner.collect(learner.agent, learner.buffer)
    path = str(tmp_path / "checkpoint.pt")
    ppo.save_checkpoint(path, {"runner": ppo.runner_state(runner, [])})
    restored = ppo.build_learner(config, device).runner
    ppo.restore_runner(restored, torch.load(path, weights_only=True)["runner"], reset_seed=0)
    for name in ("mean", "var"):
        assert np.array_equal(getattr(restored.observation_normalizer.statistics, name), getattr(runner.observation_normalizer.statistics, name))
        assert np.array_equal(getattr(restored.reward_scaler.statistics, name), getattr(runner.reward_scaler.statistics, name))
    assert restored.observation_normalizer.statistics.count == runner.observation_normalizer.statistics.count
    # Pendulum's episodes cannot be saved, so the resumed ones start afresh: so do their returns.
    assert np.all(restored.reward_scaler.discounted_returns == 0) and np.any(runner.reward_scaler.discounted_returns != 0)


def test_evaluation_uses_the_saved_statistics_without_updating_them(tmp_path, monkeypatch):
    config = ppo.make_config("Pendulum", num_envs=2, num_steps=64, total_steps=128, num_minibatches=2, run_dir=str(tmp_path))
    metrics = ppo.ppo(config)
    def no_updates(self, batch):
        raise AssertionError("evaluation updated a normalizer")
    monkeypatch.setattr(ppo.RunningMeanStd, "update", no_updates)
    mean, std = ppo.evaluate(metrics["checkpoint"], episodes=2)
    assert -2000 < mean < 0 and std >= 0


@pytest.mark.long
def test_pendulum_learns_within_a_step_budget(tmp_path):
    """A random policy scores about -1200. With the preset, unchanged but for an early stop
    at -400 over the last 100 episodes, seeds 1 to 10 on an Intel Xeon (family 6, model 167)
    got there after a median of 50,948 steps and at most 77,440 (ppo.py's own check). The
    budget is about 1.5 times that worst seed, because on another CPU this seed's trajectory
    is a fresh draw; no seed came within 2/3 of it."""
    config = ppo.make_config("Pendulum", seed=3, target_return=-400.0, run_dir=str(tmp_path))
    metrics = ppo.ppo(config)
    assert metrics["status"] == "solved" and metrics["mean_return"] >= -400
    assert metrics["global_step"] <= 120_000


@pytest.mark.long
def test_pong_trains_in_bfloat16_and_resumes_in_float32(tmp_path, capsys, monkeypatch):
    # As on a CPU without AVX-512, where bfloat16 runs slower than float32: the run says so.
    monkeypatch.setattr(ppo.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    config = ppo.make_config("Pong", num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2,
                             total_steps=128, anneal_lr=False, precision="bfloat16", run_dir=str(tmp_path / "low"))
    metrics = ppo.ppo(config)
    assert metrics["status"] == "finished" and math.isfinite(metrics["policy_loss"])
    assert "note: --precision bfloat16 on a CPU without AVX-512 (AVX2) is slow" in capsys.readouterr().out
    # The weights are float32 either way, so the precision may change on resume.
    resumed = ppo.ppo(ppo.dataclasses.replace(config, precision="float32", total_steps=256, run_dir=None),
                      resume=metrics["checkpoint"])
    assert resumed["status"] == "finished" and resumed["iteration"] == 4
    assert "--precision bfloat16" not in capsys.readouterr().out


def test_bfloat16_is_called_slow_only_on_a_cpu_without_avx512(monkeypatch):
    for capability, slow in [("AVX2", True), ("NO AVX", True), ("AVX512", False), ("SVE256", False)]:
        monkeypatch.setattr(ppo.torch.backends.cpu, "get_cpu_capability", lambda: capability)
        assert ppo.bfloat16_is_slow(ppo.torch.device("cpu")) == slow
        assert not ppo.bfloat16_is_slow(ppo.torch.device("cuda"))


# A fresh interpreter allocates, writes and frees four 22 MB tensors at a time, as an update
# does with a minibatch of 256 Atari observations and its activations, and counts minor page
# faults before and after keep_freed_memory. glibc's mmap threshold starts at 128 KB and
# adapts to what is freed, so whether the default faults depends on the order of earlier
# allocations; the environment variable holds it at its starting value, the default's
# worst case, to make "before" certain.
FAULTS_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
import ppo
def faults_of_ten_rounds():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        tensors = [torch.ones(256, 3, 84, 84) for _ in range(4)]  # 22 MB each, every page written
        del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_ten_rounds()  # torch's own first allocations
default = faults_of_ten_rounds()
kept = ppo.keep_freed_memory()
faults_of_ten_rounds()  # the first round after fills the kept memory once
print(default, kept, faults_of_ten_rounds())
"""


@pytest.mark.long
@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_stops_large_tensors_from_page_faulting_in_again():
    result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, os.path.dirname(os.path.abspath(ppo.__file__))],
                            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    default, kept, after = result.stdout.split()
    pages = 10 * 4 * 256 * 3 * 84 * 84 * 4 // 4096  # the pages the 40 tensors write
    assert kept == "True"
    assert int(default) > pages / 2  # the 40 tensors fault their pages in anew
    assert int(after) < pages / 100
