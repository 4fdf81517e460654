"""Seeing the agent: learning-curve.png in every run folder, --plot over several runs,
--eval --record (GIF animations, Pong with what the network sees), --watch, and their bad
inputs. Every picture written is decoded again: its size, its frames, its Software mark."""
import errno
import json
import os

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import ppo


def cartpole(run_dir, **overrides):
    settings = dict(seed=5, run_dir=str(run_dir), total_steps=1024, target_return=None)  # 2 iterations of 512
    return ppo.make_config("CartPole", **{**settings, **overrides})


def tiny_pong(run_dir):
    """A Pong checkpoint after one iteration of 64 steps: a nearly untrained policy, which
    is all the equality of returns needs, in seconds."""
    config = ppo.make_config("Pong", num_envs=2, num_steps=32, num_minibatches=2, update_epochs=1, total_steps=64,
                             run_dir=str(run_dir))
    return ppo.ppo(config)["checkpoint"]


def one_error_line(capsys, message):
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error, error


def gif_frames(path):
    """Size, and number of pictures, of a GIF: Pillow merges a picture that repeats the one
    before into it (lengthening its duration), so pictures are counted by duration."""
    with Image.open(path) as image:
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
        return image.size, durations


# learning-curve.png ----------------------------------------------------------------------

@pytest.mark.parametrize("every, drawings", [(0.0, 4), (1e9, 1)])
def test_every_run_folder_holds_its_learning_curve_redrawn_with_checkpoints(tmp_path, monkeypatch, every, drawings):
    """A checkpoint after each of 3 iterations, and one at the end: the picture is redrawn
    with each when it may be every 0 s, and only at the end when it must wait longer than
    the run lasts."""
    drawn = []
    real_write = ppo.write_learning_curve
    monkeypatch.setattr(ppo, "write_learning_curve", lambda run_dir, config: (drawn.append(run_dir), real_write(run_dir, config)))
    monkeypatch.setattr(ppo.LearningCurve.__init__, "__defaults__", (every,))
    ppo.ppo(cartpole(tmp_path, total_steps=1536, save_every=1))
    assert len(drawn) == drawings
    with Image.open(tmp_path / "learning-curve.png") as picture:
        assert picture.format == "PNG" and picture.size == (1120, 520) and picture.info["Software"] == "ppo.py"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_full_disk_while_drawing_the_curve_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    def full_disk(self, path, *arguments, **keywords):
        open(path, "wb").close()  # a partial file, as a full disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 1
    one_error_line(capsys, "(No space left on device); the last checkpoint")
    assert not [name for name in os.listdir(tmp_path / "run") if name.endswith(".tmp")]


def test_wall_seconds_add_up_over_the_launches_of_a_resumed_run():
    launches = np.array([1.0, 2.0, 3.0, 0.5, 1.5, 0.25])  # resumed twice
    assert ppo.cumulative_wall_seconds(launches).tolist() == [1.0, 2.0, 3.0, 3.5, 4.5, 4.75]


def test_median_and_range_over_seeds_on_a_common_grid():
    steps = np.array([0.0, 10.0, 20.0])
    runs = [{"global_step": steps, "mean_return": steps + offset} for offset in (0.0, 2.0, 4.0)]
    runs[2] = {"global_step": steps[:2], "mean_return": np.array([np.nan, 14.0])}  # stopped early, no return at first
    x, median, low, high = ppo.median_and_range(runs, "global_step", "mean_return", points=3)
    assert x.tolist() == [0.0, 10.0, 20.0]
    assert median.tolist() == [1.0, 12.0, 21.0] and low.tolist() == [0.0, 10.0, 20.0] and high.tolist() == [2.0, 14.0, 22.0]


def test_runs_of_one_length_end_where_the_first_of_them_ends():
    runs = [{"global_step": np.array([0.0, 500.0, last]), "mean_return": np.array([0.0, 5.0, 10.0 * seed])}
            for seed, last in ((1, 1000.0), (2, 998.0), (3, 996.0))]  # episodes ended at different steps
    x, median, low, high = ppo.median_and_range(runs, "global_step", "mean_return", points=3)
    assert x.tolist() == [0.0, 498.0, 996.0]
    assert high[-1] == 30.0 and low[-1] < 10.0  # every seed at the last point, not the longest run's alone


def test_runs_that_differ_only_in_the_seed_are_one_setting():
    base = json.loads(json.dumps(ppo.dataclasses.asdict(ppo.make_config("CartPole"))))  # as config.json holds it
    configs = [{**base, "seed": 1, "run_dir": "a"}, {**base, "seed": 2, "run_dir": "b", "torch_threads": 2},
               {**base, "seed": 1, "learning_rate": 1e-3}, {**base, "seed": 3}]
    assert ppo.group_runs(configs) == [("--learning-rate 0.002 (seeds 1, 2, 3)", [0, 1, 3]),
                                       ("--learning-rate 0.001 (seed 1)", [2])]
    assert ppo.group_runs(configs[:2]) == [("(seeds 1, 2)", [0, 1])]


# --plot ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two seeds of one setting and one run of another."""
    folder = tmp_path_factory.mktemp("runs")
    for name, overrides in (("seed-1", dict(seed=1)), ("seed-2", dict(seed=2)), ("faster", dict(seed=1, learning_rate=5e-3))):
        ppo.ppo(cartpole(folder / name, **overrides))
    return [str(folder / name) for name in ("seed-1", "seed-2", "faster")]


@pytest.mark.long
def test_plot_draws_several_runs_in_one_picture_and_prints_its_path(three_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ppo.main(["--plot", *three_runs]) == 0
    assert capsys.readouterr().out == "learning-curves.png\n"
    with Image.open(tmp_path / "learning-curves.png") as picture:
        assert picture.format == "PNG" and picture.info["Software"] == ppo.PLOT_MARK
    output = tmp_path / "seeds.png"
    assert ppo.main(["--plot", *three_runs[:2], "--plot-output", str(output)]) == 0
    first = output.read_bytes()
    assert ppo.main(["--plot", three_runs[0], "--plot-output", str(output)]) == 0  # a picture --plot drew is replaced
    assert output.read_bytes() != first and capsys.readouterr().out == f"{output}\n{output}\n"


@pytest.mark.long
def test_plot_of_several_environments_draws_one_return_panel_each(three_runs, tmp_path, capsys, monkeypatch):
    pendulum = tmp_path / "pendulum"
    ppo.ppo(ppo.make_config("Pendulum", num_envs=2, num_steps=64, num_minibatches=2, total_steps=512, run_dir=str(pendulum)))
    figures = []
    monkeypatch.setattr(ppo, "save_picture", lambda figure, path, mark: figures.append(figure))
    assert ppo.main(["--plot", *three_runs, str(pendulum), "--plot-output", str(tmp_path / "tasks.png")]) == 0
    panels = [axis for axis in figures[0].axes if axis.get_visible()]
    assert [axis.get_title() for axis in panels] == ["CartPole-v1", "Pendulum-v1"]
    # CartPole's two settings (seeds 1 and 2 as one median and band, the faster rate beside it); Pendulum's one run.
    assert all(axis.get_legend() is not None for axis in panels)
    assert [[line.get_label() for line in axis.get_lines()] for axis in panels] == [
        ["--learning-rate 0.002 (seeds 1, 2)", "--learning-rate 0.005 (seed 1)"], ["(seed 1)"]]


def test_plot_of_a_metrics_file_it_cannot_read_is_one_line(three_runs, tmp_path, capsys, monkeypatch):
    """As for a user without read permission (the tests may run as root, whom no mode stops)."""
    def unreadable(path, *arguments, **options):
        if str(path).endswith("metrics.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *arguments, **options)
    monkeypatch.setattr(ppo, "open", unreadable, raising=False)
    assert ppo.main(["--plot", three_runs[0], "--plot-output", str(tmp_path / "curves.png")]) == 2
    one_error_line(capsys, f"cannot read {os.path.join(three_runs[0], 'metrics.csv')} (Permission denied); "
                           "give folders that runs wrote and you can read")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "is not a folder; give run folders to --plot"),
    ("no metrics", "holds no metrics.csv, so it is not a run folder"),
    ("header only", "has no rows yet: its run has not finished an iteration"),
    ("not csv", "is not a metrics file that ppo.py wrote"),
    ("no config", "config.json is missing or not a config that ppo.py wrote"),
    ("config of another form", "config.json is missing or not a config that ppo.py wrote"),
    ("twice", "a run folder is given twice to --plot"),
    ("user's picture", "exists and is not a picture that --plot drew, so it is kept"),
    ("not png", "--plot draws PNG pictures; name the file <name>.png"),
    ("no such folder for the output", "does not exist; create it or choose another path"),
    ("training flag", "--plot draws runs from their folders and takes no other flag but --plot-output"),
    ("evaluation flag", "--plot draws runs from their folders and takes no other flag but --plot-output"),
    ("output without plot", "--plot-output names the picture of --plot RUN_DIR"),
])
def test_bad_plot_input_is_one_line_and_exit_2_and_overwrites_nothing(three_runs, tmp_path, capsys, case, message):
    run, output = tmp_path / "run", tmp_path / "mine.png"
    output.write_bytes(b"a user's own file")
    if case != "missing":
        run.mkdir()
    own_metrics = open(os.path.join(three_runs[0], "metrics.csv")).read()
    if case in ("header only", "not csv", "no config", "config of another form"):
        (run / "metrics.csv").write_text({"header only": ",".join(ppo.METRIC_COLUMNS) + "\n", "not csv": "name,score\nada,3\n",
                                          "no config": own_metrics, "config of another form": own_metrics}[case])
    if case == "config of another form":
        (run / "config.json").write_text('{"env": ["CartPole"], "seed": 1}')
    arguments = {"twice": [three_runs[0], three_runs[0]]}.get(case, [str(run)] if case in
                 ("missing", "no metrics", "header only", "not csv", "no config", "config of another form")
                 else [three_runs[0]])
    output_flag = {"not png": str(tmp_path / "curves.svg"), "no such folder for the output": str(tmp_path / "no" / "c.png")}.get(case, str(output))
    command = ["--plot", *arguments, "--plot-output", output_flag] + {"training flag": ["--env", "Pendulum"],
                                                                      "evaluation flag": ["--episodes", "3"]}.get(case, [])
    if case == "output without plot":
        command = ["--plot-output", output_flag, "--run-dir", str(tmp_path / "new")]
    assert ppo.main(command) == 2
    one_error_line(capsys, message)
    assert output.read_bytes() == b"a user's own file" and sorted(os.listdir(tmp_path)) in (["mine.png"], ["mine.png", "run"])


# --eval --record -------------------------------------------------------------------------

def test_record_writes_the_evaluated_episodes_as_a_gif(tmp_path, capsys):
    checkpoint = ppo.ppo(cartpole(tmp_path / "run"))["checkpoint"]
    capsys.readouterr()
    gif = tmp_path / "agent.gif"
    assert ppo.main(["--eval", checkpoint, "--episodes", "2", "--max-episode-steps", "40", "--record", str(gif)]) == 0
    recorded = capsys.readouterr().out.splitlines()
    assert recorded[1] == f"recorded to {gif}"
    steps = 2 * float(recorded[0].split(": ")[1].split(" +/- ")[0])  # CartPole's return is the episode's length
    size, durations = gif_frames(gif)
    duration = ppo.frame_milliseconds(50)  # CartPole renders at 50 frames per second
    assert size == (600, 400) and duration == 20 and sum(durations) == (2 + steps) * duration  # each start, and each step
    assert ppo.main(["--eval", checkpoint, "--episodes", "2", "--max-episode-steps", "40"]) == 0
    assert capsys.readouterr().out.splitlines() == recorded[:1]  # recording changes nothing of the evaluation


def test_the_screen_copy_plays_the_same_pong_game_frame_for_frame():
    """Stepped with the same actions (sticky ones too, which draw on the emulator's random
    numbers), the copy that shows the screen stays in the game the network sees: same frame
    numbers, rewards and endings, also across a reset, and its screen, made gray and small,
    is the observation's newest frame rather than the one before."""
    config = ppo.make_config("Pong", repeat_action_probability=0.25)
    envs, screens = ppo.make_environments(config, 1), ppo.make_screen_environment(config)
    rng = np.random.default_rng(0)
    nearer_now, nearer_before = [], []
    observation, info = envs.reset(seed=11)
    screen, screen_info = screens.reset(seed=11)
    for step in range(300):
        if step == 150:
            (observation, info), (screen, screen_info) = envs.reset(), screens.reset()
        else:
            actions = rng.integers(0, envs.single_action_space.n, size=1)
            observation, reward, terminated, truncated, info = envs.step(actions)
            screen, screen_reward, screen_terminated, screen_truncated, screen_info = screens.step(actions)
            assert (reward, terminated, truncated) == (screen_reward, screen_terminated, screen_truncated)
        assert info["episode_frame_number"] == screen_info["episode_frame_number"]
        assert screen.shape == (1, 1, 210, 160, 3)
        small = np.asarray(Image.fromarray(screen[0, 0]).convert("L").resize((84, 84), Image.Resampling.BOX), dtype=float)
        nearer_now.append(np.abs(small - observation[0, 2]).mean())
        nearer_before.append(np.abs(small - observation[0, 1]).mean())
    envs.close()
    screens.close()
    assert np.mean(nearer_now) < np.mean(nearer_before)  # measured: 0.65 against 1.22 gray levels


@pytest.mark.long
def test_a_recorded_pong_episode_returns_what_eval_reports(tmp_path, capsys):
    checkpoint = tiny_pong(tmp_path / "run")
    capsys.readouterr()
    episodes = ["--episodes", "2", "--max-episode-steps", "100"]
    assert ppo.main(["--eval", checkpoint, *episodes]) == 0
    evaluated = capsys.readouterr().out.splitlines()
    gif = tmp_path / "pong.gif"
    assert ppo.main(["--eval", checkpoint, *episodes, "--record", str(gif)]) == 0
    recorded = capsys.readouterr().out.splitlines()
    assert recorded == [evaluated[0], f"recorded to {gif}"]
    assert evaluated[0] != "return over 2 episodes: 0.00 +/- 0.00"  # points were scored, so the equality says something
    size, durations = gif_frames(gif)
    assert size == (864, 420)  # the screen beside the network's six images, twice as large
    assert sum(durations) == (1 + 100 + 1 + 100) * ppo.frame_milliseconds(15)  # Pong: 60 frames/s, 4 per step


def test_the_agent_view_shows_the_frames_and_frame_pre_stacking():
    frames = np.zeros((3, 84, 84), dtype=np.uint8)
    frames[0, 40, 10], frames[1, 40, 11], frames[2, 40, 13] = 200, 200, 200  # a ball speeding up to the right
    screen = np.full((210, 160, 3), 90, dtype=np.uint8)
    view = ppo.atari_picture(screen, frames)
    assert view.shape == (420, 864, 3) and (view[:420, :320] == 90).all()
    images = ppo.FramePreStacking()(ppo.torch.as_tensor(frames)[None])[0].numpy()
    assert images[1, 40, 13] > 0 and images[1, 40, 11] < 0  # velocity: where the ball is, and was
    assert (ppo.signed_image(images[1])[40, 13] == ppo.POSITIVE_COLOR).all()
    assert (ppo.signed_image(images[1])[40, 11] == ppo.NEGATIVE_COLOR).all()
    assert (ppo.signed_image(np.zeros((2, 2))) == 0).all()


@pytest.mark.long
def test_watch_shows_pong_in_a_window_where_a_display_exists(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pygame")
    checkpoint = tiny_pong(tmp_path / "run")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a window that SDL draws in memory
    shown = []
    real_show = ppo.Window.show
    monkeypatch.setattr(ppo.Window, "show", lambda self, picture: (shown.append(picture.shape), real_show(self, picture)))
    monkeypatch.setattr(ppo, "ATARI_FRAMES_PER_SECOND", 6000)  # no need to watch at the game's speed here
    capsys.readouterr()
    assert ppo.main(["--watch", checkpoint, "--episodes", "1", "--max-episode-steps", "20"]) == 0
    assert shown == [(420, 864, 3)] * 21


def test_watch_says_why_where_there_is_no_display(tmp_path, capsys, monkeypatch):
    checkpoint = tiny_pong(tmp_path / "run")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(ppo.sys, "platform", "linux")
    capsys.readouterr()
    assert ppo.main(["--watch", checkpoint]) == 2
    one_error_line(capsys, "--watch needs a display, and none is set")


@pytest.mark.parametrize("flags, message", [
    (["--record", "agent.png"], "ppo.py records GIF animations; name the file <name>.gif"),
    (["--record", "mine.gif"], "exists, and a recording never replaces a file"),
    (["--record", "no/such/folder/agent.gif"], "does not exist; create it or choose another path"),
    (["--max-episode-steps", "0"], "--max-episode-steps must be a positive integer"),
    (["--env", "Pendulum", "--seed", "7", "--device", "cpu"], "--eval and --watch play with the settings the checkpoint "
     "was trained with, which --env, --seed would not change; beside them give only --device, --episodes, --record or "
     "--max-episode-steps"),
])
def test_bad_record_input_is_one_line_and_exit_2_and_overwrites_nothing(tmp_path, capsys, monkeypatch, flags, message):
    checkpoint = ppo.ppo(cartpole(tmp_path / "run"))["checkpoint"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.gif").write_bytes(b"a user's own file")
    capsys.readouterr()
    assert ppo.main(["--eval", checkpoint, *flags]) == 2
    one_error_line(capsys, message)
    assert (tmp_path / "mine.gif").read_bytes() == b"a user's own file" and sorted(os.listdir(tmp_path)) == ["mine.gif", "run"]


@pytest.mark.parametrize("flags", [["--record", "agent.gif"], ["--episodes", "3"], ["--max-episode-steps", "5"]])
def test_record_without_eval_is_one_line(tmp_path, capsys, flags):
    assert ppo.main([*flags, "--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "--episodes, --record and --max-episode-steps go with --eval or --watch CHECKPOINT")
    assert not (tmp_path / "run").exists()


def test_an_environment_that_cannot_draw_is_one_line(tmp_path, capsys, monkeypatch):
    checkpoint = ppo.ppo(cartpole(tmp_path / "run"))["checkpoint"]
    def pygame_missing(self):
        raise gym.error.DependencyNotInstalled('pygame is not installed, run `pip install "gymnasium[classic-control]"`')
    monkeypatch.setattr(gym.vector.SyncVectorEnv, "render", pygame_missing)
    capsys.readouterr()
    assert ppo.main(["--eval", checkpoint, "--record", str(tmp_path / "agent.gif")]) == 2
    one_error_line(capsys, "pip install -r requirements.txt")
    assert not (tmp_path / "agent.gif").exists()
