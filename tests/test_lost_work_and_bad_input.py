"""Nothing lost, nothing overwritten, one line for every bad input: each class of failure
(docs/guarantees.md) with its message, its exit status, and the files around it
hashed before and after."""
import errno
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cartpole(run_dir, **overrides):
    settings = dict(seed=5, run_dir=str(run_dir), total_steps=2048, target_return=None, save_every=1)  # 4 iterations of 512
    return ppo.make_config("CartPole", **{**settings, **overrides})


def hashes(folder):
    """Every file under a folder and the hash of its bytes."""
    return {os.path.relpath(os.path.join(here, name), folder): hashlib.sha256(open(os.path.join(here, name), "rb").read()).hexdigest()
            for here, _, names in os.walk(folder) for name in names}


def one_error_line(capsys, message):
    error = capsys.readouterr().err
    assert message in error and error.startswith("error: ") and error.count("\n") == 1, error


def iterations_in(metrics_csv):
    return [int(line.split(",")[0]) for line in open(metrics_csv).read().splitlines()[1:]]


# Work that is lost or written over ---------------------------------------------------------

def test_resume_into_another_runs_folder_is_refused(tmp_path, capsys):
    ppo.ppo(cartpole(tmp_path / "a", total_steps=1024))
    ppo.ppo(cartpole(tmp_path / "b", total_steps=1024, seed=6))
    before = hashes(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "a" / "checkpoint.pt"), "--run-dir", str(tmp_path / "b"), "--total-steps", "2048"]) == 2
    one_error_line(capsys, f"{tmp_path / 'b'} already holds a run")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("files", [["config.json"], ["metrics.csv"], ["notes.txt"]])
def test_a_new_run_writes_only_into_a_new_or_empty_folder(tmp_path, capsys, files):
    for name in files:
        (tmp_path / name).write_text("a user's file\n")
    before = hashes(tmp_path)
    assert ppo.main(["--run-dir", str(tmp_path)]) == 2
    one_error_line(capsys, "is not empty, and a run writes only into a new or empty folder")
    assert hashes(tmp_path) == before


def test_the_current_folder_is_refused_when_it_holds_files(tmp_path, capsys, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert ppo.main(["--run-dir", "."]) == 2
    one_error_line(capsys, "is not empty")
    assert os.listdir(tmp_path) == ["config.json"]


@pytest.mark.parametrize("flock", ["flock", "no fcntl"])
def test_an_empty_folder_is_taken_and_a_failed_start_removes_the_folder_it_made(tmp_path, capsys, monkeypatch, flock):
    if flock == "no fcntl":
        monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError, as on Windows: no run.lock
    (tmp_path / "empty").mkdir()
    assert ppo.ppo(cartpole(tmp_path / "empty", total_steps=1024))["status"] == "finished"
    checkpoint = torch.load(tmp_path / "empty" / "checkpoint.pt", weights_only=True)
    checkpoint["runner"]["episode_returns"] = torch.zeros(3)  # found damaged only once the run has its folder
    torch.save(checkpoint, tmp_path / "damaged.pt")
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "damaged.pt"), "--run-dir", str(tmp_path / "new"), "--total-steps", "2048"]) == 2
    one_error_line(capsys, "has a damaged 'runner' entry")
    assert not (tmp_path / "new").exists()


def test_a_checkpoint_that_is_not_its_folders_checkpoint_pt_needs_a_run_dir(tmp_path, capsys):
    ppo.ppo(cartpole(tmp_path / "p", total_steps=1024))
    ppo.ppo(cartpole(tmp_path / "q", total_steps=1024, seed=6))
    shutil.copy(tmp_path / "q" / "checkpoint.pt", tmp_path / "p" / "other.pt")
    before = hashes(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "p" / "other.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 2
    one_error_line(capsys, "is not a run folder's checkpoint.pt")
    assert ppo.main(["--resume", str(tmp_path / "p" / "other.pt"), "--total-steps", "2048", "--learning-rate", "1e-3",
                     "--run-dir", str(tmp_path / "p")]) == 2  # its own folder by name only: another run's
    one_error_line(capsys, "already holds a run")
    assert hashes(tmp_path) == before
    assert ppo.main(["--resume", str(tmp_path / "p" / "other.pt"), "--total-steps", "2048", "--learning-rate", "1e-3",
                     "--run-dir", str(tmp_path / "r")]) == 0
    assert iterations_in(tmp_path / "r" / "metrics.csv") == [3, 4]


# One run folder, one process ----------------------------------------------------------------

def test_a_folder_held_by_a_run_is_refused_in_one_line_naming_the_holder(tmp_path, capsys):
    """A run (here this process, holding the folder as a run does) keeps a fresh run and a
    resume out of its folder, with nothing written, each told which process holds it, also
    where the folder holds a checkpoint already; once it lets go, the resume goes on."""
    ppo.ppo(cartpole(tmp_path / "run", total_steps=1024))
    capsys.readouterr()
    hold = ppo.name_holder(ppo.hold_run_dir(str(tmp_path / "run")))
    before = hashes(tmp_path)
    try:
        assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 2
        one_error_line(capsys, f"{tmp_path / 'run'} is in use by process {os.getpid()} on ")
        assert ppo.main(["--run-dir", str(tmp_path / "run"), "--seed", "2"]) == 2
        one_error_line(capsys, f"{tmp_path / 'run'} is in use by process {os.getpid()} on ")  # not "continue it with --resume"
        assert hashes(tmp_path) == before
    finally:
        hold.close()
    assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 0


def test_an_empty_folder_held_by_a_starting_run_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    hold = ppo.name_holder(ppo.hold_run_dir(str(tmp_path / "run")))  # a run that holds the folder and has written nothing else yet
    try:
        assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 2
        one_error_line(capsys, f"{tmp_path / 'run'} is in use by process {os.getpid()}")
        assert os.listdir(tmp_path / "run") == ["run.lock"]
    finally:
        hold.close()
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 0  # the lock file of a run that wrote nothing


def test_a_checkpoint_is_read_once_for_the_settings_and_the_state(tmp_path, monkeypatch, trained_run):
    """main takes the config from the checkpoint and ppo() the state from the same read, so
    a checkpoint replaced in between cannot give one the other's settings."""
    shutil.copytree(trained_run, tmp_path / "run")
    reads = []
    real_load = torch.load
    def counted(file, *arguments, **keywords):
        reads.append(file)
        return real_load(file, *arguments, **keywords)
    monkeypatch.setattr(torch, "load", counted)
    assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 0
    assert len(reads) == 1, reads


def replaced_before_the_folder_is_claimed(monkeypatch, checkpoint_path, newer_path):
    """Another run of the checkpoint's folder saves (atomically, another file) between this
    resume's read of the checkpoint and its claim of a folder."""
    real_claim = ppo.claim_run_dir
    def claim_after_a_save(config, resume):
        shutil.copy(newer_path, f"{checkpoint_path}.tmp")
        os.replace(f"{checkpoint_path}.tmp", checkpoint_path)
        return real_claim(config, resume)
    monkeypatch.setattr(ppo, "claim_run_dir", claim_after_a_save)


def test_a_resume_into_a_new_folder_goes_on_from_what_it_read_while_its_run_saves_again(tmp_path, capsys, monkeypatch):
    ppo.ppo(cartpole(tmp_path / "run", total_steps=1024, anneal_lr=False))
    ppo.ppo(cartpole(tmp_path / "later", total_steps=2048, anneal_lr=False))  # what the source run saves meanwhile
    replaced_before_the_folder_is_claimed(monkeypatch, tmp_path / "run" / "checkpoint.pt", tmp_path / "later" / "checkpoint.pt")
    assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--run-dir", str(tmp_path / "new"),
                     "--total-steps", "2048"]) == 0
    assert iterations_in(tmp_path / "new" / "metrics.csv") == [3, 4]  # from the checkpoint it read, of 2 iterations


def test_a_resume_of_its_own_folder_whose_checkpoint_was_replaced_meanwhile_is_refused(tmp_path, capsys, monkeypatch):
    """Going on would save a state older than the one now there over it."""
    ppo.ppo(cartpole(tmp_path / "run", total_steps=1024, anneal_lr=False))
    ppo.ppo(cartpole(tmp_path / "later", total_steps=2048, anneal_lr=False))
    replaced_before_the_folder_is_claimed(monkeypatch, tmp_path / "run" / "checkpoint.pt", tmp_path / "later" / "checkpoint.pt")
    before = hashes(tmp_path / "later")["checkpoint.pt"]
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-steps", "4096"]) == 2
    one_error_line(capsys, f"{tmp_path / 'run' / 'checkpoint.pt'} was replaced while this run started, by another run of its "
                           "folder that has ended since; run the command again to resume from the new one")
    assert hashes(tmp_path / "run")["checkpoint.pt"] == before


def ppo_process(*arguments):
    return subprocess.Popen([sys.executable, "ppo.py", *arguments], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def one_trains_and_one_is_refused(processes, run_dir):
    """Of two runs aimed at one folder, one trains and says where it saved; the other stops
    with one line before it trains and says nothing was saved."""
    outputs = [process.communicate(timeout=300) for process in processes]
    codes = [process.returncode for process in processes]
    assert sorted(codes) == [0, 2], outputs
    winner = codes.index(0)
    (winner_out, _), (loser_out, loser_err) = outputs[winner], outputs[1 - winner]
    assert f"checkpoint saved to {run_dir / 'checkpoint.pt'}" in winner_out
    assert "saved" not in loser_out and "iter" not in loser_out, loser_out
    assert loser_err.startswith("error: ") and loser_err.count("\n") == 1 and str(run_dir) in loser_err, loser_err
    return winner


@pytest.mark.long
def test_two_fresh_runs_started_at_once_with_one_run_dir_leave_one_run_and_one_refusal(tmp_path):
    run_dir = tmp_path / "run"
    processes = [ppo_process("--run-dir", str(run_dir), "--seed", str(seed), "--total-steps", "20480", "--target-return", "none")
                 for seed in (1, 2)]
    winner = one_trains_and_one_is_refused(processes, run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["seed"] == (1, 2)[winner] and checkpoint["iteration"] == 40  # the run that trained is what is there
    assert len(iterations_in(run_dir / "metrics.csv")) == 40


@pytest.mark.long
def test_two_resumes_of_one_checkpoint_started_at_once_leave_one_run_and_one_refusal(tmp_path):
    run_dir = tmp_path / "run"
    ppo.ppo(cartpole(run_dir, total_steps=2048, save_every=50))
    resume = ["--resume", str(run_dir / "checkpoint.pt"), "--total-steps", "40960", "--learning-rate", "1e-3"]
    one_trains_and_one_is_refused([ppo_process(*resume), ppo_process(*resume)], run_dir)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 80
    assert iterations_in(run_dir / "metrics.csv") == list(range(1, 81))


def refusal_naming(run_dir, process):
    return f"error: {run_dir} is in use by process {process.pid} on {platform.node()}; wait for that run to end, or choose another --run-dir\n"


def stop_and_check_it_saved(process, run_dir):
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert f"interrupted: checkpoint saved to {run_dir / 'checkpoint.pt'}" in stdout


@pytest.mark.long
def test_three_runs_at_once_on_one_folder_leave_one_run_and_every_other_start_is_refused_naming_it(tmp_path):
    """Three fresh runs started at once: exactly one trains, the other two are told which
    process holds the folder. A fourth, started once the run has saved a checkpoint, is
    told the same (not to continue the run with --resume, which the lock would refuse)."""
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--total-steps", "100000000", "--target-return", "none", "--save-every", "1"]
    processes = [ppo_process(*common, "--seed", str(seed)) for seed in (1, 2, 3)]
    deadline = time.time() + 180
    while time.time() < deadline and not (run_dir / "checkpoint.pt").exists():
        time.sleep(0.05)
    holder = (run_dir / "run.lock").read_text()
    winner = next(process for process in processes if holder == f"process {process.pid} on {platform.node()}\n")
    wait_for_rows(winner, run_dir / "metrics.csv", 2)
    for process in processes:
        if process is not winner:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 2 and stdout == "" and stderr == refusal_naming(run_dir, winner), stderr
    later = subprocess.run([sys.executable, "ppo.py", *common, "--seed", "4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert later.returncode == 2 and later.stderr == refusal_naming(run_dir, winner), later.stderr
    stop_and_check_it_saved(winner, run_dir)
    seed = (1, 2, 3)[processes.index(winner)]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["config"]["seed"] == seed


@pytest.mark.long
def test_a_checkpoint_resumes_into_a_new_folder_while_its_run_trains_and_saves(tmp_path):
    """Its run replaces the checkpoint every iteration; the resume reads one whole
    checkpoint and goes on from it in its own folder."""
    source = tmp_path / "run"
    training = ppo_process("--run-dir", str(source), "--total-steps", "100000000", "--target-return", "none", "--save-every", "1")
    wait_for_rows(training, source / "metrics.csv", 2)
    # It trains until the mean return of its last 10 episodes reaches 0: after its first iteration.
    resumed = subprocess.run([sys.executable, "ppo.py", "--resume", str(source / "checkpoint.pt"), "--run-dir", str(tmp_path / "new"),
                              "--target-return", "0", "--return-window", "10"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"solved: checkpoint saved to {tmp_path / 'new' / 'checkpoint.pt'}" in resumed.stdout
    first, *_ = iterations_in(tmp_path / "new" / "metrics.csv")
    assert first >= 3 and torch.load(tmp_path / "new" / "checkpoint.pt", weights_only=True)["iteration"] == first
    assert training.poll() is None
    stop_and_check_it_saved(training, source)


def wait_for_rows(process, metrics_csv, rows):
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) > rows:
            return
        time.sleep(0.05)
    raise AssertionError(process.communicate()[1][-2000:])


@pytest.mark.long
def test_a_run_killed_with_sigkill_resumes_at_once_and_a_checkpoint_evaluates_during_training(tmp_path):
    """The kernel releases the lock of a killed process: no stale lock to clean up. While a
    run trains, --eval reads its last checkpoint (written atomically)."""
    run_dir = tmp_path / "run"
    training = ppo_process("--run-dir", str(run_dir), "--total-steps", "10000000", "--target-return", "none", "--save-every", "1")
    wait_for_rows(training, run_dir / "metrics.csv", 3)
    evaluation = subprocess.run([sys.executable, "ppo.py", "--eval", str(run_dir / "checkpoint.pt"), "--episodes", "2"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert evaluation.returncode == 0 and "return over 2 episodes" in evaluation.stdout, evaluation.stderr
    assert training.poll() is None
    training.send_signal(signal.SIGKILL)
    training.wait()
    done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]  # however far it got: one more
    resumed = subprocess.run([sys.executable, "ppo.py", "--resume", str(run_dir / "checkpoint.pt"),
                              "--total-steps", str((done + 1) * 512)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoint saved to {run_dir / 'checkpoint.pt'}" in resumed.stdout
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == done + 1


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ppo.make_config("CartPole")
    first, second = ppo.make_default_run_dir(config), ppo.make_default_run_dir(config)
    assert first != second and os.path.isdir(first) and os.path.isdir(second)


@pytest.mark.long
def test_a_closed_output_does_not_stop_a_run_from_saving(tmp_path):
    """`python ppo.py | head -c 300`: stdout closes early; the run still ends with a checkpoint."""
    command = f"{sys.executable} ppo.py --run-dir {tmp_path / 'run'} --total-steps 8192 --target-return none | head -c 300"
    finished = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in finished.stderr and "error" not in finished.stderr, finished.stderr
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 16


def test_metrics_stay_one_row_per_iteration_after_resuming_an_older_checkpoint(tmp_path):
    ppo.ppo(cartpole(tmp_path / "run", total_steps=1024, anneal_lr=False))
    shutil.copy(tmp_path / "run" / "checkpoint.pt", tmp_path / "after-2.pt")
    ppo.ppo(cartpole(tmp_path / "run", anneal_lr=False), resume=str(tmp_path / "run" / "checkpoint.pt"))
    rows_of_first_resume = open(tmp_path / "run" / "metrics.csv").read().splitlines()
    assert iterations_in(tmp_path / "run" / "metrics.csv") == [1, 2, 3, 4]
    shutil.copy(tmp_path / "after-2.pt", tmp_path / "run" / "checkpoint.pt")  # back to iteration 2
    ppo.ppo(cartpole(tmp_path / "run", anneal_lr=False), resume=str(tmp_path / "run" / "checkpoint.pt"))
    assert iterations_in(tmp_path / "run" / "metrics.csv") == [1, 2, 3, 4]
    rows = open(tmp_path / "run" / "metrics.csv").read().splitlines()
    timings = {ppo.METRIC_COLUMNS.index("wall_seconds"), ppo.METRIC_COLUMNS.index("steps_per_second")}
    def without_timings(row):
        return [value for index, value in enumerate(row.split(",")) if index not in timings]
    assert [without_timings(row) for row in rows] == [without_timings(row) for row in rows_of_first_resume]


# Failures that end in one line, not a traceback ---------------------------------------------

@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("failing_call", ["write", "replace"])
def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch,
                                                                                         failing_call, error_number):
    """The disk fills (or the quota ends) while the checkpoint's bytes are written, or when
    the temporary file is renamed over the last checkpoint."""
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    before = hashes(tmp_path)
    full = OSError(error_number, os.strerror(error_number))
    real_open, real_replace = open, os.replace

    class FillingFile:
        def __init__(self, file):
            self.file = file
        def __enter__(self):
            return self
        def __exit__(self, *exception):
            self.file.close()
        def write(self, data):
            self.file.write(data[:len(data) // 2])  # a partial file, as a full disk leaves it
            raise full

    def open_on_a_filling_disk(path, mode="r", *arguments, **keywords):
        file = real_open(path, mode, *arguments, **keywords)
        return FillingFile(file) if str(path).startswith(str(tmp_path / "checkpoint.pt")) and "w" in mode else file
    def replace_on_a_full_disk(source, destination):
        if str(destination) == str(tmp_path / "checkpoint.pt"):
            raise full
        real_replace(source, destination)
    if failing_call == "write":
        monkeypatch.setattr("builtins.open", open_on_a_filling_disk)
    else:
        monkeypatch.setattr(os, "replace", replace_on_a_full_disk)
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 1
    one_error_line(capsys, f"cannot write {tmp_path} ({os.strerror(error_number)}); the last checkpoint, "
                           f"{tmp_path / 'checkpoint.pt'}, is intact; free some space or choose another --run-dir")
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert hashes(tmp_path)["checkpoint.pt"] == before["checkpoint.pt"]


def test_the_zip_writer_of_torch_save_never_writes_to_the_disk(tmp_path, monkeypatch):
    """torch.save reports a full disk under its zip writer as a RuntimeError that names no
    cause ("[enforce fail at inline_container.cc:672] . unexpected pos 65728 vs 65616"), so
    ppo.py hands it memory, and Python's write reports the disk's OSError."""
    real_save = torch.save
    def zip_writer_on_a_full_disk(state, file, *arguments, **keywords):
        if isinstance(file, (str, os.PathLike)):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 65728 vs 65616")
        real_save(state, file, *arguments, **keywords)
    monkeypatch.setattr(torch, "save", zip_writer_on_a_full_disk)
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 2


def mounted_tmpfs(folder, size):
    """Mount a tmpfs of `size` at folder, where this process may (root on Linux); else skip."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root on Linux")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.mark.long
def test_a_run_folder_on_a_read_only_mount_is_one_line_naming_it(tmp_path):
    """As a user meets it (a read-only mount: EROFS, also for root): a resume of the run
    there, and a fresh run aimed at a new folder there."""
    disk = tmp_path / "disk"
    mounted_tmpfs(disk, "2m")
    try:
        ppo.ppo(cartpole(disk / "run", total_steps=1024))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = hashes(disk)
        checkpoint = disk / "run" / "checkpoint.pt"
        resumed = subprocess.run([sys.executable, "ppo.py", "--resume", str(checkpoint), "--total-steps", "2048"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 2 and resumed.stderr == (
            f"error: {disk / 'run'} is on a read-only file system, so a run cannot write there; resume it into a new "
            f"folder with --resume {checkpoint} --run-dir NEW_FOLDER\n"), resumed.stderr
        fresh = subprocess.run([sys.executable, "ppo.py", "--run-dir", str(disk / "new")], cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
        assert fresh.returncode == 2 and fresh.stderr == (f"error: {disk / 'new'} is on a read-only file system, so a run "
                                                          "cannot write there; choose another --run-dir\n"), fresh.stderr
        assert hashes(disk) == before
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.long
def test_a_folder_that_may_not_be_written_and_a_dangling_link_are_one_line_from_the_command_line(tmp_path):
    """A folder made immutable (chattr +i: EPERM, also for root, who ignores permission
    bits), and a --run-dir that is a link to nowhere."""
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    dangling = subprocess.run([sys.executable, "ppo.py", "--run-dir", str(tmp_path / "link")], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert dangling.returncode == 2 and dangling.stderr == (
        f"error: --run-dir {tmp_path / 'link'} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist; "
        "make that folder, or choose another --run-dir\n"), dangling.stderr
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "locked").mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(tmp_path / "locked")]).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        refused = subprocess.run([sys.executable, "ppo.py", "--run-dir", str(tmp_path / "locked")], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "locked")], check=True)
    assert refused.returncode == 2 and refused.stderr == (f"error: {tmp_path / 'locked'} is not writable for this user "
                                                          "(Operation not permitted); choose another --run-dir\n"), refused.stderr
    assert os.listdir(tmp_path / "locked") == []


@pytest.mark.long
def test_a_disk_that_fills_during_a_checkpoint_write_ends_in_one_line(tmp_path):
    """As a user meets it: the run folder on a 220 KB tmpfs fills while the second
    checkpoint (about 135 KB) is written."""
    disk = tmp_path / "tiny"
    mounted_tmpfs(disk, "220k")
    try:
        run = subprocess.run([sys.executable, "ppo.py", "--env", "CartPole", "--total-steps", "8192", "--save-every", "1",
                              "--run-dir", str(disk / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, run.stderr
        assert run.stderr == (f"error: cannot write {disk / 'run'} (No space left on device); the last checkpoint, "
                              f"{disk / 'run' / 'checkpoint.pt'}, is intact; free some space or choose another --run-dir\n")
        assert not [name for name in os.listdir(disk / "run") if name.endswith(".tmp")]
        assert torch.load(disk / "run" / "checkpoint.pt", weights_only=True)["iteration"] >= 1
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def refusing_writes(monkeypatch, folder, error_number, only=None):
    """Every file opened for writing under folder (or only the one named `only`) fails with
    error_number, as on a read-only mount (EROFS), in a folder this user may not write
    (EACCES; EPERM, as for root in a folder made immutable) or on a full disk (ENOSPC).
    Simulated in this process: the tests run as root, which writes whatever the permission
    bits say; tests/test_lost_work_and_bad_input.py's long tests meet the real ones."""
    real_open = open
    def refusing(path, mode="r", *arguments, **keywords):
        if (str(path).startswith(str(folder)) and any(flag in mode for flag in "wa")
                and (only is None or os.path.basename(str(path)) == only)):
            raise OSError(error_number, os.strerror(error_number), str(path))
        return real_open(path, mode, *arguments, **keywords)
    monkeypatch.setattr("builtins.open", refusing)


FOLDERS_OWN_PROBLEMS = [(errno.EROFS, "is on a read-only file system, so a run cannot write there"),
                        (errno.EACCES, "is not writable for this user (Permission denied)"),
                        (errno.EPERM, "is not writable for this user (Operation not permitted)")]


@pytest.mark.parametrize("flock", ["flock", "no fcntl"])
@pytest.mark.parametrize("error_number, message", FOLDERS_OWN_PROBLEMS)
def test_a_folder_that_cannot_be_written_is_the_folders_problem_in_one_line(tmp_path, capsys, monkeypatch, flock,
                                                                             error_number, message):
    """The line names the folder and the fix, with exit status 2 (an input the user can
    fix), whether run.lock or, where there is no flock, config.json is the first write; and
    the folder the run made is removed again (also where no run.lock was made)."""
    refusing_writes(monkeypatch, tmp_path, error_number)
    if flock == "no fcntl":
        monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError, as on Windows
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {tmp_path / 'run'} {message}; choose another --run-dir\n", error
    assert not (tmp_path / "run").exists()


def test_a_resume_whose_folder_cannot_be_written_is_told_to_resume_into_another(tmp_path, capsys, monkeypatch, trained_run):
    shutil.copytree(trained_run, tmp_path / "run")
    before = hashes(tmp_path)
    refusing_writes(monkeypatch, tmp_path, errno.EROFS)
    assert ppo.main(["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-steps", "2048"]) == 2
    one_error_line(capsys, f"{tmp_path / 'run'} is on a read-only file system, so a run cannot write there; resume it "
                           f"into a new folder with --resume {tmp_path / 'run' / 'checkpoint.pt'} --run-dir NEW_FOLDER")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("flock", ["flock", "no fcntl"])
def test_a_full_disk_at_the_start_is_exit_1_and_removes_the_new_folder(tmp_path, capsys, monkeypatch, flock):
    """A full disk is the machine's problem, not the input's: exit status 1, as during a run."""
    refusing_writes(monkeypatch, tmp_path, errno.ENOSPC)
    if flock == "no fcntl":
        monkeypatch.setitem(sys.modules, "fcntl", None)
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 1
    first_file = "run.lock" if flock == "flock" else f"metrics.csv.{os.getpid()}.tmp"
    one_error_line(capsys, f"cannot write {tmp_path / 'run' / first_file} (No space left on device); no checkpoint had been "
                           "written yet; free some space or choose another --run-dir")
    assert not (tmp_path / "run").exists()


class FillsWhenWritten:
    """A file whose writes fail as on a disk that has just filled; everything else is the file's."""

    def __init__(self, file):
        self.file = file

    def __getattr__(self, name):
        return getattr(self.file, name)

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_disk_that_fills_as_the_holder_is_named_ends_in_one_line_and_removes_the_new_folder(tmp_path, capsys, monkeypatch):
    real_open = open
    def lock_file_on_a_full_disk(path, mode="r", *arguments, **keywords):
        file = real_open(path, mode, *arguments, **keywords)
        return FillsWhenWritten(file) if os.path.basename(str(path)) == "run.lock" else file
    monkeypatch.setattr("builtins.open", lock_file_on_a_full_disk)
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 1
    one_error_line(capsys, f"cannot write {tmp_path / 'run'} (No space left on device); no checkpoint had been written yet; "
                           "free some space or choose another --run-dir")
    assert not (tmp_path / "run").exists()


def test_a_dangling_link_given_as_the_run_dir_is_one_line(tmp_path, capsys):
    os.symlink(tmp_path / "elsewhere" / "run", tmp_path / "link")
    assert ppo.main(["--run-dir", str(tmp_path / "link"), "--total-steps", "1024"]) == 2
    one_error_line(capsys, f"--run-dir {tmp_path / 'link'} is a symbolic link to {tmp_path / 'elsewhere' / 'run'}, which does "
                           "not exist; make that folder, or choose another --run-dir")
    assert sorted(os.listdir(tmp_path)) == ["link"]


def test_a_path_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a user's file\n")
    assert ppo.main(["--run-dir", str(tmp_path / "notes.txt" / "run"), "--total-steps", "1024"]) == 2
    one_error_line(capsys, f"{tmp_path / 'notes.txt' / 'run'} is not a folder (it, or a folder on its path, is a file)")


@pytest.mark.parametrize("kind", ["a user's file", "a link to a user's file", "a folder"])
def test_a_run_lock_that_is_not_a_runs_lock_file_is_refused_and_kept(tmp_path, capsys, kind):
    """In an otherwise empty folder, a run.lock of a user's is neither truncated nor followed."""
    (tmp_path / "run").mkdir()
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    if kind == "a user's file":
        (tmp_path / "run" / "run.lock").write_text("a user's notes\n")
    elif kind == "a link to a user's file":
        os.symlink(tmp_path / "notes.txt", tmp_path / "run" / "run.lock")
    else:
        (tmp_path / "run" / "run.lock").mkdir()
    before = hashes(tmp_path)
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "1024"]) == 2
    described = {"a user's file": "a file of other contents", "a link to a user's file": "a symbolic link", "a folder": "a folder"}
    one_error_line(capsys, f"{tmp_path / 'run' / 'run.lock'} is {described[kind]}, not the lock file of a ppo.py run, "
                           "and it is kept")
    assert hashes(tmp_path) == before and os.path.islink(tmp_path / "run" / "run.lock") == (kind == "a link to a user's file")


def test_a_lock_file_removed_while_it_was_being_locked_is_not_held(tmp_path, monkeypatch):
    """A start that fails removes its new folder's run.lock while it still holds it; a
    process that opened that file before, and locks it once it is free, holds a file that
    is no longer the folder's. It sees so and locks the one at the path."""
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "run.lock"
    real_lock = ppo.lock_or_holder
    removed = []
    def removed_before_the_lock_is_taken(hold, *arguments, **keywords):
        if not removed:
            os.remove(path)  # as the failed start does; then another start makes run.lock anew
            path.write_text("")
            removed.append(True)
        return real_lock(hold, *arguments, **keywords)
    monkeypatch.setattr(ppo, "lock_or_holder", removed_before_the_lock_is_taken)
    hold = ppo.name_holder(ppo.hold_run_dir(str(tmp_path / "run")))
    try:
        assert os.fstat(hold.fileno()).st_ino == os.stat(path).st_ino
        assert path.read_text() == f"process {os.getpid()} on {ppo.platform.node()}\n"
    finally:
        hold.close()


@pytest.mark.parametrize("run_dir, message", [("/proc/self", "is not empty"), ("/dev/null", "is a file, not a folder")])
def test_folders_that_are_not_a_run_folder_are_refused(capsys, run_dir, message):
    assert ppo.main(["--run-dir", run_dir]) == 2
    one_error_line(capsys, message)


def test_probabilities_that_overflow_stop_as_a_divergence(tmp_path, logits_that_overflow_after_the_first_update):
    with pytest.raises(ppo.TrainingDiverged, match="iteration 2: the policy's probabilities became NaN or infinite"):
        ppo.ppo(cartpole(tmp_path))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short run's folder, copied by each test that damages its checkpoint."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    ppo.ppo(cartpole(folder, total_steps=1024))
    return folder


def checkpoint_with(tmp_path, trained_run, change):
    shutil.copytree(trained_run, tmp_path, dirs_exist_ok=True)
    path = str(tmp_path / "checkpoint.pt")
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def set_nan_weight(checkpoint):
    checkpoint["model"]["critic.value_net.0.weight"][0, 0] = float("nan")


def wrong_moment_shape(checkpoint):
    checkpoint["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)


MALFORMED = [
    (set_nan_weight, "holds NaN or infinite weights"),
    (lambda c: c.pop("model"), "has no valid 'model' entry"),
    (lambda c: c.pop("optimizer"), "has no valid 'optimizer' entry"),
    (lambda c: c.pop("runner"), "has no valid 'runner' entry"),
    (lambda c: c.pop("rng"), "has no valid 'rng' entry"),
    (lambda c: c["runner"].pop("autoreset"), "has a damaged 'runner' entry"),
    (lambda c: c.update(iteration="2"), "has no valid 'iteration' entry"),
    (lambda c: c["config"].update(activation="gelu"), "holds an invalid config: --activation must be one of tanh, relu"),
    (lambda c: c["config"].update(hidden_sizes="64"), "holds an invalid config: --hidden-sizes must be a list of integers"),
    (lambda c: c["config"].update(env=5), "holds an invalid config: --env must be a string"),
    (wrong_moment_shape, "has a damaged 'optimizer' entry"),
    (lambda c: c.update(schedule_start={}), "has a damaged 'schedule_start' or 'kl_coef' entry"),
    (lambda c: c.update(config="abc"), "holds a config this ppo.py does not know"),
    (lambda c: c["runner"].update(recent_returns=["a"]), "has a damaged 'runner' entry"),
    (lambda c: c["runner"]["environment"]["arrays"].update(state=torch.zeros(2, 2)), "has a damaged 'runner' entry"),
    (lambda c: c["rng"].update(torch=torch.zeros(3)), "has a damaged 'rng' entry"),
    (lambda c: c.update(format=4), "is a checkpoint of format 4, written by a newer ppo.py; this one reads formats 2 and 3: "
                                   "use the ppo.py that wrote it, or start a new run"),
    (lambda c: c.update(format=1), "is a checkpoint of format 1, written by an older ppo.py"),
    (lambda c: c.pop("format"), "is not a ppo.py checkpoint; use one written by ppo.py"),
]


@pytest.mark.parametrize("change, message", MALFORMED)
def test_a_malformed_checkpoint_is_refused_in_one_line(tmp_path, capsys, trained_run, change, message):
    path = checkpoint_with(tmp_path, trained_run, change)
    before = hashes(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--resume", path, "--total-steps", "2048"]) == 2
    one_error_line(capsys, message)
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("flags", [
    ["--hidden-sizes", "1000000000000"],
    ["--num-steps", "1000000000", "--total-steps", "100000000000"],
    ["--num-envs", "1000000000", "--total-steps", "100000000000", "--num-minibatches", "1"],
])
def test_sizes_that_cannot_fit_are_refused_from_the_estimate_before_allocating(tmp_path, capsys, monkeypatch, flags):
    def no_allocation(*arguments, **keywords):
        raise AssertionError("a configuration that cannot fit reached an allocation")
    monkeypatch.setattr(ppo, "build_learner", no_allocation)
    assert ppo.main(flags + ["--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "GiB of cpu memory")
    assert not (tmp_path / "run").exists()


def test_the_estimate_is_small_for_the_presets():
    for name in ppo.PRESETS:
        config = ppo.make_config(name)
        assert ppo.memory_needed(config, *ppo.single_spaces(config)) < 2**30


def test_under_torchrun_the_memory_estimate_is_one_processs_share(monkeypatch):
    """Each of W processes holds 1 / W of the environments and batches: on a GPU of its own that
    share is compared with the GPU's free memory; on the CPU, the shares of the processes of this
    machine with the host's (as one process's whole need is)."""
    config = ppo.make_config("CartPole", num_envs=1024, num_steps=1024, num_minibatches=4, total_steps=2**20)
    whole = ppo.memory_needed(config, *ppo.single_spaces(config))
    share = ppo.memory_needed(config, *ppo.single_spaces(config), processes=2)
    assert whole / 2 < share < whole / 1.9  # the weights are each process's own
    monkeypatch.setattr(ppo, "world_size", lambda: 2)
    monkeypatch.setattr(ppo.torch.cuda, "mem_get_info", lambda device: ((share + whole) // 2, 2 * whole))
    ppo.check_memory(config, torch.device("cuda", 0))  # more than a share, less than the whole: it fits
    monkeypatch.setattr(ppo.torch.cuda, "mem_get_info", lambda device: (share - 1, 2 * whole))
    with pytest.raises(ppo.UserError, match="GiB of cuda memory per GPU"):
        ppo.check_memory(config, torch.device("cuda", 0))


def test_frames_too_small_for_the_cnn_are_refused_and_integer_vectors_are_taken():
    config = ppo.make_config("CartPole")
    with pytest.raises(ppo.UserError, match="frames of 16x16 are too small for the nature cnn"):
        ppo.check_spaces(gym.spaces.Box(0, 255, (3, 16, 16), np.uint8), gym.spaces.Discrete(2), config)
    vectors = gym.spaces.Box(0, 255, (4,), np.uint8)
    agent = ppo.build_actor_critic(vectors, gym.spaces.Discrete(2), config)
    observations = ppo.observation_tensor(np.zeros((2, 4), dtype=np.uint8), torch.device("cpu"))
    assert observations.dtype == torch.float32 and agent.act(observations).shape == (2,)


# Wrong answers -------------------------------------------------------------------------------

def test_a_rollout_of_one_step_is_refused(tmp_path, capsys):
    assert ppo.main(["--env", "Pendulum", "--num-envs", "8", "--num-steps", "1", "--num-minibatches", "1",
                     "--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "--num-steps must be at least 2")


def test_more_total_steps_on_resume_continue_the_learning_rate_without_a_jump(tmp_path, monkeypatch):
    calls = {"count": 0}
    original_update = ppo.update
    def interrupt_after_two(*arguments):
        calls["count"] += 1
        if calls["count"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original_update(*arguments)
    monkeypatch.setattr(ppo, "update", interrupt_after_two)
    config = cartpole(tmp_path)  # 4 iterations planned, stopped after 2
    first = ppo.ppo(config)
    monkeypatch.setattr(ppo, "update", original_update)
    ppo.ppo(cartpole(tmp_path, total_steps=4096), resume=first["checkpoint"])  # now 8 iterations
    column = ppo.METRIC_COLUMNS.index("learning_rate")
    rates = [float(line.split(",")[column]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    rate = config.learning_rate
    expected = [rate, rate * 0.75] + [rate * 0.5 * (1 - j / 6) for j in range(6)]
    assert rates == pytest.approx(expected)
    # A new --learning-rate on resume starts the decay from that rate.
    ppo.ppo(cartpole(tmp_path, total_steps=6144, learning_rate=1e-3), resume=first["checkpoint"])
    rates = [float(line.split(",")[column]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert rates[8:] == pytest.approx([1e-3 * (1 - j / 4) for j in range(4)])


def test_a_resumed_schedule_decays_from_the_rate_and_iteration_it_was_taken_up_at(tmp_path):
    """annealed_learning_rate from start = (iteration, rate), the one schedule of a fresh run
    and a resumed one: a new --learning-rate 0.1 at the last of 17 iterations is 0.1 there; a
    rate of 1e-3 taken up at iteration 8 decays linearly to 0 after the last; a run saved past
    the end of a shorter schedule keeps its rate; start (0, learning_rate) is the fresh
    schedule exactly, so a resume with the same total steps is bit-identical."""
    config = cartpole(tmp_path, total_steps=17 * 512)  # 17 iterations
    assert ppo.annealed_learning_rate(config, 16, (16, 0.1)) == pytest.approx(0.1)
    for iteration in range(8, 17):
        assert ppo.annealed_learning_rate(config, iteration, (8, 1e-3)) == pytest.approx(1e-3 * (1 - (iteration - 8) / 9))
    shorter = cartpole(tmp_path, total_steps=4 * 512)  # a run saved at iteration 8 of a schedule now 4 long keeps its rate
    assert ppo.annealed_learning_rate(shorter, 8, (8, 1e-3)) == 1e-3
    fresh = [ppo.annealed_learning_rate(config, iteration) for iteration in range(17)]
    assert [ppo.annealed_learning_rate(config, iteration, (0, config.learning_rate)) for iteration in range(17)] == fresh


def test_ctrl_c_during_eval_says_evaluation_stopped(tmp_path, capsys, monkeypatch):
    metrics = ppo.ppo(cartpole(tmp_path, total_steps=1024))
    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt
    monkeypatch.setattr(ppo, "evaluate", interrupted)
    capsys.readouterr()
    assert ppo.main(["--eval", metrics["checkpoint"]]) == 130
    assert capsys.readouterr().err == "evaluation stopped\n"


@pytest.mark.parametrize("stopped_in, kept", [(1, False), (3, True)])
def test_a_second_stop_signal_quits_at_once_and_says_which_checkpoint_is_kept(tmp_path, capsys, monkeypatch,
                                                                              stopped_in, kept):
    """The second signal raises KeyboardInterrupt wherever the run is: here in iteration 1, before any
    checkpoint, or in iteration 3, after those of iterations 1 and 2 (--save-every 1)."""
    real_iteration, calls = ppo.ppo_iteration, []
    def iteration(*arguments, **keywords):
        calls.append(None)
        if len(calls) == stopped_in:
            raise KeyboardInterrupt
        return real_iteration(*arguments, **keywords)
    monkeypatch.setattr(ppo, "ppo_iteration", iteration)
    capsys.readouterr()
    assert ppo.main(["--run-dir", str(tmp_path / "run"), "--total-steps", "2048", "--save-every", "1"]) == 130
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert capsys.readouterr().err == (f"stopped without saving; the last checkpoint, {checkpoint}, is kept\n" if kept
                                       else "stopped without saving\n")
    assert checkpoint.exists() == kept
    if kept:
        assert torch.load(checkpoint, weights_only=True)["iteration"] == 2


def test_ctrl_c_during_plot_says_it_wrote_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*arguments, **keywords):
        raise KeyboardInterrupt
    monkeypatch.setattr(ppo, "plot_runs", interrupted)
    assert ppo.main(["--plot", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "--plot stopped; it wrote nothing\n"


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc to see torch loading")
def test_ctrl_c_while_loading_exits_130_without_a_traceback(tmp_path):
    """The signal is sent once torch's library is mapped, while `import torch` runs (about a
    second): a fixed wait sent it, on a loaded machine, before ppo.py's first line had run."""
    process = subprocess.Popen([sys.executable, "ppo.py", "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/maps") as maps:
            if "libtorch" in maps.read():
                break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stdout == "", stdout  # stopped while loading, before any iteration


def test_eval_of_a_checkpoint_without_its_observation_statistics_is_one_line(tmp_path, capsys):
    config = ppo.make_config("Pendulum", num_envs=2, num_steps=64, total_steps=128, num_minibatches=2, run_dir=str(tmp_path))
    path = ppo.ppo(config)["checkpoint"]
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["runner"]["observation_normalizer"] = None
    torch.save(checkpoint, path)
    capsys.readouterr()
    assert ppo.main(["--eval", path]) == 2
    one_error_line(capsys, "has a damaged 'runner' entry (TypeError)")


def test_a_metrics_file_that_is_not_ppos_is_refused_on_resume(tmp_path, capsys):
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    (tmp_path / "metrics.csv").write_bytes(b"\xff\xfe not text")
    before = hashes(tmp_path)
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "checkpoint.pt"), "--total-steps", "2048", "--learning-rate", "1e-3"]) == 2
    one_error_line(capsys, "is not a metrics file that ppo.py wrote")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("flags, rate", [([], 2e-3), (["--learning-rate", "2e-3"], 2e-3), (["--learning-rate", "1e-3"], 1e-3)])
def test_a_run_whose_learning_rate_decayed_to_0_starts_its_decay_again(tmp_path, capsys, flags, rate):
    """Given more --total-steps, a finished run (its rate at 0) decays again from --learning-rate: its own
    (the preset's 2e-3, also when typed again) or a new one; it says so where the rate was its own."""
    ppo.ppo(cartpole(tmp_path, total_steps=1024))
    capsys.readouterr()
    assert ppo.main(["--resume", str(tmp_path / "checkpoint.pt"), "--total-steps", "2048", *flags]) == 0
    note = "note: this run's learning rate had decayed to 0, so its decay starts again from --learning-rate 0.002"
    assert (note in capsys.readouterr().out) == (rate == 2e-3)
    column = ppo.METRIC_COLUMNS.index("learning_rate")
    rates = [float(row.split(",")[column]) for row in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert rates[2:] == [rate, rate / 2]  # iterations 3 and 4 of 4: from the rate down to 0 at the new end


def test_beta_resumes_from_its_adapted_value_or_from_a_new_kl_coef(tmp_path):
    first = ppo.ppo(cartpole(tmp_path, total_steps=1024, objective="kl-penalty", kl_coef=1))  # an int is a valid float
    saved = torch.load(first["checkpoint"], weights_only=True)["kl_coef"]
    assert isinstance(saved, float) and saved != 1.0
    column = ppo.METRIC_COLUMNS.index("kl_coef")
    ppo.ppo(cartpole(tmp_path, total_steps=1536, objective="kl-penalty", kl_coef=1, anneal_lr=False), resume=first["checkpoint"])
    assert float((tmp_path / "metrics.csv").read_text().splitlines()[3].split(",")[column]) == saved
    ppo.ppo(cartpole(tmp_path, total_steps=2048, objective="kl-penalty", kl_coef=0.1, anneal_lr=False), resume=first["checkpoint"])
    assert float((tmp_path / "metrics.csv").read_text().splitlines()[-1].split(",")[column]) == 0.1  # iteration 4
