"""The MuJoCo tasks of the PPO paper: any MuJoCo id takes the paper's settings, and a short
Hopper run goes end to end: train, checkpoint, --eval, --record."""
import gymnasium as gym
import pytest

import ppo


def test_a_mujoco_id_takes_the_papers_settings():
    """PPO paper, Table 3: horizon 2048 (one environment), Adam 3e-4, 10 epochs, minibatch
    64, gamma 0.99, lambda 0.95, clip 0.2, two hidden layers of 64 tanh units, no entropy
    bonus; and the running normalizations of its code."""
    for env_id in ("Hopper-v5", "InvertedPendulum-v5"):
        config = ppo.make_config(env_id)
        assert (config.num_envs, config.num_steps, config.minibatch_size, config.update_epochs) == (1, 2048, 64, 10)
        assert (config.learning_rate, config.gamma, config.gae_lambda, config.clip_coef, config.ent_coef) == (3e-4, 0.99, 0.95, 0.2, 0.0)
        assert (config.hidden_sizes, config.activation) == ((64, 64), "tanh")
        assert config.normalize_observations and config.scale_rewards


def test_mujoco_warnings_come_as_python_warnings_not_as_a_log_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ppo.check_environment("HalfCheetah-v5")
    with pytest.warns(UserWarning, match="MuJoCo: .*settotalmass"):  # HalfCheetah's model uses a deprecated attribute
        gym.make("HalfCheetah-v5").close()
    assert list(tmp_path.iterdir()) == []  # MuJoCo alone would write MUJOCO_LOG.TXT here


@pytest.mark.long
def test_a_short_hopper_run_trains_evaluates_and_records(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert ppo.main(["--env", "Hopper-v5", "--total-steps", "4096", "--run-dir", str(run_dir)]) == 0
    checkpoint = run_dir / "checkpoint.pt"
    assert checkpoint.exists() and (run_dir / "learning-curve.png").exists()
    capsys.readouterr()
    assert ppo.main(["--eval", str(checkpoint), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.startswith("return over 2 episodes: ")
    gif = tmp_path / "hopper.gif"
    status = ppo.main(["--eval", str(checkpoint), "--record", str(gif)])
    error = capsys.readouterr().err
    if status == 2 and "MuJoCo cannot draw here" in error:
        pytest.skip(f"this machine has no OpenGL for MuJoCo to draw with: {error.strip()}")
    assert status == 0 and gif.exists()
    from PIL import Image

    with Image.open(gif) as animation:
        assert animation.n_frames > 1 and animation.size[0] >= 64
        animation.seek(animation.n_frames // 2)
        colors = animation.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 8  # a drawn scene, not a blank frame
