"""Proximal Policy Optimization (PPO) in one file, written to be read top to bottom.

PPO learns a stochastic policy by repeating two phases: run the current policy in N
parallel environments for T steps, then take K epochs of minibatch gradient steps on a
clipped surrogate objective that keeps the new policy close to the one that collected
the data. Advantages come from Generalized Advantage Estimation (GAE).

Papers, cited by equation number beside the code that implements them:
    [PPO] Schulman, Wolski, Dhariwal, Radford, Klimov (2017). Proximal Policy Optimization
          Algorithms. arXiv:1707.06347
    [GAE] Schulman, Moritz, Levine, Jordan, Abbeel (2015). High-Dimensional Continuous
          Control Using Generalized Advantage Estimation. arXiv:1506.02438

Run:
    python ppo.py                            # CartPole-v1 on the CPU, solved in seconds
    python ppo.py --env Pendulum             # continuous actions (Gaussian actor)
    python ppo.py --env Pong --device cuda   # Atari Pong from pixels
    python ppo.py --env Acrobot-v1           # any gymnasium id, with generic defaults
    python ppo.py --resume runs/Pendulum-v1-1-<time>/checkpoint.pt --total-steps 400000
    python ppo.py --eval runs/CartPole-v1-1-<time>/checkpoint.pt --episodes 10
    python ppo.py --help                     # every flag, with its meaning and range

Reading order: 1 configuration, 2 networks (mlp, cnn, FramePreStacking), 3 actors and
critic, 4 rollout buffer and GAE, 5 running normalization, 6 environments and the runner
that steps them, 7 the loss, 8 checkpoints, 9 training, 10 evaluation, 11 command line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import signal
import sys
import time
import typing
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from torch import nn

# ---------------------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------------------


def option(default, help: str):
    """A Config field and its documentation, which is also its flag's --help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    """Every hyperparameter of a run. Symbols are those of the PPO and GAE papers."""

    env: str = option("CartPole", "gymnasium environment id (Acrobot-v1, ALE/Breakout-v5) or a preset: CartPole, Pendulum, Pong")
    seed: int = option(1, "seed of the environments, network initialization and sampling")
    device: str = option("cpu", "torch device: cpu, cuda, cuda:1")
    total_steps: int = option(500_000, "environment steps to train for, summed over all parallel environments (N * T per iteration)")
    num_envs: int = option(4, "N, parallel environments; typically 1 to 64")
    num_steps: int = option(128, "T, rollout length per environment per iteration; typically 16 to 2048")
    num_minibatches: int = option(4, "minibatches per epoch; num_envs * num_steps must split into minibatches of at least 8 steps")
    update_epochs: int = option(4, "K, passes over each rollout; typically 3 to 30")
    learning_rate: float = option(2.5e-4, "Adam step size alpha; typically 1e-4 to 3e-3")
    anneal_lr: bool = option(True, "decay the learning rate linearly to 0 over the run")
    gamma: float = option(0.99, "gamma, discount factor in (0, 1]; typically 0.9 to 0.999")
    gae_lambda: float = option(0.95, "lambda of GAE in (0, 1]; 1 is Monte Carlo, 0 is one-step TD; typically 0.8 to 0.99")
    clip_coef: float = option(0.2, "epsilon, clip range of the probability ratio, in (0, 1); typically 0.1 to 0.3")
    ent_coef: float = option(0.01, "c2, weight of the entropy bonus; typically 0 to 0.01")
    vf_coef: float = option(0.5, "c1, weight of the value loss; typically 0.5 to 1")
    max_grad_norm: float = option(0.5, "clip the global gradient norm to this; typically 0.5")
    target_kl: typing.Optional[float] = option(None, "stop an iteration's update early once approx KL exceeds this (none: never); typically 0.01 to 0.05")
    normalize_advantages: bool = option(True, "normalize advantages to zero mean, unit std per minibatch")
    hidden_sizes: typing.Tuple[int, ...] = option((64, 64), "widths of the hidden layers of the mlp actor and critic")
    activation: str = option("tanh", "activation of the mlp: tanh or relu")
    cnn: str = option("nature", "convolutional network for image observations: nature (32-64-64 conv, 512 linear) or small (16-32 conv, 256 linear)")
    log_std_init: float = option(0.0, "initial log standard deviation of the Gaussian actor (continuous actions); typically -1 to 0")
    normalize_observations: bool = option(False, "normalize observations by a running mean and std (continuous control)")
    observation_clip: float = option(10.0, "clip normalized observations to [-c, c]")
    scale_rewards: bool = option(False, "divide rewards by a running std of the discounted return (continuous control)")
    clip_rewards: bool = option(False, "train on the sign of each reward (Atari); episode returns are still logged unclipped")
    frame_skip: int = option(4, "Atari: emulator frames per agent step (the last two are max-pooled)")
    repeat_action_probability: float = option(0.0, "Atari: sticky-action probability; 0 as in the PPO paper, 0.25 in the ALE v5 protocol")
    env_threads: int = option(0, "Atari: threads of the C++ vector environment (0: ale-py's default)")
    torch_threads: int = option(0, "CPU threads for torch (0: torch's default); 1 is fastest for small mlps")
    target_return: typing.Optional[float] = option(None, "stop once the mean return of the last return_window episodes reaches this (none: never)")
    return_window: int = option(100, "episodes in the running mean of the return that is logged")
    run_dir: typing.Optional[str] = option(None, "folder for config.json, metrics.csv and checkpoint.pt (default runs/<env>-<seed>-<time>)")
    save_every: int = option(50, "write a checkpoint every this many iterations, and at the end")
    tensorboard: bool = option(False, "also write TensorBoard scalars to the run folder (needs the tensorboard package)")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_steps // self.batch_size

    @property
    def env_id(self) -> str:
        return PRESETS[self.env][0] if self.env in PRESETS else self.env


# Per-environment choices live here, never inside the generic code. A preset is a
# gymnasium id plus the fields it changes from the Config defaults above.
PRESETS: dict[str, tuple[str, dict]] = {
    "CartPole": ("CartPole-v1", dict(
        total_steps=150_000, num_envs=32, num_steps=16, num_minibatches=2, update_epochs=8,
        learning_rate=2e-3, gamma=0.98, gae_lambda=0.8, ent_coef=0.0, activation="relu",
        torch_threads=1, target_return=475.0,
    )),
    "Pendulum": ("Pendulum-v1", dict(
        total_steps=200_000, num_envs=4, num_steps=512, num_minibatches=32, update_epochs=10,
        learning_rate=5e-4, gamma=0.9, gae_lambda=0.95, ent_coef=0.0, log_std_init=-0.5,
        normalize_observations=True, scale_rewards=True, torch_threads=1,
    )),
    "Pong": ("ALE/Pong-v5", dict(
        total_steps=3_000_000, num_envs=16, num_steps=64, num_minibatches=4, update_epochs=4,
        learning_rate=2.5e-4, ent_coef=0.01, clip_coef=0.1, clip_rewards=True, cnn="small",
        return_window=20, save_every=20,
    )),
}
# Defaults for an environment that has no preset, chosen from its spaces.
ATARI_DEFAULTS = {key: value for key, value in PRESETS["Pong"][1].items() if key != "return_window"}
CONTINUOUS_DEFAULTS = dict(
    total_steps=1_000_000, num_envs=1, num_steps=2048, num_minibatches=32, update_epochs=10,
    learning_rate=3e-4, ent_coef=0.0, normalize_observations=True, scale_rewards=True,
)


class UserError(Exception):
    """A problem with the input: the message names it and says how to fix it."""


# ---------------------------------------------------------------------------------------
# 2. Networks
# ---------------------------------------------------------------------------------------

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights and zero biases, the initialization of the PPO paper's code."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(sizes: typing.Sequence[int], activation: str, output_gain: float) -> nn.Sequential:
    """Linear layers of the given sizes with an activation between them, none after the last.

    Hidden layers get gain sqrt(2); the output gain is chosen by the caller (0.01 for a
    policy head, so the first policy is near uniform; 1 for a value head).
    """
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = index == len(sizes) - 2
        layers.append(layer_init(nn.Linear(fan_in, fan_out), output_gain if last else math.sqrt(2)))
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


# (out_channels, kernel, stride) of each convolution, then the width of the linear layer.
CNN_LAYERS = {
    "nature": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512),  # Mnih et al. 2015, used by the PPO paper
    "small": ([(16, 8, 4), (32, 4, 2)], 256),  # Mnih et al. 2013, about 3x cheaper
}


def cnn(input_shape: tuple[int, int, int], kind: str) -> nn.Sequential:
    """Convolutions with ReLU, then one linear layer: (B, C, H, W) float -> (B, features)."""
    channels = input_shape[0]
    convolutions: list[nn.Module] = []
    for out_channels, kernel, stride in CNN_LAYERS[kind][0]:
        convolutions += [layer_init(nn.Conv2d(channels, out_channels, kernel, stride), math.sqrt(2)), nn.ReLU()]
        channels = out_channels
    convolutions.append(nn.Flatten())
    body = nn.Sequential(*convolutions)
    with torch.no_grad():
        flattened_size = body(torch.zeros(1, *input_shape)).shape[1]  # computed, never hard-coded
    features = CNN_LAYERS[kind][1]
    return nn.Sequential(*body, layer_init(nn.Linear(flattened_size, features), math.sqrt(2)), nn.ReLU())


class FramePreStacking(nn.Module):
    """The last three frames of a game as position, velocity and acceleration images.

    A single frame shows where the ball is but not where it goes. Instead of handing the
    network a raw stack of frames, this layer hands it the finite differences that a
    physicist would: with frames f(t-2), f(t-1), f(t),
        position     = f(t)
        velocity     = f(t) - f(t-1)                  (first backward difference)
        acceleration = f(t) - 2 f(t-1) + f(t-2)       (second backward difference)
    The environment keeps the last three grayscale 84x84 frames; this layer runs on the
    device, on the whole (B, 3, H, W) uint8 batch, so observations stay uint8 (4x smaller)
    until they reach the device and no Python runs per environment. On the first two steps
    of a game the older frames are zeros (ale-py pads the stack), so velocity and
    acceleration then show the whole first frame.
    """

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        # Differences of the integer pixel values are exact in float32; scale afterwards.
        # Writing into one buffer is 4x faster on a CPU than computing and stacking images.
        frames = frames.float()  # (B, 3, H, W): f(t-2), f(t-1), f(t)
        images = torch.empty_like(frames)  # (B, 3, H, W): position, velocity, acceleration
        images[:, 0] = frames[:, 2]
        torch.sub(frames[:, 2], frames[:, 1], out=images[:, 1])  # velocity
        torch.sub(frames[:, 1], frames[:, 0], out=images[:, 2])  # the velocity one frame earlier
        torch.sub(images[:, 1], images[:, 2], out=images[:, 2])  # acceleration: change of velocity
        return images.mul_(1.0 / 255.0)


# ---------------------------------------------------------------------------------------
# 3. Actors and critic
# ---------------------------------------------------------------------------------------


class Actor(nn.Module):
    """A policy pi(a|s). `forward` maps features of s to the distribution's parameters
    (log-probabilities or a mean); the other methods are the distribution's math, written
    out so that each formula is visible (tests check them against torch.distributions)."""

    def sample(self, parameters: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, parameters: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), one number per sample: (B,)."""
        raise NotImplementedError

    def entropy(self, parameters: torch.Tensor) -> torch.Tensor:
        """H[pi(.|s)], one number per sample: (B,)."""
        raise NotImplementedError

    def mode(self, parameters: torch.Tensor) -> torch.Tensor:
        """The most likely action, for deterministic evaluation."""
        raise NotImplementedError


class CategoricalActor(Actor):
    """Discrete actions: pi(a|s) = softmax(logits(s))_a."""

    def __init__(self, logits_net: nn.Module):
        super().__init__()
        self.logits_net = logits_net

    def forward(self, features):
        return torch.log_softmax(self.logits_net(features), dim=-1)  # (B, num_actions): log pi(.|s)

    def sample(self, log_probs):
        return torch.multinomial(log_probs.exp(), num_samples=1).squeeze(-1)  # (B,)

    def log_prob(self, log_probs, actions):
        return log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self, log_probs):
        return -(log_probs.exp() * log_probs).sum(dim=-1)  # H = -sum_a pi(a) log pi(a)

    def mode(self, log_probs):
        return log_probs.argmax(dim=-1)


class GaussianActor(Actor):
    """Continuous actions: a diagonal Gaussian N(mean(s), diag(std^2)) whose mean depends
    on the state and whose log standard deviation is a learned vector that does not (as in
    the PPO paper's MuJoCo experiments). Actions are sampled unbounded; clipping to the
    action space happens only on the way to the environment (see `Runner.collect`)."""

    def __init__(self, mean_net: nn.Module, action_dim: int, log_std_init: float):
        super().__init__()
        self.mean_net = mean_net
        self.log_std = nn.Parameter(torch.full((action_dim,), log_std_init))

    def forward(self, features):
        return self.mean_net(features)  # (B, action_dim)

    def sample(self, mean):
        return mean + self.log_std.exp() * torch.randn_like(mean)

    def log_prob(self, mean, actions):
        # log N(a; mu, sigma) = -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2 per
        # dimension; the dimensions are independent, so the joint log-density is their sum.
        standardized = (actions - mean) * torch.exp(-self.log_std)
        return (-0.5 * standardized**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)

    def entropy(self, mean):
        # H[N(mu, sigma)] = 1/2 + log(2 pi)/2 + log sigma per dimension, the same for every state.
        per_state = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum()
        return per_state.expand(mean.shape[0])

    def mode(self, mean):
        return mean


class Critic(nn.Module):
    """The state-value function V(s)."""

    def __init__(self, value_net: nn.Module):
        super().__init__()
        self.value_net = value_net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features).squeeze(-1)  # (B, 1) -> (B,)


class ActorCritic(nn.Module):
    """An encoder shared by an actor and a critic.

    For vector observations the encoder is the identity and the actor and critic are two
    separate mlps; for images it is FramePreStacking and a cnn, shared by both heads.
    """

    def __init__(self, encoder: nn.Module, actor: Actor, critic: Critic):
        super().__init__()
        self.encoder, self.actor, self.critic = encoder, actor, critic

    def act(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions for a batch of states: actions, their log-probs (B,), values (B,)."""
        features = self.encoder(observations)
        parameters = self.actor(features)
        actions = self.actor.sample(parameters)
        return actions, self.actor.log_prob(parameters, actions), self.critic(features)

    def evaluate(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), entropy and V(s) of stored samples under the current parameters."""
        features = self.encoder(observations)
        parameters = self.actor(features)
        return self.actor.log_prob(parameters, actions), self.actor.entropy(parameters), self.critic(features)

    def value(self, observations: torch.Tensor) -> torch.Tensor:
        return self.critic(self.encoder(observations))

    def deterministic_action(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor.mode(self.actor(self.encoder(observations)))


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise UserError unless the networks here can take these spaces."""
    vector = isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1
    frames = (isinstance(observation_space, gym.spaces.Box) and observation_space.dtype == np.uint8
              and len(observation_space.shape) == 3 and observation_space.shape[0] == 3)
    if not (vector or frames):
        raise UserError(f"observations {observation_space} are not supported; ppo.py takes 1-D Box vectors "
                        "or (3, H, W) uint8 frame stacks (flatten or wrap the environment)")
    if not (isinstance(action_space, gym.spaces.Discrete)
            or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        raise UserError(f"actions {action_space} are not supported; ppo.py takes Discrete or 1-D Box actions")


def build_actor_critic(observation_space: gym.Space, action_space: gym.Space, config: Config) -> ActorCritic:
    """Choose the network from the observation space and the actor from the action space."""
    check_spaces(observation_space, action_space)
    image = len(observation_space.shape) == 3
    if image:
        encoder = nn.Sequential(FramePreStacking(), cnn(observation_space.shape, config.cnn))
        features = CNN_LAYERS[config.cnn][1]
        hidden: tuple[int, ...] = ()  # the heads are single linear layers on the cnn features
    else:
        encoder, features, hidden = nn.Identity(), observation_space.shape[0], config.hidden_sizes
    if isinstance(action_space, gym.spaces.Discrete):
        actor: Actor = CategoricalActor(mlp((features, *hidden, int(action_space.n)), config.activation, 0.01))
    else:
        action_dim = action_space.shape[0]
        actor = GaussianActor(mlp((features, *hidden, action_dim), config.activation, 0.01), action_dim, config.log_std_init)
    critic = Critic(mlp((features, *hidden, 1), config.activation, 1.0))
    return ActorCritic(encoder, actor, critic)


# ---------------------------------------------------------------------------------------
# 4. Rollout buffer and GAE
# ---------------------------------------------------------------------------------------


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_ended: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """GAE(gamma, lambda) advantages of a rollout; every argument is (T, N).

    next_values[t] is V(s_{t+1}), the value of the state that really followed step t: the
    final observation of the episode when it ended at t, never a reset observation.
        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)                     [PPO eq. 12]
        A_t     = sum_l (gamma * lambda)^l * delta_{t+l}                [GAE eq. 16]
                = delta_t + gamma * lambda * A_{t+1}                    [PPO eq. 11]
    Two endings are treated differently. After `terminated` (the pole fell) the episode
    has no future, so V(s_{t+1}) counts as 0. After a truncation (a time limit) the
    future exists but was not seen, so delta_t bootstraps from V(final observation).
    Either way the sum stops at the episode's end: A_{t+1} belongs to another episode.
    """
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        next_value = next_values[t] * (1.0 - terminated[t])
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * gae_lambda * (1.0 - episode_ended[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages


class PPOBuffer:
    """One rollout of T steps from N environments, stored as (T, N, ...) arrays.

    Vector environments here reset in NEXT_STEP mode: the step that ends an episode
    returns its real final observation, and the following call only resets (its action is
    ignored, its reward is 0). So obs[t + 1] after an ending at t is the final observation,
    which makes values[t + 1] exactly the V(final observation) that truncation needs; and
    the reset step itself is no transition, so it is marked invalid and left out of the loss.
    """

    def __init__(self, num_steps: int, num_envs: int, observation_space: gym.Space, action_space: gym.Space, device: torch.device):
        obs_dtype = torch.uint8 if observation_space.dtype == np.uint8 else torch.float32
        action_dtype = torch.int64 if isinstance(action_space, gym.spaces.Discrete) else torch.float32
        shape = (num_steps, num_envs)
        self.observations = torch.zeros(shape + observation_space.shape, dtype=obs_dtype, device=device)  # (T, N, *obs_shape)
        self.actions = torch.zeros(shape + action_space.shape, dtype=action_dtype, device=device)  # (T, N, *action_shape)
        self.log_probs = torch.zeros(shape, device=device)  # (T, N)
        self.values = torch.zeros(shape, device=device)  # (T, N)
        # Written from the environment's numpy arrays, moved to the device once per rollout.
        self.rewards = np.zeros(shape, dtype=np.float32)  # (T, N)
        self.terminated = np.zeros(shape, dtype=np.float32)  # (T, N)
        self.episode_ended = np.zeros(shape, dtype=np.float32)  # (T, N) terminated or truncated
        self.valid = np.zeros(shape, dtype=bool)  # (T, N) False on autoreset steps
        self.device = device

    def store(self, t, observations, actions, log_probs, values, rewards, terminated, truncated, valid):
        self.observations[t] = observations
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.values[t] = values
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.episode_ended[t] = terminated | truncated
        self.valid[t] = valid

    def advantages_and_returns(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and the value targets R_t = A_t + V(s_t), both (T, N)."""
        next_values = torch.cat((self.values[1:], last_values.unsqueeze(0)))  # (T, N): V(s_{t+1})
        def to_device(array):
            return torch.from_numpy(array).to(self.device)
        advantages = generalized_advantages(
            to_device(self.rewards), self.values, next_values,
            to_device(self.terminated), to_device(self.episode_ended), gamma, gae_lambda,
        )
        return advantages, advantages + self.values

    def flatten_valid(self, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of real transitions: every (T, N, ...) array as (B, ...)."""
        valid = torch.from_numpy(self.valid).to(self.device)
        return {
            "observations": self.observations[valid], "actions": self.actions[valid],
            "log_probs": self.log_probs[valid], "values": self.values[valid],
            "advantages": advantages[valid], "returns": returns[valid],
        }


# ---------------------------------------------------------------------------------------
# 5. Running normalization (continuous control)
# ---------------------------------------------------------------------------------------


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged exactly (Chan et al. 1979)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 0

    def update(self, batch: np.ndarray) -> None:
        if batch.shape[0] == 0:  # e.g. every environment is on its autoreset step
            return
        batch_mean, batch_var, batch_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * batch_count / total
        squares = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = squares / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": torch.tensor(self.mean), "var": torch.tensor(self.var), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].numpy().copy(), state["var"].numpy().copy(), state["count"]


class ObservationNormalizer:
    """obs -> clip((obs - mean) / std, -c, c), with mean and std measured as training runs."""

    def __init__(self, shape: tuple[int, ...], clip: float):
        self.statistics, self.clip = RunningMeanStd(shape), clip

    def __call__(self, observations: np.ndarray, update: bool) -> np.ndarray:
        if update:
            self.statistics.update(observations)
        scaled = (observations - self.statistics.mean) / np.sqrt(self.statistics.var + 1e-8)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)


class RewardScaler:
    """r -> r / std(G), where G is each environment's running discounted return.

    Scaling (not centering) keeps the sign of every reward; it gives the value function
    targets of a similar size in every environment (Engstrom et al. 2020, "reward scaling").
    """

    def __init__(self, num_envs: int, gamma: float):
        self.statistics, self.gamma = RunningMeanStd(), gamma
        self.discounted_returns = np.zeros(num_envs)

    def __call__(self, rewards: np.ndarray, episode_ended: np.ndarray, valid: np.ndarray) -> np.ndarray:
        self.discounted_returns = self.discounted_returns * self.gamma + rewards
        self.statistics.update(self.discounted_returns[valid])
        self.discounted_returns[episode_ended] = 0.0
        return (rewards / np.sqrt(self.statistics.var + 1e-8)).astype(np.float32)

    def state_dict(self) -> dict:
        return {"statistics": self.statistics.state_dict(), "discounted_returns": torch.from_numpy(self.discounted_returns.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.statistics.load_state_dict(state["statistics"])
        self.discounted_returns = state["discounted_returns"].numpy().copy()


# ---------------------------------------------------------------------------------------
# 6. Environments
# ---------------------------------------------------------------------------------------


def observation_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Frames stay uint8 until the device (FramePreStacking converts them); vectors become float32."""
    return torch.as_tensor(array, dtype=torch.uint8 if array.dtype == np.uint8 else torch.float32, device=device)


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def check_environment(env_id: str) -> None:
    """Raise UserError if env_id cannot be made here: unknown, or its package is missing."""
    if is_atari(env_id):
        if importlib.util.find_spec("ale_py") is None:
            raise UserError(f"{env_id} needs the Atari emulator: pip install 'ale-py>=0.11' (it ships the game ROMs)")
        import ale_py
        gym.register_envs(ale_py)
    if env_id not in gym.registry:
        known = list(PRESETS) + list(gym.registry)
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.registry for the known ids"
        raise UserError(f"unknown environment {env_id!r}: {hint}")


def make_environments(config: Config, num_envs: int, render_mode: typing.Optional[str] = None) -> gym.vector.VectorEnv:
    """N copies of the environment behind one vectorized step, all in NEXT_STEP autoreset.

    Atari uses ale-py's C++ vector environment: it steps the games on threads, repeats
    each action for frame_skip frames, max-pools the last two, converts to grayscale,
    resizes to 84x84, keeps the last 3 frames (for FramePreStacking) and presses FIRE
    and does up to 30 no-ops on reset. Episodes end at game over or 108,000 frames.
    Rewards come unclipped, so the logged return is the game score.
    Environments with a numpy-vectorized implementation (CartPole) use it; any other
    runs its copies one after another in this process.
    """
    env_id = config.env_id
    check_environment(env_id)
    if is_atari(env_id):
        envs = gym.make_vec(
            env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
            stack_num=3, frameskip=config.frame_skip, repeat_action_probability=config.repeat_action_probability,
            reward_clipping=False, episodic_life=False, num_threads=config.env_threads,
        )
    elif gym.spec(env_id).vector_entry_point is not None and render_mode is None:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    else:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", render_mode=render_mode,
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP})
    mode = envs.metadata.get("autoreset_mode")
    if mode != gym.vector.AutoresetMode.NEXT_STEP:  # the buffer's masking relies on it
        envs.close()
        raise UserError(f"{env_id}'s vector environment resets in {mode} mode; ppo.py needs NEXT_STEP")
    return envs


# Vector environments whose whole state is numpy arrays plus one random generator.
SAVABLE_ENVIRONMENTS = (CartPoleVectorEnv,)


def environment_state(envs: gym.vector.VectorEnv) -> typing.Optional[dict]:
    """The complete state of a numpy-vectorized environment, so a resumed run continues
    the very same episodes; None for the others (Atari's state lives in C++)."""
    unwrapped = envs.unwrapped
    if not isinstance(unwrapped, SAVABLE_ENVIRONMENTS):
        return None
    arrays = {name: torch.from_numpy(value.copy()) for name, value in vars(unwrapped).items() if isinstance(value, np.ndarray)}
    return {"arrays": arrays, "rng": unwrapped.np_random.bit_generator.state}


def restore_environment_state(envs: gym.vector.VectorEnv, state: dict) -> None:
    unwrapped = envs.unwrapped
    for name, value in state["arrays"].items():
        setattr(unwrapped, name, value.numpy().copy())
    unwrapped.np_random.bit_generator.state = state["rng"]


class Runner:
    """Steps N environments with the current policy to fill a PPOBuffer.

    It keeps what carries over from one rollout to the next: the current observations,
    each environment's running episode return, which environments only reset on their
    next step, the recent finished returns, and the normalizers.
    """

    def __init__(self, envs: gym.vector.VectorEnv, config: Config, device: torch.device):
        self.envs, self.config, self.device = envs, config, device
        num_envs, shape = envs.num_envs, envs.single_observation_space.shape
        self.continuous = isinstance(envs.single_action_space, gym.spaces.Box)
        if self.continuous:
            self.action_low = torch.as_tensor(envs.single_action_space.low, device=device)
            self.action_high = torch.as_tensor(envs.single_action_space.high, device=device)
        self.observation_normalizer = ObservationNormalizer(shape, config.observation_clip) if config.normalize_observations else None
        self.reward_scaler = RewardScaler(num_envs, config.gamma) if config.scale_rewards else None
        self.episode_returns = np.zeros(num_envs)  # unscaled and unclipped: the game score
        self.autoreset = np.zeros(num_envs, dtype=bool)  # True where the next step only resets
        self.recent_returns: deque = deque(maxlen=config.return_window)
        self.raw_observations, _ = envs.reset(seed=config.seed)
        self.observations = self.observe(self.raw_observations, update=True)

    def observe(self, raw: np.ndarray, update: bool) -> torch.Tensor:
        """Environment arrays -> what the networks see, on the device."""
        if self.observation_normalizer:
            raw = self.observation_normalizer(raw, update)
        return observation_tensor(raw, self.device)

    @torch.no_grad()
    def collect(self, agent: ActorCritic, buffer: PPOBuffer) -> tuple[int, torch.Tensor]:
        """Fill the buffer with T steps; return the number of real environment steps and
        V(s_T) of the observations after the last step (N,), for bootstrapping."""
        steps = 0
        for t in range(self.config.num_steps):
            actions, log_probs, values = agent.act(self.observations)
            # The buffer keeps the sampled action and its log-prob; only what is sent to
            # the environment is clipped to the action space.
            sent = torch.max(torch.min(actions, self.action_high), self.action_low) if self.continuous else actions
            raw_next, rewards, terminated, truncated, _ = self.envs.step(sent.cpu().numpy())
            valid = ~self.autoreset
            episode_ended = terminated | truncated
            self.episode_returns += rewards
            for index in np.flatnonzero(episode_ended):
                self.recent_returns.append(float(self.episode_returns[index]))
            self.episode_returns[episode_ended] = 0.0
            if self.config.clip_rewards:
                rewards = np.sign(rewards)
            if self.reward_scaler:
                rewards = self.reward_scaler(rewards, episode_ended, valid)
            buffer.store(t, self.observations, actions, log_probs, values, rewards, terminated, truncated, valid)
            self.raw_observations, self.autoreset = raw_next, episode_ended
            self.observations = self.observe(raw_next, update=True)
            steps += int(valid.sum())
        return steps, agent.value(self.observations)

    def state_dict(self) -> dict:
        return {
            "environment": environment_state(self.envs),
            "raw_observations": torch.from_numpy(np.array(self.raw_observations)),
            "episode_returns": torch.from_numpy(self.episode_returns.copy()),
            "autoreset": torch.from_numpy(self.autoreset.copy()),
            "recent_returns": list(self.recent_returns),
            "observation_normalizer": self.observation_normalizer.statistics.state_dict() if self.observation_normalizer else None,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
        }

    def load_state_dict(self, state: dict, reset_seed: int) -> None:
        if self.observation_normalizer:
            self.observation_normalizer.statistics.load_state_dict(state["observation_normalizer"])
        if self.reward_scaler:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.recent_returns.extend(state["recent_returns"])
        if state["environment"] is not None and environment_state(self.envs) is not None:
            restore_environment_state(self.envs, state["environment"])
            self.raw_observations = state["raw_observations"].numpy().copy()
            self.episode_returns = state["episode_returns"].numpy().copy()
            self.autoreset = state["autoreset"].numpy().copy()
        else:
            print("note: this environment's state cannot be saved; resumed episodes start from a fresh reset")
            self.raw_observations, _ = self.envs.reset(seed=reset_seed)
            self.episode_returns[:], self.autoreset[:] = 0.0, False
            if self.reward_scaler:
                self.reward_scaler.discounted_returns[:] = 0.0
        # Not counted in the statistics: the saved observation already was, and a fresh
        # reset observation is left out so that a resume does not change them.
        self.observations = self.observe(self.raw_observations, update=False)


# ---------------------------------------------------------------------------------------
# 7. The loss
# ---------------------------------------------------------------------------------------


def clipped_surrogate_loss(new_log_probs, old_log_probs, advantages, clip_coef):
    """-L^CLIP, to be minimized.

        r_t(theta) = pi_theta(a_t|s_t) / pi_theta_old(a_t|s_t)                 [PPO eq. 6]
        L^CLIP     = E_t[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ]      [PPO eq. 7]
    The minimum makes the objective a pessimistic bound: once r_t has moved past the clip
    range in the direction the advantage favours, the gradient is exactly zero.
    """
    ratio = torch.exp(new_log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(values, returns):
    """(V_theta(s_t) - V_t^targ)^2 / 2, the squared-error term of [PPO eq. 9]."""
    return 0.5 * ((values - returns) ** 2).mean()


def ppo_loss(clip_loss, critic_loss, entropy, vf_coef, ent_coef):
    """-L^{CLIP+VF+S} = -L^CLIP + c1 L^VF - c2 S[pi]                          [PPO eq. 9]"""
    return clip_loss + vf_coef * critic_loss - ent_coef * entropy


def approx_kl(new_log_probs, old_log_probs):
    """KL(pi_old || pi_new) estimated as E[(r - 1) - log r]: unbiased and never negative."""
    log_ratio = new_log_probs - old_log_probs
    return (torch.exp(log_ratio) - 1.0 - log_ratio).mean()


def clip_fraction(new_log_probs, old_log_probs, clip_coef):
    """Share of samples whose ratio is outside [1 - eps, 1 + eps]."""
    return ((torch.exp(new_log_probs - old_log_probs) - 1.0).abs() > clip_coef).float().mean()


def explained_variance(values, returns):
    """1 - Var[R - V] / Var[R]: 1 is a perfect critic, 0 no better than a constant."""
    variance = returns.var()
    return float("nan") if variance == 0 else float(1.0 - (returns - values).var() / variance)


def normalize(advantages):
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


# ---------------------------------------------------------------------------------------
# 8. Checkpoints
# ---------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 1
# Fields that decide the shapes of the networks and of the saved state: a checkpoint is
# only resumable if they agree.
FIXED_ON_RESUME = ("env", "hidden_sizes", "activation", "cnn", "normalize_observations",
                   "num_envs", "num_steps", "scale_rewards")


def as_flag(name: str, value) -> str:
    """The command-line flag that sets a Config field to value."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"


def save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    temporary = f"{path}.{os.getpid()}.tmp"  # unique, so two writers never share one
    torch.save(state, temporary)
    os.replace(temporary, path)


def config_from_dict(values: dict) -> Config:
    values = dict(values)
    values["hidden_sizes"] = tuple(values["hidden_sizes"])
    return Config(**values)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint as plain tensors and containers: never executes code from the file."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}: check the path (runs write runs/<env>-<seed>-<time>/checkpoint.pt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                        "it may be truncated or from another program; use one written by ppo.py") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a ppo.py checkpoint of format {CHECKPOINT_FORMAT}; use one written by this ppo.py")
    try:
        checkpoint["config"] = config_from_dict(checkpoint["config"])
    except (KeyError, TypeError) as error:
        raise UserError(f"{path} holds a config this ppo.py does not know ({error}); use a checkpoint written by this version") from None
    return checkpoint


def check_compatible(checkpoint_config: Config, config: Config, path: str) -> None:
    for name in FIXED_ON_RESUME:
        saved, wanted = getattr(checkpoint_config, name), getattr(config, name)
        if name == "env":
            saved, wanted = checkpoint_config.env_id, config.env_id
        if saved != wanted:
            raise UserError(f"{path} was trained with {name}={saved!r}, not {wanted!r}; "
                            f"resume with {as_flag(name, getattr(checkpoint_config, name))} or start a new run")


def load_model_state(agent: nn.Module, state: dict, path: str) -> None:
    try:
        agent.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"the networks in {path} have other shapes than this run's; "
                        "use the flags it was trained with, or start a new run") from None


# ---------------------------------------------------------------------------------------
# 9. Training
# ---------------------------------------------------------------------------------------


class TrainingDiverged(Exception):
    """A loss or parameter became NaN or infinite."""


def check_config(config: Config) -> None:
    """Raise UserError for a hyperparameter that cannot work."""
    for name in ("total_steps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                 "return_window", "save_every", "frame_skip"):
        if getattr(config, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(config, name)}")
    if config.batch_size % config.num_minibatches or config.batch_size // config.num_minibatches < 8:
        raise UserError(f"the batch of num_envs * num_steps = {config.batch_size} steps does not split into "
                        f"{config.num_minibatches} minibatches of at least 8 steps; choose fewer --num-minibatches "
                        f"(a divisor of {config.batch_size}) or more --num-envs or --num-steps")
    if not 0 <= config.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32), got {config.seed}")
    if config.total_steps < config.batch_size:
        raise UserError(f"--total-steps {config.total_steps} is less than one batch ({config.batch_size} steps); raise it")
    for name in ("gamma", "gae_lambda"):
        if not 0 < getattr(config, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(config, name)}")
    if not 0 < config.clip_coef < 1:
        raise UserError(f"--clip-coef must be in (0, 1), got {config.clip_coef}")
    if not 0 <= config.repeat_action_probability < 1:
        raise UserError(f"--repeat-action-probability must be in [0, 1), got {config.repeat_action_probability}")
    for name in ("learning_rate", "vf_coef", "max_grad_norm", "observation_clip"):
        if not getattr(config, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    if not config.ent_coef >= 0:
        raise UserError(f"--ent-coef must be zero or positive, got {config.ent_coef}")
    if config.target_kl is not None and not config.target_kl > 0:
        raise UserError(f"--target-kl must be positive (or none), got {config.target_kl}")
    if not config.hidden_sizes or min(config.hidden_sizes) <= 0:
        raise UserError(f"--hidden-sizes must be one or more positive widths, got {config.hidden_sizes}")
    if config.activation not in ACTIVATIONS:
        raise UserError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {config.activation!r}")
    if config.cnn not in CNN_LAYERS:
        raise UserError(f"--cnn must be one of {', '.join(CNN_LAYERS)}, got {config.cnn!r}")


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices; use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r} is not supported; use cpu or cuda")
    return device


def default_run_dir(config: Config) -> str:
    name = config.env_id.replace("/", "-")
    return os.path.join("runs", f"{name}-{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


METRIC_COLUMNS = ("iteration", "global_step", "wall_seconds", "mean_return", "episodes", "policy_loss",
                  "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
                  "steps_per_second", "learning_rate")


class MetricsLog:
    """One line per iteration on stdout, in metrics.csv and, if asked, in TensorBoard."""

    def __init__(self, run_dir: str, tensorboard: bool, append: bool):
        path = os.path.join(run_dir, "metrics.csv")
        write_header = not (append and os.path.exists(path))
        self.file = open(path, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=METRIC_COLUMNS)
        if write_header:
            self.writer.writeheader()
        self.tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(run_dir)

    def write(self, row: dict, num_iterations: int) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard:
            for name in METRIC_COLUMNS[2:]:
                self.tensorboard.add_scalar(name, row[name], row["global_step"])
        print(f"iter {row['iteration']:>4}/{num_iterations} | step {row['global_step']:>9,} | "
              f"{row['steps_per_second']:>6,.0f} sps | return {row['mean_return']:8.2f} ({row['episodes']} ep) | "
              f"policy {row['policy_loss']:+.4f} value {row['value_loss']:.4f} entropy {row['entropy']:.3f} "
              f"kl {row['approx_kl']:.4f} clip {row['clip_fraction']:.3f} ev {row['explained_variance']:+.2f}", flush=True)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard:
            self.tensorboard.close()


class InterruptFlag:
    """The first Ctrl-C asks the loop to save and stop after this iteration; the second
    stops at once (the last periodic checkpoint stays)."""

    def __init__(self):
        self.raised = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        print("\ninterrupted: finishing this iteration, then saving a checkpoint (Ctrl-C again to quit without saving)", flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1), written out. It computes what torch.optim.Adam
    computes; it is here because building a torch.optim optimizer imports torch._dynamo,
    about 1 second, a fifth of a whole CartPole run. Per parameter tensor, with gradient g:
        m <- beta1 m + (1 - beta1) g          first moment
        v <- beta2 v + (1 - beta2) g^2        second moment
        theta <- theta - alpha / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
    The foreach calls apply one formula to all tensors at once (one call, not one per tensor).
    """

    def __init__(self, parameters: list[torch.Tensor], learning_rate: float, betas=(0.9, 0.999), eps: float = 1e-5):
        self.parameters, self.learning_rate, self.betas, self.eps = parameters, learning_rate, betas, eps
        self.steps = 0
        self.first_moments = [torch.zeros_like(p) for p in parameters]
        self.second_moments = [torch.zeros_like(p) for p in parameters]

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        gradients = [p.grad for p in self.parameters]
        torch._foreach_lerp_(self.first_moments, gradients, 1 - beta1)
        torch._foreach_mul_(self.second_moments, beta2)
        torch._foreach_addcmul_(self.second_moments, gradients, gradients, 1 - beta2)
        denominators = torch._foreach_sqrt(self.second_moments)
        torch._foreach_div_(denominators, math.sqrt(1 - beta2**self.steps))
        torch._foreach_add_(denominators, self.eps)
        step_size = self.learning_rate / (1 - beta1**self.steps)
        torch._foreach_addcdiv_(self.parameters, self.first_moments, denominators, -step_size)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "first_moments": self.first_moments, "second_moments": self.second_moments}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for mine, saved in zip(self.first_moments + self.second_moments, state["first_moments"] + state["second_moments"]):
            mine.copy_(saved)


def update(agent, optimizer, parameters, batch, config: Config) -> dict[str, float]:
    """K epochs of shuffled minibatch steps on -L^{CLIP+VF+S}; returns the means over all
    minibatch steps taken (not the last minibatch's values)."""
    batch_size = batch["advantages"].shape[0]
    totals = torch.zeros(5, device=batch["advantages"].device)  # policy, value, entropy, kl, clip
    steps = 0
    for _ in range(config.update_epochs):
        order = torch.randperm(batch_size, device=batch["advantages"].device)
        for indices in torch.tensor_split(order, config.num_minibatches):
            new_log_probs, entropy, values = agent.evaluate(batch["observations"][indices], batch["actions"][indices])
            old_log_probs = batch["log_probs"][indices]
            kl = approx_kl(new_log_probs.detach(), old_log_probs)
            if config.target_kl is not None and kl.item() > config.target_kl:
                return mean_losses(totals, steps)  # early stop: the policy moved far enough
            advantages = batch["advantages"][indices]
            if config.normalize_advantages:
                advantages = normalize(advantages)
            policy_loss = clipped_surrogate_loss(new_log_probs, old_log_probs, advantages, config.clip_coef)
            critic_loss = value_loss(values, batch["returns"][indices])
            # With c2 = 0 the entropy is only a diagnostic: detached, backward skips its graph.
            entropy = entropy.mean() if config.ent_coef > 0 else entropy.detach().mean()
            loss = ppo_loss(policy_loss, critic_loss, entropy, config.vf_coef, config.ent_coef)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, config.max_grad_norm, foreach=True)
            optimizer.step()
            totals += torch.stack((policy_loss.detach(), critic_loss.detach(), entropy.detach(), kl,
                                   clip_fraction(new_log_probs.detach(), old_log_probs, config.clip_coef)))
            steps += 1
    return mean_losses(totals, steps)


def mean_losses(totals: torch.Tensor, steps: int) -> dict[str, float]:
    means = (totals / max(steps, 1)).tolist()
    return dict(zip(("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"), means))


def all_finite(agent: nn.Module, metrics: dict) -> bool:
    losses_finite = all(math.isfinite(metrics[name]) for name in ("policy_loss", "value_loss", "entropy"))
    return losses_finite and all(bool(torch.isfinite(p).all()) for p in agent.parameters())


def ppo(config: Config, resume: typing.Optional[str] = None) -> dict:
    """Train with PPO as `config` says; return the final metrics.

    Everything comes in through the arguments. `resume` is a checkpoint path: training
    continues from it (networks, optimizer, normalizers, random state and, where the
    environment allows, the episodes in progress) up to config.total_steps.
    """
    check_config(config)
    device = resolve_device(config.device)
    checkpoint = load_checkpoint(resume) if resume else None
    if checkpoint:
        check_compatible(checkpoint["config"], config, resume)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard")
    run_dir = config.run_dir or (os.path.dirname(resume) if resume else default_run_dir(config))
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    if not resume and os.path.exists(checkpoint_path):
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {checkpoint_path}, or choose another --run-dir")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {run_dir} ({error.strerror}); choose another --run-dir") from None
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)

    torch.manual_seed(config.seed)
    envs = make_environments(config, config.num_envs)
    agent = build_actor_critic(envs.single_observation_space, envs.single_action_space, config).to(device)
    parameters = list(agent.parameters())
    optimizer = Adam(parameters, config.learning_rate)
    buffer = PPOBuffer(config.num_steps, config.num_envs, envs.single_observation_space, envs.single_action_space, device)
    runner = Runner(envs, config, device)
    start_iteration, global_step = 0, 0
    if checkpoint:
        load_model_state(agent, checkpoint["model"], resume)
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        runner.load_state_dict(checkpoint["runner"], reset_seed=config.seed + global_step)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)

    with open(os.path.join(run_dir, "config.json"), "w") as file:
        json.dump(dataclasses.asdict(config), file, indent=2)
    log = MetricsLog(run_dir, config.tensorboard, append=bool(resume))

    def save(completed_iterations: int) -> None:
        save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(config), "env_id": config.env_id,
            "model": agent.state_dict(), "optimizer": optimizer.state_dict(), "runner": runner.state_dict(),
            "iteration": completed_iterations, "global_step": global_step,
            "rng": {"torch": torch.get_rng_state(),  # on a GPU, sampling draws from its own generator
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        })

    metrics: dict = {"global_step": global_step, "mean_return": float("nan")}
    status, completed = "finished", start_iteration
    start_time, start_step = time.time(), global_step
    try:
        with InterruptFlag() as interrupt:
            for iteration in range(start_iteration, config.num_iterations):
                learning_rate = config.learning_rate * (1.0 - iteration / config.num_iterations if config.anneal_lr else 1.0)
                optimizer.learning_rate = learning_rate

                # Phase 1: T steps in each of the N environments with the current policy.
                steps, last_values = runner.collect(agent, buffer)
                global_step += steps

                # Phase 2: advantages, then K epochs of minibatch updates.
                advantages, returns = buffer.advantages_and_returns(last_values, config.gamma, config.gae_lambda)
                batch = buffer.flatten_valid(advantages, returns)
                losses = update(agent, optimizer, parameters, batch, config)
                if not all_finite(agent, losses):
                    advice = "lower --learning-rate or --max-grad-norm"
                    kept = (f"the last good checkpoint, {checkpoint_path}, is kept: resume from it with a {advice}"
                            if os.path.exists(checkpoint_path) else f"no checkpoint had been written yet; start again with a {advice}")
                    raise TrainingDiverged(f"iteration {iteration + 1}: a loss or parameter became NaN or infinite; {kept}")
                completed = iteration + 1

                now = time.time()
                recent = runner.recent_returns
                mean_return = float(np.mean(recent)) if recent else float("nan")
                metrics = {
                    "iteration": completed, "global_step": global_step, "wall_seconds": round(now - start_time, 3),
                    "mean_return": mean_return, "episodes": len(recent),
                    **{name: losses[name] for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")},
                    "explained_variance": explained_variance(batch["values"], batch["returns"]),
                    "steps_per_second": (global_step - start_step) / max(now - start_time, 1e-9),
                    "learning_rate": learning_rate,
                }
                log.write(metrics, config.num_iterations)
                solved = (config.target_return is not None and len(recent) == config.return_window
                          and mean_return >= config.target_return)
                if solved:
                    status = "solved"
                    print(f"solved: mean return {mean_return:.1f} >= {config.target_return} over the last {config.return_window} episodes")
                if interrupt.raised:
                    status = "interrupted"
                if solved or interrupt.raised:
                    break
                if completed % config.save_every == 0:
                    save(completed)
        save(completed)  # never reached after a NaN: the last good checkpoint stays
    finally:
        log.close()
        envs.close()
    print(f"{status}: checkpoint saved to {checkpoint_path}")
    return {**metrics, "status": status, "checkpoint": checkpoint_path, "run_dir": run_dir}


# ---------------------------------------------------------------------------------------
# 10. Evaluation
# ---------------------------------------------------------------------------------------


def evaluate(path: str, episodes: int, watch: bool = False, device: str = "cpu") -> tuple[float, float]:
    """Run `episodes` episodes with the deterministic policy (argmax or mean action) of a
    checkpoint; normalization statistics are the saved ones and are not updated."""
    if episodes <= 0:
        raise UserError(f"--episodes must be a positive integer, got {episodes}")
    checkpoint = load_checkpoint(path)
    config = checkpoint["config"]
    render_mode = None
    if watch:
        if is_atari(config.env_id):
            raise UserError("--watch does not support Atari (its vector environment cannot open a window); use --eval")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("--watch needs a display, and none is set (DISPLAY is empty); use --eval to print scores instead")
        if importlib.util.find_spec("pygame") is None:
            raise UserError("--watch needs pygame to draw the window: pip install pygame")
        render_mode = "human"
    torch_device = resolve_device(device)
    envs = make_environments(config, 1, render_mode=render_mode)
    agent = build_actor_critic(envs.single_observation_space, envs.single_action_space, config).to(torch_device)
    load_model_state(agent, checkpoint["model"], path)
    agent.eval()
    normalizer = None
    if config.normalize_observations:
        normalizer = ObservationNormalizer(envs.single_observation_space.shape, config.observation_clip)
        normalizer.statistics.load_state_dict(checkpoint["runner"]["observation_normalizer"])
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    returns: list[float] = []
    raw, _ = envs.reset(seed=config.seed + 10_000)
    episode_return = 0.0
    while len(returns) < episodes:
        observations = normalizer(raw, update=False) if normalizer else raw
        with torch.inference_mode():
            actions = agent.deterministic_action(observation_tensor(observations, torch_device)).cpu().numpy()
        if continuous:
            actions = np.clip(actions, envs.single_action_space.low, envs.single_action_space.high)
        raw, reward, terminated, truncated, _ = envs.step(actions)
        episode_return += float(reward[0])
        if terminated[0] or truncated[0]:
            returns.append(episode_return)
            episode_return = 0.0
            raw, _ = envs.reset()
    envs.close()
    return float(np.mean(returns)), float(np.std(returns))


# ---------------------------------------------------------------------------------------
# 11. Command line
# ---------------------------------------------------------------------------------------


def optional_float(text: str) -> typing.Optional[float]:
    return None if text.lower() == "none" else float(text)


def build_parser() -> argparse.ArgumentParser:
    """One flag per Config field, named in full words, with the field's documentation."""
    parser = argparse.ArgumentParser(
        description="Train, resume or evaluate PPO. Flags left out take the preset's value "
                    "(CartPole, Pendulum, Pong) or the generic default shown.",
        argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(Config)
    for item in dataclasses.fields(Config):
        flag, kind = "--" + item.name.replace("_", "-"), hints[item.name]
        options: dict = {"help": f"{item.metadata['help']} (default: {item.default})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind == typing.Tuple[int, ...]:
            options.update(type=int, nargs="+", metavar="WIDTH")
        elif kind == typing.Optional[float]:
            options["type"] = optional_float
        elif kind == typing.Optional[str]:
            options["type"] = str
        else:
            options["type"] = kind
        parser.add_argument(flag, **options)
    actions = parser.add_argument_group("other actions")
    actions.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint")
    actions.add_argument("--eval", metavar="PATH", help="print the mean and std of the return of a checkpoint's deterministic policy")
    actions.add_argument("--watch", metavar="PATH", help="like --eval, rendering the environment in a window")
    actions.add_argument("--episodes", type=int, default=10, help="episodes for --eval and --watch (default: 10)")
    return parser


def make_config(env: str = "CartPole", **overrides) -> Config:
    """Config defaults, then the environment's preset or generic defaults, then overrides."""
    if env in PRESETS:
        defaults = PRESETS[env][1]
    else:
        check_environment(env)
        if is_atari(env):
            defaults = ATARI_DEFAULTS
        else:
            try:
                probe = gym.make(env)
            except (gym.error.Error, ImportError) as error:
                raise UserError(f"{env} cannot be made here: {error}") from None
            probe.close()
            check_spaces(probe.observation_space, probe.action_space)
            defaults = CONTINUOUS_DEFAULTS if isinstance(probe.action_space, gym.spaces.Box) else {}
    try:
        config = Config(env=env, **{**defaults, **overrides})
    except TypeError as error:
        raise UserError(f"unknown setting: {error}") from None
    check_config(config)
    return config


def main(argv: typing.Optional[list[str]] = None) -> int:
    arguments = vars(build_parser().parse_args(argv))
    resume, eval_path, watch_path = arguments.pop("resume", None), arguments.pop("eval", None), arguments.pop("watch", None)
    episodes = arguments.pop("episodes")
    if "hidden_sizes" in arguments:
        arguments["hidden_sizes"] = tuple(arguments["hidden_sizes"])
    try:
        if eval_path or watch_path:
            mean, std = evaluate(eval_path or watch_path, episodes, watch=bool(watch_path), device=arguments.get("device", "cpu"))
            print(f"return over {episodes} episodes: {mean:.2f} +/- {std:.2f}")
            return 0
        if resume:
            saved = load_checkpoint(resume)["config"]
            # The run continues beside its checkpoint (wherever it was moved), unless --run-dir says otherwise.
            config = dataclasses.replace(saved, **{"run_dir": None, **arguments})
            check_config(config)
        else:
            config = make_config(**arguments)
        metrics = ppo(config, resume=resume)
    except (UserError, TrainingDiverged) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UserError) else 1
    except KeyboardInterrupt:
        print("stopped without saving; the last periodic checkpoint is kept", file=sys.stderr)
        return 130
    return 130 if metrics["status"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
