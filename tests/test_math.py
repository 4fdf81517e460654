"""Oracle tests of the math: each piece of ppo.py against a naive or library reference."""
import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo


def naive_advantages(rewards, values, next_values, terminated, episode_ended, gamma, gae_lambda):
    """A_t = sum_l (gamma * lambda)^l delta_{t+l}, summed term by term until the episode
    (or the rollout) ends, each delta computed on its own."""
    steps, envs = rewards.shape
    advantages = np.zeros_like(rewards)
    for n in range(envs):
        for t in range(steps):
            total = 0.0
            for l in range(steps - t):
                k = t + l
                bootstrap = 0.0 if terminated[k, n] else next_values[k, n]
                delta = rewards[k, n] + gamma * bootstrap - values[k, n]
                total += (gamma * gae_lambda) ** l * delta
                if episode_ended[k, n]:
                    break
            advantages[t, n] = total
    return advantages


def test_gae_matches_the_naive_sum_with_terminated_and_truncated_episodes():
    generator = np.random.default_rng(0)
    steps, envs = 12, 3
    rewards = generator.normal(size=(steps, envs))
    values = generator.normal(size=(steps, envs))
    next_values = generator.normal(size=(steps, envs))
    terminated = np.zeros((steps, envs))
    truncated = np.zeros((steps, envs))
    terminated[3, 0] = terminated[9, 1] = 1.0
    truncated[6, 0] = truncated[2, 2] = truncated[11, 1] = 1.0
    episode_ended = np.maximum(terminated, truncated)
    gamma, gae_lambda = 0.97, 0.9
    expected = naive_advantages(rewards, values, next_values, terminated, episode_ended, gamma, gae_lambda)
    as_tensor = lambda array: torch.tensor(array, dtype=torch.float64)
    actual = ppo.generalized_advantages(as_tensor(rewards), as_tensor(values), as_tensor(next_values),
                                        as_tensor(terminated), as_tensor(episode_ended), gamma, gae_lambda)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    values = torch.tensor([[0.5], [0.25], [0.125]], dtype=torch.float64)
    next_values = torch.tensor([[0.25], [0.125], [10.0]], dtype=torch.float64)
    zeros = torch.zeros_like(rewards)
    advantages = ppo.generalized_advantages(rewards, values, next_values, zeros, zeros, 0.5, 1.0)
    returns = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10, 2 + 0.5 * 3 + 0.25 * 10, 3 + 0.5 * 10]
    np.testing.assert_allclose((advantages + values).squeeze(1).numpy(), returns)


def test_buffer_bootstraps_truncation_from_the_final_observation_and_skips_the_reset_step():
    """NEXT_STEP layout: episode truncated at t=1, autoreset step at t=2 whose stored
    observation is the episode's final observation, new episode from t=3."""
    space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buffer = ppo.PPOBuffer(4, 1, space, gym.spaces.Discrete(2), torch.device("cpu"))
    values = [1.0, 2.0, 7.0, 3.0]  # 7.0 is V(final observation of the first episode)
    rewards = [1.0, 1.0, 0.0, 1.0]
    truncated = [False, True, False, False]
    for t in range(4):
        buffer.store(t, torch.zeros(1, 1), torch.zeros(1, dtype=torch.int64),
                     np.array([rewards[t]]), np.array([False]), np.array([truncated[t]]), np.array([t != 2]))
    buffer.store_old_policy(torch.zeros(4), torch.tensor(values), torch.zeros(4, 2))
    gamma, gae_lambda = 0.9, 0.8
    advantages, value_targets = buffer.advantages_and_value_targets(torch.tensor([5.0]), gamma, gae_lambda)
    delta_1 = 1.0 + gamma * 7.0 - 2.0  # bootstraps from V(final observation), not from the reset state
    delta_0 = 1.0 + gamma * 2.0 - 1.0
    delta_3 = 1.0 + gamma * 5.0 - 3.0
    assert advantages[1, 0].item() == pytest.approx(delta_1)
    assert advantages[0, 0].item() == pytest.approx(delta_0 + gamma * gae_lambda * delta_1)
    assert advantages[3, 0].item() == pytest.approx(delta_3)
    batch = buffer.flatten_valid(advantages, value_targets)
    assert batch["advantages"].shape == (3,)  # the autoreset step is no transition
    np.testing.assert_allclose(batch["value_targets"].numpy(), (advantages + buffer.old_values)[[0, 1, 3], 0].numpy())


def test_next_step_autoreset_returns_the_final_observation_then_the_reset_one():
    """The property the buffer relies on, checked on the real CartPole vector environment."""
    envs = gym.make_vec("CartPole-v1", num_envs=1, vectorization_mode="vector_entry_point", max_episode_steps=3)
    observation, _ = envs.reset(seed=0)
    for _ in range(3):
        previous = observation
        observation, reward, terminated, truncated, _ = envs.step(np.array([0]))
    assert truncated[0] and not terminated[0]
    # A final observation continues the physics: position moved by tau * velocity.
    assert observation[0, 0] == pytest.approx(previous[0, 0] + 0.02 * previous[0, 1], abs=1e-6)
    reset_observation, reward, terminated, truncated, _ = envs.step(np.array([0]))
    assert reward[0] == 0 and not (terminated[0] or truncated[0])
    assert np.all(np.abs(reset_observation) <= 0.05)


# The six cases of the clipped objective: r inside or outside [1 - eps, 1 + eps], A > 0 or < 0.
CLIP_CASES = [
    # ratio, advantage, gradient is zero
    (1.0, 1.0, False), (1.0, -1.0, False),
    (1.5, 1.0, True), (1.5, -1.0, False),
    (0.5, 1.0, False), (0.5, -1.0, True),
]


@pytest.mark.parametrize("ratio, advantage, zero_gradient", CLIP_CASES)
def test_clipped_surrogate_value_and_gradient(ratio, advantage, zero_gradient):
    epsilon = 0.2
    new_log_prob = torch.tensor([math.log(ratio)], dtype=torch.float64, requires_grad=True)
    old_log_prob = torch.zeros(1, dtype=torch.float64)
    loss = ppo.clipped_surrogate_loss(new_log_prob, old_log_prob, torch.tensor([advantage], dtype=torch.float64), epsilon)
    clipped_ratio = min(max(ratio, 1 - epsilon), 1 + epsilon)
    assert loss.item() == pytest.approx(-min(ratio * advantage, clipped_ratio * advantage))
    loss.backward()
    gradient = new_log_prob.grad.item()
    if zero_gradient:
        assert gradient == 0.0
    else:
        assert gradient == pytest.approx(-ratio * advantage)  # d(-r A)/d log pi = -r A


def test_categorical_actor_matches_torch_distributions():
    torch.manual_seed(0)
    actor = ppo.CategoricalActor(torch.nn.Linear(5, 4))
    features = torch.randn(7, 5)
    log_probs = actor(features)
    reference = torch.distributions.Categorical(logits=actor.logits_net(features))
    actions = actor.sample(log_probs)
    assert actions.shape == (7,) and actions.dtype == torch.int64
    torch.testing.assert_close(actor.log_prob(log_probs, actions), reference.log_prob(actions))
    torch.testing.assert_close(actor.entropy(log_probs), reference.entropy())
    agent = ppo.ActorCritic(torch.nn.Identity(), actor, ppo.Critic(torch.nn.Linear(5, 1)))
    torch.testing.assert_close(ppo.deterministic_action(agent, features), reference.probs.argmax(-1))


def test_gaussian_actor_matches_torch_distributions_summed_over_dimensions():
    torch.manual_seed(0)
    actor = ppo.GaussianActor(torch.nn.Linear(5, 3), action_dim=3, log_std_init=-0.3)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.5, 0.0, 0.7]))  # the dimensions differ
    features = torch.randn(6, 5)
    mean = actor(features)
    actions = actor.sample(mean)
    reference = torch.distributions.Normal(mean, actor.log_std.exp())
    assert actions.shape == (6, 3)
    torch.testing.assert_close(actor.log_prob(mean, actions), reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(actor.entropy(mean), reference.entropy().sum(-1))
    single = ppo.GaussianActor(torch.nn.Linear(5, 1), action_dim=1, log_std_init=0.0)
    assert single.log_prob(single(features), torch.zeros(6, 1)).shape == (6,)


def test_frame_pre_stacking_is_position_velocity_and_acceleration():
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 84, 84), dtype=torch.uint8, generator=generator)
    out = ppo.FramePreStacking()(frames)
    older, previous, latest = (frames[:, i].double() / 255 for i in range(3))
    assert out.shape == (2, 3, 84, 84) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0].double(), latest, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 1].double(), latest - previous, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 2].double(), latest - 2 * previous + older, atol=1e-6, rtol=0)


def test_frame_pre_stacking_differences_of_a_steady_and_an_accelerating_change():
    linear = torch.tensor([10, 30, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = ppo.FramePreStacking()(linear.contiguous())
    assert torch.allclose(out[:, 1], torch.full((1, 4, 4), 20 / 255))  # steady change: velocity
    assert torch.all(out[:, 2] == 0)  # and no acceleration
    quadratic = torch.tensor([10, 20, 40], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = ppo.FramePreStacking()(quadratic.contiguous())
    assert torch.allclose(out[:, 2], torch.full((1, 4, 4), 10 / 255))  # 40 - 2 * 20 + 10


def test_cnn_flattened_size_is_computed_for_any_input_size():
    for kind in ppo.CNN_LAYERS:
        for shape in ((3, 84, 84), (3, 64, 72)):
            network = ppo.cnn(shape, kind)
            assert network(torch.zeros(2, *shape)).shape == (2, ppo.CNN_LAYERS[kind][1])


def test_running_mean_std_matches_numpy_on_a_stream():
    generator = np.random.default_rng(1)
    statistics = ppo.RunningMeanStd((3,))
    batches = [generator.normal(loc=5.0, scale=3.0, size=(size, 3)) for size in (1, 7, 64, 3, 200)]
    for batch in batches:
        statistics.update(batch)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(statistics.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(statistics.var, everything.var(axis=0), rtol=1e-12)
    assert statistics.count == len(everything)
    statistics.update(np.zeros((0, 3)))  # an empty batch changes nothing
    np.testing.assert_allclose(statistics.mean, everything.mean(axis=0), rtol=1e-12)


def test_the_observation_normalizer_holds_numpys_float64_moments_of_every_observation_a_step_returned():
    """After three Pendulum rollouts, the statistics are numpy's float64 mean and variance of
    exactly the observations the steps returned (float32 arrays), reset observations of
    later episodes included and the run's first reset() left out: within 1e-9 relative,
    where moments summed in float32 are off by about 1e-6."""
    config = ppo.make_config("Pendulum", num_envs=4, num_steps=512, num_minibatches=8)
    learner = ppo.build_learner(config, torch.device("cpu"))
    returned, step = [], learner.envs.step

    def recorded_step(actions):
        result = step(actions)
        returned.append(result[0].copy())
        return result

    learner.envs.step = recorded_step
    for _ in range(3):
        learner.runner.collect(learner.agent, learner.buffer)
    learner.envs.close()
    everything = np.concatenate(returned)
    assert everything.dtype == np.float32
    statistics = learner.runner.observation_normalizer.statistics
    assert statistics.count == len(everything) == 3 * 512 * 4
    reference = everything.astype(np.float64)
    np.testing.assert_allclose(statistics.mean, reference.mean(axis=0), rtol=1e-9, atol=0)
    np.testing.assert_allclose(statistics.var, reference.var(axis=0), rtol=1e-9, atol=0)


def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    """One rollout (T = 4, N = 1): G restarts after the ending at t = 1, and the autoreset
    step t = 2 is left out of the statistics; every reward of the rollout is divided by the
    std of the G's so far, this rollout's included."""
    scaler = ppo.RewardScaler(num_envs=1, gamma=0.5)
    rewards = np.array([[1.0], [1.0], [0.0], [1.0]], dtype=np.float32)
    ended = np.array([[False], [True], [False], [False]])
    valid = np.array([[True], [True], [False], [True]])
    scaled = scaler(rewards, ended, valid)
    returns = [1.0, 1.5, 1.0]  # G_0, G_1, then a new episode's G_3 (G_2 = 0 is no transition)
    assert scaler.statistics.count == 3 and scaler.discounted_returns[0] == 1.0
    np.testing.assert_allclose(scaled, rewards / math.sqrt(np.var(returns) + 1e-8), rtol=1e-6)
    scaler(rewards[:1], ended[:1], valid[:1])  # the next rollout continues the episode: G = 0.5 * 1 + 1
    np.testing.assert_allclose(scaler.statistics.var, np.var(returns + [1.5]), rtol=1e-12)


def test_advantage_normalization_never_scales_up_past_the_floor():
    advantages = torch.tensor([0.02, -0.01, 0.03, -0.04])  # near-constant returns: the critic's noise
    plain = ppo.normalize(advantages, 0.0)
    assert plain.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert plain.std().item() == pytest.approx(1.0, rel=1e-4)  # noise blown up to unit size
    floored = ppo.normalize(advantages, 1.0)
    torch.testing.assert_close(floored, (advantages - advantages.mean()) / 1.0)  # left as small as it was
    wide = advantages * 100  # a std above the floor: plain normalization
    torch.testing.assert_close(ppo.normalize(wide, 1.0), ppo.normalize(wide, 0.0))


def test_diagnostics():
    old = torch.zeros(4)
    assert ppo.approx_kl(old, old).item() == 0.0
    assert ppo.approx_kl(torch.tensor([0.1, -0.2, 0.3, 0.0]), old).item() > 0
    assert ppo.clip_fraction(torch.log(torch.tensor([1.0, 1.3, 0.7, 1.1])), old, 0.2).item() == 0.5
    returns = torch.tensor([1.0, 2.0, 3.0])
    assert ppo.explained_variance(returns, returns) == 1.0
    assert ppo.explained_variance(torch.full((3,), 2.0), returns) == pytest.approx(0.0)


def small_agent_and_batch(seed=0, size=32):
    """A CartPole-shaped actor-critic and a fixed batch of made-up transitions."""
    torch.manual_seed(seed)
    config = ppo.make_config("CartPole", hidden_sizes=(8,), update_epochs=3, num_minibatches=2,
                             num_envs=4, num_steps=8, total_steps=32)
    agent = ppo.build_actor_critic(gym.spaces.Box(-5, 5, (4,), np.float32), gym.spaces.Discrete(2), config)
    observations = torch.randn(size, 4)
    with torch.no_grad():
        actions = agent.act(observations)
        log_probs, _, values, _ = agent(observations, actions)
    batch = {"observations": observations, "actions": actions, "old_log_probs": log_probs, "old_values": values,
             "advantages": torch.randn(size), "value_targets": values + torch.randn(size)}
    return agent, batch, config


def reference_update(agent, batch, config):
    """PPO's update written the plain way: torch.distributions, per-sample terms, the
    non-fused torch.optim.Adam, one minibatch order drawn exactly as ppo.update draws it."""
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5, foreach=False)
    for _ in range(config.update_epochs):
        order = torch.randperm(len(batch["advantages"]))
        for indices in torch.tensor_split(order, config.num_minibatches):
            logits = agent.actor.logits_net(batch["observations"][indices])
            distribution = torch.distributions.Categorical(logits=logits)
            ratio = torch.exp(distribution.log_prob(batch["actions"][indices]) - batch["old_log_probs"][indices])
            advantages = batch["advantages"][indices]
            advantages = (advantages - advantages.mean()) / (max(advantages.std(), config.advantage_std_floor) + 1e-8)
            surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef) * advantages)
            values = agent.critic.value_net(batch["observations"][indices]).squeeze(-1)
            loss = (-surrogate.mean() + config.vf_coef * 0.5 * ((values - batch["value_targets"][indices]) ** 2).mean()
                    - config.ent_coef * distribution.entropy().mean())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()


def counting_optimizer(agent, config, steps):
    """ppo's optimizer, with each of its steps appended to the list `steps`."""
    optimizer = ppo.make_optimizer(agent, config)
    original_step = optimizer.step
    def counted_step(*arguments, **keywords):
        steps.append(1)
        return original_step(*arguments, **keywords)
    optimizer.step = counted_step
    return optimizer


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_update_matches_a_plain_reference_on_a_fixed_batch(ent_coef):
    agent, batch, config = small_agent_and_batch()
    config = dataclasses.replace(config, ent_coef=ent_coef)
    twin = copy.deepcopy(agent)
    torch.manual_seed(7)
    losses = ppo.update(agent, ppo.make_optimizer(agent, config), batch, config, config.kl_coef)
    torch.manual_seed(7)
    reference_update(twin, batch, config)
    for (name, mine), theirs in zip(agent.named_parameters(), twin.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=name)
    assert set(losses) == set(ppo.UPDATE_DIAGNOSTICS) and losses["approx_kl"] > 0


def test_update_reports_means_over_every_gradient_step():
    agent, batch, config = small_agent_and_batch()
    steps = []
    optimizer = counting_optimizer(agent, config, steps)
    value_losses = []
    original_value_loss = ppo.value_loss
    def recorded_value_loss(values, value_targets):
        value_losses.append(original_value_loss(values, value_targets).item())
        return original_value_loss(values, value_targets)
    ppo.value_loss = recorded_value_loss
    try:
        losses = ppo.update(agent, optimizer, batch, config, config.kl_coef)
    finally:
        ppo.value_loss = original_value_loss
    assert len(steps) == config.update_epochs * config.num_minibatches == len(value_losses)
    assert losses["value_loss"] == pytest.approx(np.mean(value_losses), rel=1e-6)


def test_target_kl_ends_the_whole_update_at_the_first_minibatch_past_it():
    agent, batch, config = small_agent_and_batch()
    before = copy.deepcopy(agent)
    steps = []
    optimizer = counting_optimizer(agent, config, steps)
    # The first minibatch is evaluated before any step (KL 0) and taken; the second sees
    # the moved policy, whose KL exceeds any tiny target: the update ends there, epochs left.
    losses = ppo.update(agent, optimizer, batch, dataclasses.replace(config, target_kl=1e-12), config.kl_coef)
    assert len(steps) == 1
    assert losses["approx_kl"] < 1e-6  # the mean over the one step taken, measured before it (0 up to rounding)
    assert not torch.equal(agent.critic.value_net[0].weight, before.critic.value_net[0].weight)
    steps.clear()
    ppo.update(before, counting_optimizer(before, config, steps), batch, dataclasses.replace(config, target_kl=1e6), config.kl_coef)
    assert len(steps) == config.update_epochs * config.num_minibatches


def test_the_optimizer_is_torch_adam_with_the_papers_epsilon():
    agent, _, config = small_agent_and_batch()
    optimizer = ppo.make_optimizer(agent, config)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["eps"] == 1e-5 and optimizer.param_groups[0]["lr"] == config.learning_rate
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(agent.parameters()))


def test_learning_rate_anneals_linearly_to_zero():
    config = ppo.make_config("CartPole", total_steps=512 * 4)
    assert [ppo.annealed_learning_rate(config, i) for i in range(4)] == pytest.approx(
        [config.learning_rate * f for f in (1.0, 0.75, 0.5, 0.25)])
    constant = dataclasses.replace(config, anneal_lr=False)
    assert ppo.annealed_learning_rate(constant, 3) == config.learning_rate


def test_categorical_kl_matches_torch_distributions():
    torch.manual_seed(0)
    old, new = torch.log_softmax(torch.randn(6, 4), -1), torch.log_softmax(torch.randn(6, 4), -1)
    reference = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=old),
                                                  torch.distributions.Categorical(logits=new))
    torch.testing.assert_close(ppo.categorical_kl(old, new), reference)
    assert torch.all(ppo.categorical_kl(old, old).abs() < 1e-6)


def test_gaussian_kl_matches_torch_distributions_summed_over_dimensions():
    torch.manual_seed(0)
    old_mean, new_mean = torch.randn(6, 3), torch.randn(6, 3)
    old_log_std, new_log_std = torch.randn(6, 3) * 0.5, torch.tensor([-0.5, 0.0, 0.7])
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(old_mean, old_log_std.exp()),
                                                  torch.distributions.Normal(new_mean, new_log_std.exp())).sum(-1)
    torch.testing.assert_close(ppo.gaussian_kl(old_mean, old_log_std, new_mean, new_log_std), reference)
    actor = ppo.GaussianActor(torch.nn.Linear(5, 3), action_dim=3, log_std_init=-0.3)
    mean = actor(torch.randn(6, 5))
    assert torch.all(actor.kl_divergence(actor.distribution_parameters(mean), mean).abs() < 1e-6)  # KL[p || p] = 0


@pytest.mark.parametrize("mean_kl, expected", [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0),
                                               (0.015, 1.0), (0.0151, 2.0), (0.5, 2.0)])
def test_the_kl_coefficient_adapts_as_the_paper_says(mean_kl, expected):
    """d_targ = 0.01: halve beta below 0.01 / 1.5, double it above 1.5 * 0.01."""
    assert ppo.adapted_kl_coef(1.0, mean_kl, 0.01) == expected


def test_the_penalized_objective_has_the_gradient_of_its_per_sample_form():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    old_log_probs_all = torch.log_softmax(torch.randn(5, 3, dtype=torch.float64), -1)
    actions, advantages, beta = torch.tensor([0, 2, 1, 1, 0]), torch.randn(5, dtype=torch.float64), 0.7
    new_log_probs_all = torch.log_softmax(logits, -1)
    take = lambda log_probs: log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    loss = ppo.kl_penalty_loss(take(new_log_probs_all), take(old_log_probs_all), advantages,
                               ppo.categorical_kl(old_log_probs_all, new_log_probs_all), beta)
    (gradient,) = torch.autograd.grad(loss, logits)
    naive = 0.0
    for i in range(5):  # -(r_i A_i - beta KL_i), one sample at a time, then the mean
        old = torch.distributions.Categorical(logits=old_log_probs_all[i])
        new = torch.distributions.Categorical(logits=logits[i])
        ratio = torch.exp(new.log_prob(actions[i]) - old.log_prob(actions[i]))
        naive = naive - (ratio * advantages[i] - beta * torch.distributions.kl_divergence(old, new)) / 5
    (naive_gradient,) = torch.autograd.grad(naive, logits)
    torch.testing.assert_close(gradient, naive_gradient)


def test_bfloat16_runs_the_cnn_in_bfloat16_and_hands_float32_to_the_heads():
    frames = gym.spaces.Box(0, 255, (3, 84, 84), np.uint8)
    config = ppo.make_config("Pong", cnn="small")
    torch.manual_seed(0)
    full = ppo.build_actor_critic(frames, gym.spaces.Discrete(6), config)
    low = ppo.build_actor_critic(frames, gym.spaces.Discrete(6), config)
    assert ppo.set_precision(low, "bfloat16")
    assert low.state_dict().keys() == full.state_dict().keys()  # a checkpoint serves either precision
    low.load_state_dict(full.state_dict())
    observations = torch.randint(0, 256, (8, 3, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    exact, rounded = full.encoder(observations), low.encoder(observations)
    assert rounded.dtype == torch.float32 and all(weight.dtype == torch.float32 for weight in low.parameters())
    # bfloat16 keeps 8 bits of mantissa: close to float32, and not equal to it (autocast is on).
    assert not torch.equal(rounded, exact)
    torch.testing.assert_close(rounded, exact, atol=0.05 * exact.abs().max().item(), rtol=0)
    log_probs, _, values, _ = low(observations, torch.zeros(8, dtype=torch.int64))
    (log_probs.sum() + values.sum()).backward()
    first_convolution = low.encoder[1][0].weight
    assert first_convolution.grad is not None and first_convolution.grad.dtype == torch.float32
    # Vector observations have no cnn: the setting leaves their mlps in float32.
    vector = ppo.build_actor_critic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), ppo.make_config("CartPole"))
    assert not ppo.set_precision(vector, "bfloat16") and isinstance(vector.encoder, torch.nn.Identity)
