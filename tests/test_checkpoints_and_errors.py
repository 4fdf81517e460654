"""Checkpoints, resume, interruption, divergence, evaluation and every kind of bad input."""
import dataclasses
import importlib.util
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ppo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLATILE = {"wall_seconds", "steps_per_second", "run_dir", "checkpoint", "status"}


def cartpole(run_dir, **overrides):
    settings = dict(seed=5, run_dir=str(run_dir), total_steps=2048, target_return=None, save_every=1)  # 4 iterations of 512
    return ppo.make_config("CartPole", **{**settings, **overrides})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short run's folder, copied by the tests that only read it."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    ppo.ppo(cartpole(folder, total_steps=1024))
    return folder


def folder_contents(folder):
    """Every file of a folder and its bytes, to show that nothing was written over."""
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def learning_state(checkpoint_path):
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    return checkpoint["model"], checkpoint["optimizer"]


def assert_same_learning_state(first_path, second_path):
    first_model, first_optimizer = learning_state(first_path)
    second_model, second_optimizer = learning_state(second_path)
    for name in first_model:
        assert torch.equal(first_model[name], second_model[name]), name
    assert first_optimizer["param_groups"] == second_optimizer["param_groups"]
    assert first_optimizer["state"].keys() == second_optimizer["state"].keys()
    for index, first in first_optimizer["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):  # Adam's step count and both moments
            assert torch.equal(first[key], second_optimizer["state"][index][key]), (index, key)


def test_checkpoint_is_a_dict_of_state_dicts_loadable_with_weights_only(tmp_path):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert {"format", "config", "env_id", "model", "optimizer", "runner", "iteration", "global_step", "rng"} <= set(checkpoint)
    assert checkpoint["env_id"] == "CartPole-v1" and checkpoint["iteration"] == 2
    assert checkpoint["config"]["env"] == "CartPole"
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # the atomic write left nothing behind


@pytest.mark.parametrize("objective", ["clip", "kl-penalty"])
def test_an_interrupted_run_resumed_equals_an_uninterrupted_one(tmp_path, monkeypatch, objective):
    """2k iterations in one go == k iterations, Ctrl-C, resume for k more (annealed lr, and
    the adapted beta of the KL penalty, too)."""
    whole = ppo.ppo(cartpole(tmp_path / "whole", objective=objective))
    calls = {"count": 0}
    original_update = ppo.update
    def interrupt_after_k(*arguments):
        calls["count"] += 1
        if calls["count"] == 2:  # k = 2 of 2k = 4 iterations
            os.kill(os.getpid(), signal.SIGINT)
        return original_update(*arguments)
    monkeypatch.setattr(ppo, "update", interrupt_after_k)
    config = cartpole(tmp_path / "split", objective=objective)
    first_half = ppo.ppo(config)
    assert first_half["status"] == "interrupted" and first_half["iteration"] == 2
    monkeypatch.setattr(ppo, "update", original_update)
    second_half = ppo.ppo(config, resume=first_half["checkpoint"])
    assert second_half["iteration"] == 4
    assert {k: v for k, v in whole.items() if k not in VOLATILE} == {k: v for k, v in second_half.items() if k not in VOLATILE}
    assert_same_learning_state(whole["checkpoint"], second_half["checkpoint"])
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # the resumed run appends to the same metrics file
    betas = [row.split(",")[ppo.METRIC_COLUMNS.index("kl_coef")] for row in rows[1:]]
    if objective == "kl-penalty":  # beta was adapted, saved and restored
        assert betas[0] == "1.0" and len(set(betas)) > 1
    else:
        assert betas == [""] * 4


def test_a_finished_run_extended_by_resume_equals_a_longer_run(tmp_path):
    longer = ppo.ppo(cartpole(tmp_path / "long", anneal_lr=False))
    shorter = ppo.ppo(cartpole(tmp_path / "short", anneal_lr=False, total_steps=1024))
    extended = ppo.ppo(cartpole(tmp_path / "short", anneal_lr=False), resume=shorter["checkpoint"])
    assert {k: v for k, v in longer.items() if k not in VOLATILE} == {k: v for k, v in extended.items() if k not in VOLATILE}
    assert_same_learning_state(longer["checkpoint"], extended["checkpoint"])


@pytest.mark.long
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_saves_a_checkpoint_and_exits_128_plus_its_number(tmp_path, stop_signal):
    """Ctrl-C (SIGINT), kill and timeout (SIGTERM), a closed terminal (SIGHUP)."""
    command = [sys.executable, "ppo.py", "--env", "CartPole", "--total-steps", "100000000",
               "--target-return", "none", "--save-every", "1000000", "--run-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = tmp_path / "metrics.csv"
    deadline = time.time() + 120  # a safety net only: the signal goes after 3 logged iterations
    while time.time() < deadline and process.poll() is None:
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 4:
            break
        time.sleep(0.1)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop_signal, stderr
    checkpoint_path = str(tmp_path / "checkpoint.pt")
    assert f"interrupted: checkpoint saved to {checkpoint_path}" in stdout
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert checkpoint["iteration"] >= 3


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"count": 0}
    original = ppo.value_loss
    def value_loss_that_breaks(values, returns):
        calls["count"] += 1
        loss = original(values, returns)
        # Iterations have 4 * 8 = 32 minibatch steps: iteration 3 is where it breaks.
        return loss * float("nan") if calls["count"] > 64 else loss
    monkeypatch.setattr(ppo, "value_loss", value_loss_that_breaks)
    with pytest.raises(ppo.TrainingDiverged) as error:
        ppo.ppo(cartpole(tmp_path))
    checkpoint_path = str(tmp_path / "checkpoint.pt")
    assert "iteration 3" in str(error.value) and checkpoint_path in str(error.value)
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert checkpoint["iteration"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["model"].values())


def test_eval_prints_the_mean_and_std_of_the_deterministic_policy(tmp_path, capsys):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    assert ppo.main(["--eval", metrics["checkpoint"], "--episodes", "3"]) == 0
    assert "return over 3 episodes:" in capsys.readouterr().out


def test_watch_says_why_it_cannot_open_a_window(tmp_path, monkeypatch, capsys):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert ppo.main(["--watch", metrics["checkpoint"]]) == 2
    assert "--watch needs a display" in capsys.readouterr().err


def test_run_folder_holds_the_config_the_metrics_and_the_checkpoint(tmp_path):
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "config.json", "learning-curve.png", "metrics.csv", "run.lock"]
    import json
    assert json.loads((tmp_path / "config.json").read_text())["env"] == "CartPole"


@pytest.mark.long
def test_a_run_under_the_profiler_trains_and_writes_its_profile(tmp_path):
    """python -m cProfile runs ppo.py in a namespace that is not a module: the flags' types
    must still be found."""
    command = [sys.executable, "-m", "cProfile", "-o", str(tmp_path / "profile"), "ppo.py", "--env", "CartPole",
               "--total-steps", "512", "--run-dir", str(tmp_path / "run")]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert (tmp_path / "profile").stat().st_size > 0 and (tmp_path / "run" / "checkpoint.pt").exists()


def test_help_documents_every_flag_in_full_words(capsys):
    with pytest.raises(SystemExit):
        ppo.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--env", "--seed", "--device", "--total-steps", "--num-envs", "--num-steps", "--num-minibatches",
                 "--update-epochs", "--learning-rate", "--clip-coef", "--ent-coef", "--gamma", "--gae-lambda",
                 "--target-kl", "--run-dir", "--resume", "--eval", "--watch", "--cnn", "--tensorboard"):
        assert flag in text, flag


real_find_spec = importlib.util.find_spec  # the original, for the monkeypatched ones below to fall back on


BAD_INPUTS = [
    (["--env", "CartPol"], "unknown environment 'CartPol': did you mean CartPole"),
    (["--env", "Acrobot-v9"], "did you mean Acrobot-v1"),
    (["--num-minibatches", "3"], "does not split into 3 minibatches"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gae-lambda", "-0.1"], "--gae-lambda must be in (0, 1]"),
    (["--clip-coef", "1"], "--clip-coef must be in (0, 1)"),
    (["--num-envs", "0"], "--num-envs must be a positive integer"),
    (["--num-steps", "-4"], "--num-steps must be a positive integer"),
    (["--update-epochs", "0"], "--update-epochs must be a positive integer"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--total-steps", "10"], "is less than one batch"),
    (["--device", "tpu"], "--device 'tpu' is not a torch device; use cpu, cuda or cuda:N"),
    (["--device", "mps"], "--device 'mps' is not supported; use cpu or cuda"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295]"),
    (["--num-envs", "1", "--num-steps", "4", "--num-minibatches", "4"], "minibatches of at least 8 steps"),
    (["--env", "Blackjack-v1"], "are not supported; ppo.py takes 1-D Box vectors"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--vf-coef", "inf"], "--vf-coef must be a finite number, got inf"),
    (["--ent-coef", "nan"], "--ent-coef must be a finite number, got nan"),
    (["--advantage-std-floor", "-1"], "--advantage-std-floor must be zero or positive, got -1.0"),
    (["--log-std-init", "nan"], "--log-std-init must be a finite number, got nan"),
    (["--log-std-init", "1e10"], "--log-std-init must be in [-10, 2]"),
    (["--target-kl", "inf"], "--target-kl must be a finite number or none, got inf"),
    (["--torch-threads", "-1"], "--torch-threads must be zero or positive"),
    (["--num-envs", "four"], "argument --num-envs: invalid int value: 'four'; see python ppo.py --help"),
    (["--activation", "gelu"], "argument --activation: invalid choice: 'gelu'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--env", "PongNoFrameskip-v4"], "use --env ALE/Pong-v5"),
    (["--eval", "a.pt", "--resume", "b.pt"], "--resume, --eval and --watch each do a different thing"),
    (["--resume", "/no/such/checkpoint.pt"], "no checkpoint at /no/such/checkpoint.pt"),
    (["--eval", "/no/such/checkpoint.pt"], "no checkpoint at /no/such/checkpoint.pt"),
]


@pytest.mark.parametrize("arguments, message", BAD_INPUTS)
def test_bad_input_is_one_clear_line_and_exit_2_and_writes_nothing(tmp_path, capsys, arguments, message):
    run_dir = tmp_path / "run"
    evaluation = arguments[0] in ("--eval", "--watch")  # which take no --run-dir: they write no run folder
    try:
        status = ppo.main(arguments + ([] if evaluation else ["--run-dir", str(run_dir)]))
    except SystemExit as exit:  # argparse's own errors leave through sys.exit
        status = exit.code
    assert status == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("error: ") and error.count("\n") == 1
    assert not run_dir.exists()


def test_cuda_without_cuda_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ppo.main(["--device", "cuda", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--device cuda: CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def pretend_gpus(monkeypatch, capabilities):
    """CUDA with GPUs of these compute capabilities, as far as ppo.py asks before it allocates."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    def index(device):
        return torch.device(device).index or 0 if device is not None else 0
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capabilities[index(device)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {index(device)}")


def test_bfloat16_on_a_gpu_without_it_is_refused(tmp_path, capsys, monkeypatch):
    """The check asks the compute capability of the GPU named (cuda:1 here), not whether
    bfloat16 can be emulated (torch.cuda.is_bf16_supported says True on a V100)."""
    pretend_gpus(monkeypatch, [(8, 0), (7, 0)])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert ppo.main(["--env", "Pong", "--device", "cuda:1", "--precision", "bfloat16", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --precision bfloat16: GPU 1 (compute capability 7.0) has no bfloat16 arithmetic, which needs 8.0 (Ampere) "
        "or newer; use --precision float32"]
    assert not (tmp_path / "run").exists()
    assert ppo.check_precision(torch.device("cuda", 0), "bfloat16") is None  # GPU 0 has it


def under_torchrun(monkeypatch, processes_here, processes=None):
    monkeypatch.setenv("WORLD_SIZE", str(processes or processes_here))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes_here))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")


def test_torchrun_with_more_processes_than_gpus_is_one_line(tmp_path, capsys, monkeypatch):
    pretend_gpus(monkeypatch, [(8, 0), (8, 0)])
    under_torchrun(monkeypatch, 4)
    assert ppo.main(["--device", "cuda", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: torchrun started 4 processes on this machine, which has 2 GPUs: one GPU each is needed; "
        "give --nproc-per-node 2 or fewer"]
    assert not (tmp_path / "run").exists()


def test_a_gpu_named_under_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    pretend_gpus(monkeypatch, [(8, 0), (8, 0)])
    under_torchrun(monkeypatch, 2)
    assert ppo.main(["--device", "cuda:1", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --device cuda:1: under torchrun each process uses GPU LOCAL_RANK of its machine; give --device cuda"]


def checkpoint_trained_on(tmp_path, device):
    """A checkpoint whose config says it was trained on this device."""
    metrics = ppo.ppo(ppo.make_config("CartPole", total_steps=1024, target_return=None, run_dir=str(tmp_path / "run")))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    checkpoint["config"]["device"] = device
    torch.save(checkpoint, metrics["checkpoint"])
    return metrics["checkpoint"]


def test_a_checkpoint_of_a_gpu_resumes_and_evaluates_on_the_cpu_of_a_machine_without_one(tmp_path, capsys, monkeypatch):
    path = checkpoint_trained_on(tmp_path, "cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    note = f"note: {path} was trained on cuda:1, which this machine does not have; running on the CPU (--device chooses)"
    assert ppo.main(["--resume", path, "--total-steps", "2048", "--learning-rate", "1e-3"]) == 0
    output = capsys.readouterr()
    assert note in output.out.splitlines() and output.err == ""
    assert torch.load(path, weights_only=True)["config"]["device"] == "cpu"
    for action in (["--eval", path], ["--eval", path, "--record", str(tmp_path / "episode.gif")]):
        torch.save({**torch.load(path, weights_only=True), "config": {**torch.load(path, weights_only=True)["config"], "device": "cuda:1"}}, path)
        assert ppo.main([*action, "--episodes", "1"]) == 0
        assert note in capsys.readouterr().out.splitlines()
    assert ppo.main(["--resume", path, "--total-steps", "3072", "--learning-rate", "1e-3", "--device", "cuda"]) == 2  # unless --device says otherwise
    assert "--device cuda: CUDA is not available here" in capsys.readouterr().err


def test_atari_without_ale_py_gives_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ale_py" else real_find_spec(name, *a))
    assert ppo.main(["--env", "Pong", "--run-dir", str(tmp_path / "run")]) == 2
    assert "pip install 'ale-py>=0.11'" in capsys.readouterr().err


def test_an_old_gym_atari_id_is_refused_also_once_ale_py_has_registered_it(tmp_path, capsys):
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)  # as a Pong run earlier in the same process does: PongNoFrameskip-v4 is known now
    for old_id, new_id in (("PongNoFrameskip-v4", "ALE/Pong-v5"), ("SpaceInvaders-v4", "ALE/SpaceInvaders-v5")):
        assert ppo.main(["--env", old_id, "--run-dir", str(tmp_path / "run")]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {old_id} is an Atari id of the old gym API") and f"use --env {new_id}" in error
        assert error.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_old_gym_atari_id_without_ale_py_still_gets_the_id_to_use(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ale_py" else real_find_spec(name, *a))
    monkeypatch.setattr(ppo.gym, "registry", {key: spec for key, spec in ppo.gym.registry.items() if "ale_py" not in str(spec.entry_point)})
    assert ppo.main(["--env", "BreakoutNoFrameskip-v4", "--run-dir", str(tmp_path / "run")]) == 2
    assert "use --env ALE/Breakout-v5" in capsys.readouterr().err
    ppo.check_environment("Hopper-v4")  # an id of the same form that is registered is not refused
    capsys.readouterr()
    assert ppo.main(["--env", "Pendulum-v4", "--run-dir", str(tmp_path / "run")]) == 2  # a mistyped version
    error = capsys.readouterr().err
    assert error.startswith("error: unknown environment 'Pendulum-v4': did you mean Pendulum-v1"), error


def test_close_matches_of_an_unknown_id_leave_out_the_old_atari_ids(tmp_path, capsys):
    assert ppo.main(["--env", "Breakout-v9", "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "did you mean" in error and "ALE/Breakout-v5" in error and "Breakout-v4" not in error


def test_mujoco_task_without_mujoco_gives_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mujoco" else real_find_spec(name, *a))
    assert ppo.main(["--env", "Hopper-v5", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: Hopper-v5 needs the MuJoCo physics engine: pip install 'gymnasium[mujoco]>=1.1' (in requirements.txt)"]
    assert not (tmp_path / "run").exists()


def test_tensorboard_without_the_package_gives_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    assert ppo.main(["--tensorboard", "--run-dir", str(tmp_path / "run")]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_is_refused_and_left_as_it_was(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint at all")
    assert ppo.main(["--resume", str(path)]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err
    assert path.read_bytes() == b"not a checkpoint at all"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


@pytest.mark.parametrize("action", ["--eval", "--resume"])
def test_a_raw_pickle_is_refused_in_one_line(tmp_path, capsys, action):
    """torch.load warns about the pickle's protocol before it refuses it; a user would see
    the warning's two lines above ppo.py's one, so none may be shown."""
    path = tmp_path / "raw.pt"
    with open(path, "wb") as file:
        pickle.dump({"weights": [1.0, 2.0]}, file, protocol=4)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert ppo.main([action, str(path)]) == 2
    assert [str(warning.message) for warning in shown] == []
    assert capsys.readouterr().err == (f"error: {path} is not a readable checkpoint (UnpicklingError); "
                                       "it may be truncated or from another program; use one written by ppo.py\n")


@pytest.mark.parametrize("flags, message", [
    (["--env", "Acrobot-v1"], "was trained with env='CartPole-v1', not 'Acrobot-v1'"),
    (["--hidden-sizes", "32", "32"], "not (32, 32); resume with --hidden-sizes 64 64"),
    (["--num-envs", "8"], "was trained with num_envs=32, not 8"),
    (["--num-steps", "32"], "was trained with num_steps=16, not 32"),
    (["--normalize-observations"], "not True; resume with --no-normalize-observations"),
])
def test_checkpoint_of_another_environment_or_shape_is_refused(tmp_path, capsys, trained_run, flags, message):
    shutil.copytree(trained_run, tmp_path, dirs_exist_ok=True)
    before = folder_contents(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "checkpoint.pt")] + flags) == 2
    assert message in capsys.readouterr().err
    assert folder_contents(tmp_path) == before


def test_checkpoint_whose_networks_do_not_fit_is_refused(tmp_path, capsys):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    checkpoint["model"]["critic.value_net.0.weight"] = torch.zeros(3, 3)
    torch.save(checkpoint, metrics["checkpoint"])
    capsys.readouterr()
    assert ppo.main(["--eval", metrics["checkpoint"]]) == 2
    assert "other shapes than this run's" in capsys.readouterr().err


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, capsys):
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    before = folder_contents(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--run-dir", str(tmp_path)]) == 2
    assert f"already holds a run; continue it with --resume {tmp_path / 'checkpoint.pt'}" in capsys.readouterr().err
    assert folder_contents(tmp_path) == before


def test_a_resume_with_nothing_left_to_train_is_refused_and_writes_nothing(tmp_path, capsys, trained_run):
    """A finished run resumed as it was, or with fewer --total-steps, in its folder or into a new one."""
    shutil.copytree(trained_run, tmp_path / "run")
    checkpoint, before = tmp_path / "run" / "checkpoint.pt", folder_contents(tmp_path / "run")
    for flags, total_steps in [([], 1024), (["--total-steps", "512"], 512), (["--run-dir", str(tmp_path / "new")], 1024)]:
        capsys.readouterr()
        assert ppo.main(["--resume", str(checkpoint), *flags]) == 2
        assert capsys.readouterr().err == (f"error: {checkpoint} has trained 2 iterations, all that --total-steps "
                                           f"{total_steps} holds; give --total-steps 1536 or more to train on, or --eval it\n")
    assert folder_contents(tmp_path / "run") == before and not (tmp_path / "new").exists()


def test_tensorboard_scalars_when_the_package_is_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ppo.ppo(cartpole(tmp_path, total_steps=1024, tensorboard=True))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [event.step for event in events.Scalars("mean_return")] == [
        int(row.split(",")[1]) for row in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]


def test_a_moved_run_resumes_beside_its_checkpoint_and_leaves_the_original_alone(tmp_path):
    import shutil
    ppo.ppo(cartpole(tmp_path / "original", total_steps=1024))
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    before = folder_contents(tmp_path / "original")
    assert ppo.main(["--resume", str(tmp_path / "copy" / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 0
    assert folder_contents(tmp_path / "original") == before
    assert torch.load(tmp_path / "copy" / "checkpoint.pt", weights_only=True)["iteration"] == 4


def test_float64_observations_reach_the_network_as_float32():
    observations = ppo.observation_tensor(np.zeros((2, 3), dtype=np.float64), torch.device("cpu"))
    frames = ppo.observation_tensor(np.zeros((2, 3, 4, 4), dtype=np.uint8), torch.device("cpu"))
    assert observations.dtype == torch.float32 and frames.dtype == torch.uint8


@pytest.mark.parametrize("field, value, message", [
    ("hidden_sizes", "64", "--hidden-sizes must be a list of integers, got '64'"),
    ("seed", "one", "--seed must be an integer, got 'one'"),
    ("env", 5, "--env must be a string, got 5"),
    ("activation", "gelu", "--activation must be one of tanh, relu, got 'gelu'"),
    ("learning_rate", float("inf"), "--learning-rate must be a finite number, got inf"),
    ("num_envs", True, "--num-envs must be an integer, got True"),
])
def test_every_config_is_valid_once_made(field, value, message):
    with pytest.raises(ppo.UserError, match=re.escape(message)):
        ppo.Config(**{"env": "CartPole-v1", field: value})
    with pytest.raises(ppo.UserError, match=re.escape(message)):
        dataclasses.replace(ppo.make_config("CartPole"), **{field: value})


def test_a_checkpoint_with_an_invalid_config_is_refused_in_one_line(tmp_path, capsys):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    checkpoint["config"]["seed"] = "one"
    torch.save(checkpoint, metrics["checkpoint"])
    capsys.readouterr()
    assert ppo.main(["--eval", metrics["checkpoint"]]) == 2
    error = capsys.readouterr().err
    assert "holds an invalid config: --seed must be an integer, got 'one'" in error and error.count("\n") == 1


def test_help_groups_the_flags_by_family_and_shows_the_presets_values(capsys):
    with pytest.raises(SystemExit):
        ppo.main(["--help"])
    output = capsys.readouterr().out
    text = " ".join(output.split())  # argparse wraps lines
    titles = [line[:-1] for line in output.splitlines() if line.endswith(":") and not line.startswith(" ")]
    families = list(dict.fromkeys(item.metadata["family"] for item in dataclasses.fields(ppo.Config)))
    assert titles == ["options", *families, "other actions"]
    assert families[:8] == ["what and where", "how much data", "the update", "the objective", "networks",
                            "continuous control", "Atari", "stopping and logging"]
    for item in dataclasses.fields(ppo.Config):  # each field's flag once, under its family's title
        group = output.split(f"\n{item.metadata['family']}:\n")[1].split("\n\n")[0]
        assert f"  {ppo.flag_name(item.name)}" in group
    assert "(default: 4; presets: CartPole 32, Pendulum 4, Pong 16)" in text



def test_resume_from_inside_the_run_folder(tmp_path, monkeypatch):
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    monkeypatch.chdir(tmp_path)
    assert ppo.main(["--resume", "checkpoint.pt", "--total-steps", "2048", "--learning-rate", "1e-3"]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 4
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "config.json", "learning-curve.png", "metrics.csv", "run.lock"]


def test_a_new_config_field_is_one_line_that_makes_its_flag_its_help_and_its_resume(tmp_path):
    """One line added as Config's last field, and nothing else, gives its flag in --help, its
    value in config.json and a resume of the run that set it."""
    source = (Path(ppo.__file__)).read_text()
    anchor = "\n    def __post_init__(self):\n        check_config(self)"
    assert source.count(anchor) == 1
    copy_path = tmp_path / "ppo_with_a_knob.py"
    copy_path.write_text(source.replace(anchor, '\n    my_knob: float = option(0.5, "a new knob")\n' + anchor))
    def run(*arguments):
        return subprocess.run([sys.executable, str(copy_path), *arguments], capture_output=True, text=True, cwd=tmp_path)
    help_text = run("--help").stdout
    assert "\nother settings:\n  --my-knob MY_KNOB" in help_text and "a new knob (default: 0.5)" in " ".join(help_text.split())
    trained = run("--my-knob", "0.7", "--total-steps", "1024", "--run-dir", "run")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["my_knob"] == 0.7
    resumed = run("--resume", "run/checkpoint.pt", "--total-steps", "2048", "--learning-rate", "1e-3")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["my_knob"] == 0.7
    assert run("--my-knob", "inf").stderr == "error: --my-knob must be a finite number, got inf\n"
