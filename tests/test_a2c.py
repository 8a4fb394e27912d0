"""A2C's GAE and losses against hand-computed numbers, observation normalization, a short learning run."""

from __future__ import annotations

import math
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import context, read_summary, run_rlrun
from rlrun import checkpoint
from rlrun.algos.a2c import A2C
from rlrun.checkpoint import Checkpointer
from rlrun.core import Agent, Transition
from rlrun.envs import (make_vector_env, observation_statistics, reward_statistics, use_observation_statistics,
                        use_reward_statistics)
from rlrun.networks import MultiHeadMLP, network
from rlrun.recording import Recorder
from rlrun.returns import gae
from rlrun.trainer import Trainer, TrainerSettings

OBS_SPACE = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)

# One env, five steps, gamma = 0.5, r_t = 1: the time limit cuts an episode after t = 2 (its true final
# state has V = 10, not V(s_3) = 4 of the next episode's first state), and the next episode terminates at t = 4.
REWARDS = np.ones((5, 1))
VALUES = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])        # V(s_t)
NEXT_VALUES = np.array([[2.0], [3.0], [10.0], [5.0], [6.0]])  # V(s'_t)
TERMINATED = np.array([[0], [0], [0], [0], [1]], bool)
TRUNCATED = np.array([[0], [0], [1], [0], [0]], bool)
# delta_t = r_t + 0.5 (1 - terminated_t) V(s'_t) - V(s_t) = 1, 0.5, 3, -0.5, -4
GAE_BY_LAMBDA = {
    0.0: [1.0, 0.5, 3.0, -0.5, -4.0],  # the one-step TD advantages delta_t
    # A_t = delta_t + 0.475 A_{t+1} inside an episode: A_3 = -0.5 + 0.475 * -4, A_1 = 0.5 + 0.475 * 3, ...
    0.95: [1.0 + 0.475 * 1.925, 1.925, 3.0, -2.4, -4.0],
    # Monte-Carlo: A_0 = 1 + 0.5 + 0.25 + 0.125 * V(final) - V(s_0) = 2, A_3 = 1 + 0.5 * 1 - 4 = -2.5
    1.0: [2.0, 2.0, 3.0, -2.5, -4.0],
}


@pytest.mark.parametrize("gae_lambda", GAE_BY_LAMBDA)
def test_gae_with_a_truncation_and_a_termination_in_one_rollout(gae_lambda):
    advantages = gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, gamma=0.5, gae_lambda=gae_lambda)
    np.testing.assert_allclose(advantages[:, 0], GAE_BY_LAMBDA[gae_lambda])


def test_gae_of_torch_tensors_is_that_of_numpy_arrays():
    as_floats = partial(torch.tensor, dtype=torch.float32)
    advantages = gae(as_floats(REWARDS), as_floats(VALUES), as_floats(NEXT_VALUES), as_floats(TERMINATED),
                     as_floats(TRUNCATED), gamma=0.5, gae_lambda=0.95)
    np.testing.assert_allclose(advantages[:, 0].numpy(), GAE_BY_LAMBDA[0.95], rtol=1e-6)


def test_compiled_update_gives_the_eager_numbers():
    def make(compile: bool) -> A2C:
        torch.manual_seed(0)
        return A2C(OBS_SPACE, gym.spaces.Discrete(2), context(partial(network, hidden_sizes=[4])), n_steps=2,
                   gae_lambda=0.95, entropy_coef=0.01, optimizer="adam", compile=compile)

    eager, compiled = make(False), make(True)
    rng = np.random.default_rng(0)
    steps = [Transition(rng.standard_normal((3, 1)).astype(np.float32), rng.integers(0, 2, 3), np.ones(3),
                        rng.standard_normal((3, 1)).astype(np.float32), np.array([False, True, False]),
                        np.array([False, False, True])) for _ in range(2)]
    eager_metrics = [eager.observe(step) for step in steps][-1]
    compiled_metrics = [compiled.observe(step) for step in steps][-1]
    assert compiled_metrics == pytest.approx(eager_metrics, rel=1e-5, abs=1e-6)
    for eager_param, compiled_param in zip(eager.actor_critic.parameters(), compiled.actor_critic.parameters()):
        torch.testing.assert_close(compiled_param, eager_param, rtol=1e-5, atol=1e-6)


def identity_critic_uniform_actor(in_dim: int, out_dim: int) -> nn.Module:
    """V(s) = s for the critic (out_dim 1); equal logits for the actor."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.constant_(layer.weight, 1.0 if out_dim == 1 else 0.0)
    nn.init.zeros_(layer.bias)
    return layer


def test_update_bootstraps_from_the_true_final_observation_and_gives_the_losses():
    a2c = A2C(OBS_SPACE, gym.spaces.Discrete(2), context(identity_critic_uniform_actor), gamma=0.5, gae_lambda=1.0,
              n_steps=5, lr=1e-9, orthogonal_init=False)
    obs, next_obs = VALUES[:, 0], NEXT_VALUES[:, 0]  # V(s) = s: the observations are the values above
    metrics = {}
    for t in range(5):
        metrics = a2c.observe(Transition(np.array([[obs[t]]], np.float32), np.array([t % 2]), np.array([1.0]),
                                         np.array([[next_obs[t]]], np.float32), TERMINATED[t], TRUNCATED[t]))
    advantages = np.array(GAE_BY_LAMBDA[1.0])
    # value targets G_t = A_t + V(s_t): value loss mean (V - G)^2 = mean A^2; uniform policy: log pi = log 1/2
    assert metrics["value_loss"] == pytest.approx(np.mean(advantages ** 2), rel=1e-5)
    assert metrics["policy_loss"] == pytest.approx(math.log(2) * advantages.mean(), rel=1e-5)
    assert metrics["entropy"] == pytest.approx(math.log(2), rel=1e-5)
    assert len(a2c.rollout) == 0 and a2c.env_steps == 5


def test_updates_every_n_steps_vector_steps():
    a2c = A2C(OBS_SPACE, gym.spaces.Discrete(3), context(network), n_steps=3)
    four = Transition(np.zeros((4, 1), np.float32), np.zeros(4, np.int64), np.ones(4), np.ones((4, 1), np.float32),
                      np.zeros(4, bool), np.zeros(4, bool))
    assert [a2c.observe(four) != {} for _ in range(6)] == [False, False, True, False, False, True]
    assert a2c.env_steps == 24


def test_gaussian_actions_and_a_shared_trunk():
    torch.manual_seed(0)
    a2c = A2C(OBS_SPACE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), context(partial(network, hidden_sizes=[16])),
              shared_trunk=True, log_std_init=-1.0, n_steps=2)
    assert isinstance(a2c.actor_critic.shared, MultiHeadMLP)
    obs = np.zeros((4000, 1), np.float32)
    samples = a2c.act(obs)
    mean = a2c.act(obs[:1], explore=False)
    assert samples.shape == (4000, 2)
    np.testing.assert_allclose(samples.mean(0), mean[0], atol=0.03)
    np.testing.assert_allclose(samples.std(0), math.exp(-1.0), atol=0.03)
    step = Transition(obs[:3], samples[:3], np.ones(3), obs[:3], np.zeros(3, bool), np.zeros(3, bool))
    a2c.observe(step)
    before = a2c.actor_critic.head.log_std.detach().clone()
    assert set(a2c.observe(step)) == {"policy_loss", "value_loss", "entropy", "charts/learning_rate"}
    assert not torch.equal(before, a2c.actor_critic.head.log_std)  # the log-std is learned


def test_state_dict_round_trip(tmp_path):
    make = partial(A2C, OBS_SPACE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), context(network))
    source = make()
    source.actor_critic.head.log_std.data.fill_(-0.3)
    checkpoint.save(tmp_path / "a2c.pt", {"agent": source.state_dict()})
    restored = make()
    restored.load_state_dict(checkpoint.load(tmp_path / "a2c.pt")["agent"])
    obs = np.linspace(-1, 1, 7, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(restored.act(obs, explore=False), source.act(obs, explore=False))
    assert torch.equal(restored.actor_critic.head.log_std, source.actor_critic.head.log_std)


def test_sde_noise_is_held_for_the_rollout_learned_and_checkpointed(tmp_path):
    torch.manual_seed(0)
    make = partial(A2C, OBS_SPACE, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), context(network), n_steps=2,
                   use_sde=True, log_std_init=-1.0)
    a2c = make()
    obs = np.full((3, 1), 0.5, np.float32)
    first = a2c.act(obs)
    step = Transition(obs, first, np.ones(3), obs, np.zeros(3, bool), np.zeros(3, bool))
    a2c.observe(step)
    assert np.array_equal(a2c.act(obs), first)  # the same noise within the rollout
    before = a2c.actor_critic.head.sde.log_std.detach().clone()
    assert set(a2c.observe(step)) == {"policy_loss", "value_loss", "entropy", "charts/learning_rate"}
    assert not torch.equal(before, a2c.actor_critic.head.sde.log_std)  # sigma is learned
    held = a2c.act(obs)  # new noise for the next rollout
    checkpoint.save(tmp_path / "a2c.pt", {"agent": a2c.state_dict()})
    restored = make()
    restored.load_state_dict(checkpoint.load(tmp_path / "a2c.pt")["agent"])
    np.testing.assert_array_equal(restored.act(obs), held)


# Observation normalization (env.normalize_observations, used by the A2C presets)

def corridor(num_envs: int, normalize: bool = True, max_episode_steps=None):
    return make_vector_env(OmegaConf.create({
        "id": "RlrunTest/Corridor-v0", "num_envs": num_envs, "vectorization": "sync", "kwargs": {"length": 5},
        "max_episode_steps": max_episode_steps, "normalize_observations": normalize}))


def test_normalizes_observations_and_final_observations_with_the_running_statistics():
    envs = corridor(2, max_episode_steps=3)
    obs, _ = envs.reset(seed=0)
    np.testing.assert_allclose(obs, 0.0)  # the first batch is its own mean
    for _ in range(3):
        obs, _, _, truncated, info = envs.step(np.zeros(2, np.int64))
    stats = observation_statistics(envs)
    # positions seen: 0, 0, 1, 1, 2, 2, then the reset 0, 0 (the final positions 3 are not in the statistics)
    assert float(stats["mean"][0]) == pytest.approx(0.75, rel=1e-3)
    assert float(stats["var"][0]) == pytest.approx(np.var([0, 0, 1, 1, 2, 2, 0, 0]), rel=1e-3)
    scale = math.sqrt(float(stats["var"][0]) + 1e-8)
    assert truncated.all()
    np.testing.assert_allclose(obs[:, 0], (0 - 0.75) / scale, rtol=1e-3)
    np.testing.assert_allclose([info["final_obs"][i][0] for i in range(2)], (3 - 0.75) / scale, rtol=1e-3)


class ObservationRecorder(Agent):
    observation_spaces = (gym.spaces.Box,)
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self):
        self.eval_obs = []

    def act(self, obs, explore=True):
        if not explore:
            self.eval_obs.append(obs.copy())
        return np.zeros(len(obs), np.int64)

    def observe(self, t):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_evaluation_uses_the_frozen_training_statistics_and_checkpoints_keep_them(tmp_path):
    envs, eval_envs = corridor(2), corridor(3)
    agent = ObservationRecorder()
    settings = TrainerSettings(total_steps=24, eval_every=12, checkpoint_every=100, log_every=100, seed=0)
    config = {"seed": 0, "total_steps": 24, "algo": {}, "env": {"id": "RlrunTest/Corridor-v0"}, "network": {}}
    Trainer(agent, envs, eval_envs, settings, Checkpointer(tmp_path, agent, config),
            Recorder(tmp_path, config, "recorder", settings.total_steps, progress=False)).run()
    train_stats = observation_statistics(envs)
    eval_stats = observation_statistics(eval_envs)
    for key in ("mean", "var"):
        assert torch.equal(eval_stats[key], train_stats[key])
    assert eval_stats["count"] == train_stats["count"]  # the eval episodes did not update them
    # the evaluation saw raw positions 0..4 normalized with the training statistics
    scale = math.sqrt(float(train_stats["var"][0]) + 1e-8)
    np.testing.assert_allclose(agent.eval_obs[-1][:, 0], (4 - float(train_stats["mean"][0])) / scale, rtol=1e-5)

    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["observation_statistics"]
    fresh = corridor(1)
    use_observation_statistics(fresh, saved)
    obs, _ = fresh.reset(seed=1)
    np.testing.assert_allclose(obs[0, 0], (0 - float(train_stats["mean"][0])) / scale, rtol=1e-5)
    assert torch.equal(observation_statistics(fresh)["mean"], train_stats["mean"])  # frozen: reset did not update


def test_normalization_needs_box_observations(tmp_path):
    result = run_rlrun("algo=a2c", "env=FrozenLake-v1", "env.normalize_observations=true", "hydra.run.dir=run",
                       cwd=tmp_path)
    assert result.returncode == 2 and "env.normalize_observations=true needs Box observations" in result.stderr


# Reward normalization (env.normalize_rewards, SB3's VecNormalize norm_reward)

def reward_corridor(num_envs: int, length: int, evaluation: bool = False):
    return make_vector_env(OmegaConf.create({
        "id": "RlrunTest/Corridor-v0", "num_envs": num_envs, "vectorization": "sync", "kwargs": {"length": length},
        "max_episode_steps": None, "normalize_rewards": True, "normalize_rewards_gamma": 0.5}), evaluation=evaluation)


def test_divides_rewards_by_the_running_std_of_their_discounted_sum():
    envs = reward_corridor(2, length=10)
    envs.reset(seed=0)
    for _ in range(3):
        _, reward, *_ = envs.step(np.zeros(2, np.int64))
    # discounted sums so far, reward 1 a step and gamma 0.5: 1, 1.5, 1.75 in each env
    np.testing.assert_allclose(reward, 1.0 / math.sqrt(np.var([1.0, 1.5, 1.75]) + 1e-8), rtol=1e-3)
    assert reward_statistics(envs)["count"] == pytest.approx(6, abs=1e-3)


def test_episode_returns_and_evaluation_envs_keep_the_env_rewards():
    envs, eval_envs = reward_corridor(1, length=3), reward_corridor(1, length=3, evaluation=True)
    envs.reset(seed=0)
    eval_envs.reset(seed=0)
    for _ in range(3):
        _, reward, _, _, info = envs.step(np.zeros(1, np.int64))
        _, eval_reward, *_ = eval_envs.step(np.zeros(1, np.int64))
        assert reward[0] != 1.0 and eval_reward[0] == 1.0
    assert info["_episode"][0] and info["episode"]["r"][0] == 3.0
    assert reward_statistics(eval_envs) is None


def test_reward_statistics_survive_a_checkpoint_round_trip(tmp_path):
    envs = reward_corridor(2, length=4)
    envs.reset(seed=0)
    for _ in range(5):
        envs.step(np.zeros(2, np.int64))
    checkpoint.save(tmp_path / "stats.pt", {"reward_statistics": reward_statistics(envs)})
    fresh = reward_corridor(2, length=4)
    use_reward_statistics(fresh, checkpoint.load(tmp_path / "stats.pt")["reward_statistics"])
    envs.reset(seed=1)
    fresh.reset(seed=1)
    for _ in range(3):  # the same divisor, updated the same way
        np.testing.assert_array_equal(envs.step(np.zeros(2, np.int64))[1], fresh.step(np.zeros(2, np.int64))[1])


def test_reward_normalization_discount_must_be_in_the_unit_interval(tmp_path):
    result = run_rlrun("algo=a2c", "env=CartPole-v1", "env.normalize_rewards=true", "env.normalize_rewards_gamma=1.5",
                       "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2 and "env.normalize_rewards_gamma=1.5" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoints").exists()


def test_a2c_learns_cartpole(tmp_path):
    result = run_rlrun("algo=a2c", "env=CartPole-v1", "total_steps=30000", "eval.every=5000", "progress=false",
                       "seed=0", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert max(e["mean_return"] for e in read_summary(tmp_path / "run")["evaluations"]) >= 475


def test_the_learning_rate_is_logged_as_its_linear_schedule_decays_it():
    a2c = A2C(OBS_SPACE, gym.spaces.Discrete(2), context(partial(network, hidden_sizes=[4]), total_steps=8), n_steps=1,
              lr=0.01, lr_schedule="linear")
    obs = np.zeros((2, 1), np.float32)
    step = Transition(obs, np.zeros(2, np.int64), np.ones(2), obs, np.zeros(2, bool), np.zeros(2, bool))
    rates = [a2c.observe(step)["charts/learning_rate"] for _ in range(3)]  # 2 env steps an update, over 8
    assert rates == pytest.approx([0.01 * (1 - 2 / 8), 0.01 * (1 - 4 / 8), 0.01 * (1 - 6 / 8)])
