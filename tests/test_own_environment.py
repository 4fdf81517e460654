"""A user's own environment from the command line: `--env module:EnvId`, the form
gymnasium.make takes, imports module (from the working directory too), which registers
EnvId; the saved config keeps the form, so --eval and --resume of the checkpoint import the
module again. A module that does not import, or registers no such id, is one line."""
import os
import re
import subprocess
import sys
import textwrap

import gymnasium as gym
import pytest

import ppo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def readme_example(env_id="Corridor-v0"):
    """The module docs/own-environment.md shows (corridor.py), registering env_id: what the docs say is what runs."""
    with open(os.path.join(ROOT, "docs", "own-environment.md"), encoding="utf-8") as file:
        example = re.search(r"```python\n(# corridor\.py.*?)```", file.read(), re.DOTALL).group(1)
    assert 'gym.register(id="Corridor-v0"' in example
    return example.replace('id="Corridor-v0"', f'id="{env_id}"')


@pytest.fixture
def module_in_working_directory(tmp_path, monkeypatch, request):
    """Writes <name>.py into an empty working directory; afterwards the path, the module
    and the ids it registered are as they were."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    known_ids, known_modules = set(gym.registry), set(sys.modules)

    def write(name, text):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        return tmp_path

    yield write
    for added in set(gym.registry) - known_ids:
        del gym.registry[added]
    for added in set(sys.modules) - known_modules:
        del sys.modules[added]


def test_a_module_beside_the_working_directory_registers_the_environment_it_trains(module_in_working_directory, tmp_path):
    module_in_working_directory("corridor_trains", readme_example("CorridorTrains-v0"))
    config = ppo.make_config("corridor_trains:CorridorTrains-v0", total_steps=1024, run_dir=str(tmp_path / "run"))
    assert config.env == "corridor_trains:CorridorTrains-v0"  # kept as given, for --eval and --resume to import it again
    metrics = ppo.ppo(config)
    assert metrics["status"] == "finished" and metrics["iteration"] == 2
    mean, _ = ppo.evaluate(metrics["checkpoint"], episodes=2)
    assert 0.0 <= mean <= 1.0
    with pytest.raises(ppo.UserError, match=r"corridor_trains:CorridorTrains-v0 draws no pictures \(its render_modes are \[\], "
                                            r"without 'rgb_array'\), so --record and --watch cannot show it; use --eval alone"):
        ppo.evaluate(metrics["checkpoint"], episodes=1, record=str(tmp_path / "corridor.gif"))
    default = ppo.make_default_run_dir(ppo.make_config("corridor_trains:CorridorTrains-v0"))
    assert os.path.basename(default).startswith("corridor_trains-CorridorTrains-v0-1-")  # no colon in a folder name


@pytest.mark.parametrize("module_text, env, message", [
    (None, "missing_module:Corridor-v0",
     "--env missing_module:Corridor-v0: the module missing_module does not import (ModuleNotFoundError: No module named "
     "'missing_module'); it must be importable from the working directory or PYTHONPATH"),
    ("raise RuntimeError('needs a licence server')\n", "failing_module:Corridor-v0",
     "--env failing_module:Corridor-v0: the module failing_module does not import (RuntimeError: needs a licence server)"),
    ("def broken(:\n", "broken_module:Corridor-v0", "the module broken_module does not import (SyntaxError: "),
    ("import sys\nsys.exit(3)\n", "exiting_module:Corridor-v0", "the module exiting_module does not import (SystemExit: 3)"),
    ("x = 1\n", "silent_module:Corridor-v0", "--env silent_module:Corridor-v0: importing silent_module registered no environment "
     "'Corridor-v0'; call gymnasium.register(id='Corridor-v0', entry_point=...) in silent_module"),
    (None, "a:b:Corridor-v0", "give a gymnasium id, or module:EnvId for an environment that module registers"),
])
def test_a_module_that_does_not_give_the_environment_is_one_line(module_in_working_directory, tmp_path, capsys, module_text,
                                                                 env, message):
    if module_text is not None:
        module_in_working_directory(env.split(":")[0], module_text)
    assert ppo.main(["--env", env, "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "run").exists()


def test_an_environment_that_fails_when_made_is_one_line(module_in_working_directory, tmp_path, capsys):
    """An exception in the environment's constructor."""
    module_in_working_directory("broken_constructor", readme_example("BrokenConstructor-v0")
                                .replace("self.render_mode = render_mode", "raise ValueError('no corridor today')"))
    assert ppo.main(["--env", "broken_constructor:BrokenConstructor-v0", "--run-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: broken_constructor:BrokenConstructor-v0 cannot be made here") and error.count("\n") == 1
    assert "no corridor today" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.long
def test_python_ppo_py_trains_a_module_of_the_working_directory_and_its_checkpoint_evaluates_and_resumes(tmp_path):
    """As docs/own-environment.md says it: corridor.py in the folder the commands run in, ppo.py elsewhere."""
    (tmp_path / "corridor.py").write_text(readme_example())
    ppo_py = os.path.join(ROOT, "ppo.py")
    def command(*arguments, cwd=tmp_path):
        return subprocess.run([sys.executable, ppo_py, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300)
    trained = command("--env", "corridor:Corridor-v0", "--total-steps", "4096", "--run-dir", "run")
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr
    assert "finished: checkpoint saved to run/checkpoint.pt" in trained.stdout
    assert '"env": "corridor:Corridor-v0"' in (tmp_path / "run" / "config.json").read_text()
    evaluated = command("--eval", "run/checkpoint.pt", "--episodes", "3")
    assert evaluated.returncode == 0 and evaluated.stdout.startswith("return over 3 episodes: "), evaluated.stderr
    resumed = command("--resume", "run/checkpoint.pt", "--total-steps", "6144", "--learning-rate", "1e-3")
    assert resumed.returncode == 0 and "finished: checkpoint saved to run/checkpoint.pt" in resumed.stdout, resumed.stderr
    elsewhere = command("--eval", str(tmp_path / "run" / "checkpoint.pt"), cwd=ROOT)  # corridor.py is not found from here
    assert elsewhere.returncode == 2 and elsewhere.stderr == (
        "error: --env corridor:Corridor-v0: the module corridor does not import (ModuleNotFoundError: No module named "
        "'corridor'); it must be importable from the working directory or PYTHONPATH\n"), elsewhere.stderr
