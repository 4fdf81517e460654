"""The measured curves kept in tests/results agree with themselves and with the docs that
quote them, and the tables of README.md and docs/results.md are what tests/results_table.py
writes from the result files."""
import csv
import glob
import importlib.util
import os
import re
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# One file per run of Pong that beat the built-in AI (the preset, and the learning rate it
# replaced), one row per finished game (the bench recorder).
PONG_CURVES = sorted(os.path.basename(path) for path in glob.glob(os.path.join(HERE, "results", "pong-*-seed*.csv")))


@pytest.mark.parametrize("name", PONG_CURVES)
def test_pong_curve_is_well_formed_and_its_first_win_is_in_the_docs(name):
    with open(os.path.join(HERE, "results", name)) as file:
        rows = [(int(r["env_steps"]), float(r["wall_seconds"]), float(r["mean_score_last_20"])) for r in csv.DictReader(line for line in file if not line.startswith("#"))]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(rows, rows[1:]))
    assert all(-21 <= score <= 21 for _, _, score in rows)
    steps, seconds, _ = next(row for row in rows if row[2] > 0)  # first beats the built-in AI
    docs = "".join(open(path).read() for path in [os.path.join(HERE, "..", "README.md"),
                                                  *sorted(glob.glob(os.path.join(HERE, "..", "docs", "*.md")))])
    assert f"{steps:,}" in docs and f"{seconds:.1f} s" in docs


def results_table():
    specification = importlib.util.spec_from_file_location("results_table", os.path.join(HERE, "results_table.py"))
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def test_the_results_tables_are_those_the_result_files_give(monkeypatch, capsys):
    module = results_table()
    monkeypatch.setattr("sys.argv", ["results_table.py", "--check"])
    assert module.main() == 0, capsys.readouterr().err


def test_a_figure_edited_by_hand_is_named_by_the_check(tmp_path, monkeypatch, capsys):
    module = results_table()
    (tmp_path / "docs").mkdir()
    for name in ("README.md", os.path.join("docs", "results.md")):
        shutil.copy(os.path.join(module.ROOT, name), tmp_path / name)
    readme = (tmp_path / "README.md").read_text()
    start = readme.index("<!-- results_table.py: results -->")
    row = next(line for line in readme[start:].splitlines() if line.startswith("| CartPole-v1 (`python ppo.py`)"))
    edited = row.replace("median", "median 1", 1)
    (tmp_path / "README.md").write_text(readme.replace(row, edited))
    monkeypatch.setattr(module, "ROOT", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["results_table.py", "--check"])
    assert module.main() == 1
    error = capsys.readouterr().err
    assert error.startswith("error: README.md differs from its results files at line") and "median 1" in error, error


def test_the_readmes_benchmark_command_writes_the_files_the_table_reads():
    """The README gives the command that made the CartPole rows; run again, it must write
    the files results_table.py reads (benchmark.py puts --label in the file names)."""
    module = results_table()
    with open(os.path.join(module.ROOT, "README.md")) as file:
        readme = " ".join(file.read().split())
    command = re.search(r"python tests/benchmark\.py --env CartPole --seeds ([\d,-]+) --peer sb3 --peer-steps \d+ --label ([\w.-]+)", readme)
    assert command, "README.md gives no tests/benchmark.py command with --label for the CartPole rows"
    seeds, label = command[1].replace(",", "-"), command[2]
    for name in (module.CARTPOLE_PPO, module.CARTPOLE_SB3):
        assert f"-CartPole-seeds{seeds}-{label}-" in name, (name, seeds, label)
