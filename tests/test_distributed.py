"""Data-parallel PPO over torch.distributed (docs/distributed.md): on the
CPU with gloo and 2 ranks, each rank's step is the mean of the gradients of the ranks'
parts of a minibatch (DistributedDataParallel), and an iteration's figures are joined over
ranks; ranks keep identical weights and step disjoint environments; and torchrun trains,
resumes, stops on a signal and spans two launchers."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

import ppo

pytestmark = pytest.mark.long  # several processes: run with --all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def rank_process(rank, world, store_path, function, arguments):
    """What torchrun would set up, in a process of torch.multiprocessing.spawn. The ranks
    meet in a file, not on a port: a free port found and released before the ranks bind it
    could be taken by another process in between."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    try:
        function(*arguments)
    finally:
        dist.destroy_process_group()
    # As ppo.py does under torchrun: skip the interpreter's teardown, where a gloo thread
    # can abort the process after the work is done (1 of 8 runs of these tests did).
    os._exit(0)


def on_two_ranks(function, *arguments):
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(rank_process, args=(2, os.path.join(folder, "store"), function, arguments), nprocs=2)


# The update: each rank's part of a minibatch, the gradients averaged over ranks -------------

SAMPLES, FIRST_PART = 48, 20  # rank 0 holds 20 samples, rank 1 the other 28


def update_config(objective):
    return ppo.make_config("CartPole", num_envs=8, num_steps=6, num_minibatches=1, update_epochs=1,
                           max_grad_norm=1e6, objective=objective, kl_coef=0.5)


def fresh_agent(config):
    torch.manual_seed(0)
    return ppo.build_actor_critic(ppo.gym.spaces.Box(-1, 1, (4,)), ppo.gym.spaces.Discrete(2), config)


def minibatch(agent, objective):
    """Samples whose two parts have different advantage statistics and sizes, and
    log-probs away from the current policy's, so clipping is active."""
    generator = torch.Generator().manual_seed(1)
    observations = torch.randn(SAMPLES, 4, generator=generator)
    actions = torch.randint(0, 2, (SAMPLES,), generator=generator)
    with torch.no_grad():
        log_probs, _, values, _ = agent(observations, actions)
    advantages = torch.randn(SAMPLES, generator=generator)
    advantages[:FIRST_PART] += 2.0
    batch = {"observations": observations, "actions": actions,
             "old_log_probs": log_probs + 0.3 * torch.randn(SAMPLES, generator=generator),
             "old_values": values, "advantages": advantages, "value_targets": torch.randn(SAMPLES, generator=generator)}
    if objective == "kl-penalty":
        batch["old_distribution_parameters"] = ppo.evaluate_rollout(agent, observations, actions, SAMPLES)[2]
    return batch


def gradient_of_update(batch, config, data_parallel=False):
    """-(change of the weights) after one update with SGD at step size 1: the gradient; and
    the update's diagnostics. With data_parallel, the agent is in DistributedDataParallel."""
    agent = fresh_agent(config)
    before = [weight.detach().clone() for weight in agent.parameters()]
    trained = ppo.DataParallelAgent(agent) if data_parallel else agent
    losses = ppo.update(trained, torch.optim.SGD(agent.parameters(), lr=1.0), batch, config, config.kl_coef,
                        ppo.mean_over_ranks)
    return [old - new.detach() for old, new in zip(before, agent.parameters())], losses


PARTS = (slice(0, FIRST_PART), slice(FIRST_PART, SAMPLES))


def update_on_a_part(folder, objective):
    config = update_config(objective)
    batch = minibatch(fresh_agent(config), objective)
    part = PARTS[dist.get_rank()]
    gradient_and_losses = gradient_of_update({name: values[part] for name, values in batch.items()}, config, data_parallel=True)
    torch.save(gradient_and_losses, os.path.join(folder, f"rank{dist.get_rank()}.pt"))


@pytest.mark.parametrize("objective", ["clip", "kl-penalty"])
def test_two_ranks_step_with_the_mean_of_the_gradients_of_their_parts(tmp_path, objective):
    """What docs/distributed.md says K ranks compute: each rank's loss on its own part of
    the minibatch (its advantages normalized by its part's mean and std), the gradients
    averaged over ranks by DistributedDataParallel. Parts of unequal size and advantage
    statistics: the step differs from the whole minibatch's in one process, and equals the
    mean of the steps one process takes on each part; both ranks take the same step."""
    config = update_config(objective)
    batch = minibatch(fresh_agent(config), objective)
    whole, _ = gradient_of_update(batch, config)
    parts = [gradient_of_update({name: values[part] for name, values in batch.items()}, config) for part in PARTS]
    on_two_ranks(update_on_a_part, str(tmp_path), objective)
    (rank_0_gradient, rank_0_losses), (rank_1_gradient, rank_1_losses) = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for index, (rank_0, rank_1) in enumerate(zip(rank_0_gradient, rank_1_gradient)):
        assert torch.equal(rank_0, rank_1)  # one averaged gradient on both ranks
        expected = (parts[0][0][index] + parts[1][0][index]) / 2
        torch.testing.assert_close(rank_0, expected, rtol=1e-5, atol=1e-6)  # equal up to rounding
    assert any((gradient - whole_gradient).abs().max() > 1e-3 for gradient, whole_gradient in zip(rank_0_gradient, whole))
    assert any(gradient.abs().max() > 1e-3 for gradient in whole)
    # The diagnostics are each rank's own, over its part; `over_all_ranks` averages them.
    assert rank_0_losses == pytest.approx(parts[0][1], rel=1e-5, abs=1e-6)
    assert rank_1_losses == pytest.approx(parts[1][1], rel=1e-5, abs=1e-6)


def figures_of_a_rank(folder):
    rank = dist.get_rank()
    figures = {"environment_steps": 100 + rank, "episode_returns": [float(rank)] * (rank + 1), "iteration": 7,
               **{name: float(rank + 1) for name in ppo.UPDATE_DIAGNOSTICS}, "explained_variance": 0.5 + rank / 4}
    torch.save(ppo.over_all_ranks(figures), os.path.join(folder, f"rank{rank}.pt"))


def test_an_iterations_figures_are_joined_over_ranks(tmp_path):
    """Steps summed, finished episodes joined in rank order, means averaged, the same on
    every rank; in one process, the figures themselves."""
    on_two_ranks(figures_of_a_rank, str(tmp_path))
    rank_0, rank_1 = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert rank_0 == rank_1
    assert rank_0["environment_steps"] == 201 and rank_0["episode_returns"] == [0.0, 1.0, 1.0] and rank_0["iteration"] == 7
    assert all(rank_0[name] == 1.5 for name in ppo.UPDATE_DIAGNOSTICS) and rank_0["explained_variance"] == 0.625
    alone = {"environment_steps": 3, "episode_returns": [1.0], "policy_loss": 0.25}
    assert ppo.over_all_ranks(alone) is alone


# The normalizers: two ranks' statistics are one process's on the same data ----------------

def normalizer_data():
    """Float32 observations, as environments return them, far from 0 so that rounding shows."""
    return [np.random.default_rng(seed).normal(loc=40.0, scale=0.2, size=(size, 3)).astype(np.float32)
            for seed, size in ((1, 300), (2, 1000), (3, 7))]


def normalizer_of_a_part(folder):
    statistics = ppo.RunningMeanStd((3,))
    for batch in normalizer_data():
        statistics.update(batch[:100] if dist.get_rank() == 0 else batch[100:])  # parts of unequal size
    torch.save({"mean": statistics.mean, "var": statistics.var, "count": statistics.count},
               os.path.join(folder, f"rank{dist.get_rank()}.pt"))


def test_two_ranks_normalizer_statistics_equal_one_processs_and_numpys_in_float64(tmp_path):
    one_process = ppo.RunningMeanStd((3,))
    for batch in normalizer_data():
        one_process.update(batch)
    reference = np.concatenate(normalizer_data()).astype(np.float64)
    np.testing.assert_allclose(one_process.mean, reference.mean(axis=0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(one_process.var, reference.var(axis=0), rtol=1e-9, atol=0)
    on_two_ranks(normalizer_of_a_part, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    for name in ("mean", "var"):
        assert np.array_equal(ranks[0][name], ranks[1][name])
        np.testing.assert_allclose(ranks[0][name], getattr(one_process, name), rtol=1e-12, atol=0)
    assert ranks[0]["count"] == ranks[1]["count"] == one_process.count == len(reference)


# Training on two ranks ----------------------------------------------------------------------

def small(env, **overrides):
    settings = {"CartPole": dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=2),
                "Pendulum": dict(num_envs=4, num_steps=64, num_minibatches=2, update_epochs=2)}[env]
    return ppo.make_config(env, seed=3, **{**settings, **overrides})


def train_three_iterations(folder, env):
    config = small(env)
    learner = ppo.build_learner(config, torch.device("cpu"))
    ppo.join_ranks(learner, config.seed, torch.device("cpu"))
    start = {"observations": learner.runner.raw_observations.copy()}
    returns = []
    for _ in range(3):
        returns += ppo.over_all_ranks(ppo.ppo_iteration(learner, config, 1e-3))["episode_returns"]
    torch.save({"start": start, "weights": learner.agent.state_dict(), "returns": returns,
                "optimizer": learner.optimizer.state_dict()["state"]},
               os.path.join(folder, f"rank{dist.get_rank()}.pt"), pickle_protocol=4)
    learner.envs.close()


@pytest.mark.parametrize("env", ["CartPole", "Pendulum"])
def test_two_ranks_keep_identical_weights_and_step_the_environments_of_one_process(tmp_path, env):
    on_two_ranks(train_three_iterations, str(tmp_path), env)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    one_process = ppo.build_learner(small(env), torch.device("cpu"))
    assert not np.array_equal(ranks[0]["start"]["observations"], ranks[1]["start"]["observations"])
    if env == "Pendulum":  # seeded one by one: rank r's are seed + 2r, ..., together those of one process
        np.testing.assert_array_equal(np.concatenate([rank["start"]["observations"] for rank in ranks]),
                                      one_process.runner.raw_observations)
    initial = one_process.agent.state_dict()
    one_process.envs.close()
    for name, weight in ranks[0]["weights"].items():
        assert torch.equal(weight, ranks[1]["weights"][name]), name  # bitwise, after 3 iterations
    assert any(not torch.equal(weight, initial[name]) for name, weight in ranks[0]["weights"].items())
    for index, moments in ranks[0]["optimizer"].items():
        assert all(torch.equal(moments[key], ranks[1]["optimizer"][index][key]) for key in ("exp_avg", "exp_avg_sq"))
    assert ranks[0]["returns"] == ranks[1]["returns"]  # every rank logs every rank's episodes


# torchrun -----------------------------------------------------------------------------------

def torchrun(*arguments, launcher=("--standalone", "--nproc-per-node", "2"), **options):
    return subprocess.run([*TORCHRUN, *launcher, "ppo.py", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, **options)


def test_torchrun_with_two_processes_solves_cartpole(tmp_path):
    """The preset's budget of 150,000 steps, on 2 ranks. Measured on 2 ranks
    (docs/distributed.md): 12 of seeds 1-12 solved, the slowest after 85,180 steps (before
    DistributedDataParallel, 11 of 12 on another CPU). Allowing for 1 seed in 12 failing,
    3 of 5 seeds must solve: all 5 runs only if needed, and a false failure has a chance of
    about 0.5%."""
    solved = failed = 0
    for seed in (1, 2, 3, 4, 5):
        result = torchrun("--env", "CartPole", "--seed", str(seed), "--run-dir", str(tmp_path / str(seed)))
        assert result.returncode == 0, result.stderr[-3000:]
        if "solved: mean return" in result.stdout:
            solved += 1
        else:
            failed += 1
        if solved == 3 or failed == 3:
            break
    assert solved == 3


def without_timing(metrics_csv):
    rows = [line.split(",") for line in open(metrics_csv).read().splitlines()]
    timing = {rows[0].index("wall_seconds"), rows[0].index("steps_per_second")}
    return [[value for column, value in enumerate(row) if column not in timing] for row in rows]


def test_a_run_resumed_under_torchrun_equals_an_uninterrupted_one(tmp_path):
    common = ["--env", "CartPole", "--target-return", "none", "--no-anneal-lr"]
    longer = torchrun(*common, "--total-steps", "2048", "--run-dir", str(tmp_path / "long"))
    shorter = torchrun(*common, "--total-steps", "1024", "--run-dir", str(tmp_path / "short"))
    assert longer.returncode == 0 and shorter.returncode == 0, shorter.stderr[-3000:]
    extended = torchrun("--resume", str(tmp_path / "short" / "checkpoint.pt"), "--total-steps", "2048")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert without_timing(tmp_path / "long" / "metrics.csv") == without_timing(tmp_path / "short" / "metrics.csv")
    long, short = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("long", "short"))
    assert len(long["other_ranks"]) == 1 and long["iteration"] == short["iteration"] == 4
    assert all(torch.equal(weight, short["model"][name]) for name, weight in long["model"].items())
    # The checkpoint of 2 processes cannot be resumed by 1.
    alone = subprocess.run([sys.executable, "ppo.py", "--resume", str(tmp_path / "long" / "checkpoint.pt"), "--total-steps", "4096"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1, alone.stderr
    assert "was written by 2 processes, and this run has 1" in alone.stderr


@pytest.mark.parametrize("sent_to", ["launcher", "terminal"])
def test_a_signal_stops_every_rank_after_the_same_iteration_with_one_checkpoint(tmp_path, sent_to):
    """SIGTERM to torchrun (kill, a scheduler), which passes it on to each rank; or Ctrl-C
    in a terminal, which sends SIGINT to the launcher and both ranks at once, and the
    launcher passes it on again."""
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "ppo.py", "--env", "CartPole", "--total-steps", "100000000",
               "--target-return", "none", "--save-every", "1000000", "--run-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    metrics_file = tmp_path / "metrics.csv"
    deadline = time.time() + 180  # a safety net only: the signal goes after 3 logged iterations
    while time.time() < deadline and process.poll() is None:
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 4:
            break
        time.sleep(0.1)
    if sent_to == "launcher":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0  # torchrun reports a stop by a signal as a failure, exit status 1
    checkpoint_path = str(tmp_path / "checkpoint.pt")
    assert stdout.count(f"interrupted: checkpoint saved to {checkpoint_path}") == 1, stdout[-2000:] + stderr[-3000:]
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert len(checkpoint["other_ranks"]) == 1
    assert checkpoint["iteration"] == len(metrics_file.read_text().splitlines()) - 1 >= 3
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_two_launchers_on_one_host_rendezvous_and_train(tmp_path):
    """Two machines, played by two torchrun launchers of one process each on 127.0.0.1.
    The test hosts their rendezvous store on a port it holds from the start (bound to port
    0, so the system chooses a free one): each launcher, finding the port taken, joins the
    store as a client (torch.distributed.elastic's c10d backend does so), and no other
    process can take the port between its choice and the launchers' start."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, multi_tenant=True, wait_for_workers=False)
    endpoint = f"127.0.0.1:{store.port}"
    launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "test"]
    command = [*TORCHRUN, *launcher, "ppo.py", "--env", "CartPole", "--total-steps", "2048", "--run-dir", str(tmp_path / "run")]
    launchers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in launchers]
    assert [process.returncode for process in launchers] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert sum(stdout.count("finished: checkpoint saved") for stdout, _ in outputs) == 1  # rank 0 alone prints
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 4 and len(checkpoint["other_ranks"]) == 1


def test_environments_that_do_not_split_over_the_ranks_get_one_line(tmp_path):
    result = torchrun("--env", "CartPole", "--num-envs", "5", "--num-minibatches", "1", "--run-dir", str(tmp_path / "run"))
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: --num-envs 5 (the environments of all processes) does not split evenly over 2 processes; "
                    "use a multiple of 2"], result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


# What a user reads when torchrun's job stops --------------------------------------------------

QUIET = {**os.environ, "OMP_NUM_THREADS": "1"}  # else torchrun itself prints a notice that it set it
LAUNCHER_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # torchrun's own log lines: W1207 13:07:40.002000 4125 ...


def what_the_ranks_said(stderr):
    """The lines the ranks wrote to stderr (torchrun's log lines and its closing report left
    out), and each rank's exit status as torchrun reports it, by rank."""
    report = stderr.find("Traceback (most recent call last):\n  File") if "ChildFailedError" in stderr else len(stderr)
    ranks = [line for line in stderr[:report].splitlines() if not LAUNCHER_LOG.match(line)]
    exits = {int(rank): int(code) for rank, code in re.findall(r"rank\s*: (\d+) \(local_rank: \d+\)\n\s*exitcode\s*: (-?\d+)", stderr)}
    return ranks, exits


def torchrun_script(folder, patch, *arguments):
    """torchrun with 2 ranks of a script that changes ppo.py as `patch` says, then runs its main."""
    script = folder / "patched_ppo.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {ROOT!r})\nimport ppo\n{textwrap.dedent(patch)}\n"
                      "status = ppo.main()\nsys.stdout.flush()\nsys.stderr.flush()\nos._exit(status)\n")
    return subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(script), *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=QUIET)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("two-ranks") / "run"
    result = torchrun("--env", "CartPole", "--total-steps", "2048", "--target-return", "none", "--run-dir", str(run_dir), env=QUIET)
    return result, run_dir


def test_a_torchrun_start_prints_no_warning(two_rank_run):
    """torch 2.13 deprecates DistributedDataParallel's broadcast_buffers with a FutureWarning,
    which every rank printed; the networks have no buffers, so the argument is left out."""
    result, _ = two_rank_run
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "finished: checkpoint saved" in result.stdout


def test_a_damaged_runner_state_of_rank_1_is_said_in_one_line_and_every_rank_exits_2(tmp_path, two_rank_run):
    """Rank 1 alone reads "other_ranks" of a checkpoint: its error was silent, rank 0 waited
    in a collective until torchrun ended it. Now rank 1 says it, every rank exits 2, and
    nothing follows it but torchrun's report of the exits."""
    _, run_dir = two_rank_run
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["other_ranks"][0]["runner"]["episode_returns"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    result = torchrun("--resume", str(tmp_path / "checkpoint.pt"), "--total-steps", "4096", env=QUIET)
    said, exits = what_the_ranks_said(result.stderr)
    assert said == [f"error: {tmp_path / 'checkpoint.pt'} has a damaged 'other_ranks' entry (ValueError, rank 1's runner and "
                    "random state); use another checkpoint of the run"], result.stderr
    assert exits == {0: 2, 1: 2} and result.stdout == "", result.stderr
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "run.lock"] and (tmp_path / "checkpoint.pt").read_bytes() == before


def test_a_policy_that_diverges_on_one_rank_ends_the_job_in_that_ranks_one_line(tmp_path):
    """Rank 1's probabilities become NaN: after that iteration every rank stops with one line,
    said once, naming rank 1; no rank waits in a collective or prints a traceback."""
    patch = """
        import torch
        original_update = ppo.update
        def update_then_blow_up(agent, *arguments):
            losses = original_update(agent, *arguments)
            if os.environ["RANK"] == "1":  # rank 1's next rollout has logits that overflow
                with torch.no_grad():
                    agent.actor.logits_net[-1].weight.fill_(3e38)
            return losses
        ppo.update = update_then_blow_up
    """
    result = torchrun_script(tmp_path, patch, "--total-steps", "100000", "--target-return", "none", "--run-dir", str(tmp_path / "run"))
    said, exits = what_the_ranks_said(result.stderr)
    assert said == ["error: iteration 2: the policy's probabilities became NaN or infinite on rank 1; no checkpoint had been "
                    "written yet; start again with a lower --learning-rate or --max-grad-norm"], result.stderr
    assert exits[1] == 1 and exits[0] in (1, -signal.SIGTERM), result.stderr  # rank 0's end, or torchrun's SIGTERM first


def test_a_disk_that_fills_as_rank_0_names_the_holder_stops_every_rank_in_one_line(tmp_path):
    """An OSError while run.lock is written was a traceback on rank 0, and rank 1 waited for
    it in a broadcast; the new folder stayed."""
    patch = """
        import builtins, errno
        real_open = builtins.open
        class FillsWhenWritten:
            def __init__(self, file):
                self.file = file
            def __getattr__(self, name):
                return getattr(self.file, name)
            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def lock_file_on_a_full_disk(path, mode="r", *arguments, **keywords):
            file = real_open(path, mode, *arguments, **keywords)
            return FillsWhenWritten(file) if os.path.basename(str(path)) == "run.lock" else file
        builtins.open = lock_file_on_a_full_disk
    """
    result = torchrun_script(tmp_path, patch, "--total-steps", "2048", "--run-dir", str(tmp_path / "run"))
    said, exits = what_the_ranks_said(result.stderr)
    assert said == [f"error: cannot write {tmp_path / 'run'} (No space left on device); no checkpoint had been written yet; "
                    "free some space or choose another --run-dir"], result.stderr
    assert exits == {0: 1, 1: 1} and not (tmp_path / "run").exists()


def test_a_checkpoint_of_format_2_is_read_as_one_processs(tmp_path):
    """Format 2 was written before torchrun support, by one process, without "other_ranks"."""
    config = ppo.make_config("CartPole", seed=5, run_dir=str(tmp_path / "run"), total_steps=1024, target_return=None, anneal_lr=False)
    first = ppo.ppo(config)
    checkpoint = torch.load(first["checkpoint"], weights_only=True)
    del checkpoint["other_ranks"]
    torch.save({**checkpoint, "format": 2}, first["checkpoint"])
    resumed = ppo.ppo(ppo.make_config("CartPole", seed=5, run_dir=None, total_steps=2048, target_return=None, anneal_lr=False),
                      resume=first["checkpoint"])
    assert resumed["iteration"] == 4
