"""PPO's clipped surrogate, value clipping and update against hand-computed numbers, the exact bootstrap at a
truncation, early stopping on the KL, Box actions, checkpoints, the CLI's refusals and a short learning run."""

from __future__ import annotations

import math
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from conftest import context, read_summary, run_rlrun
from rlrun import checkpoint
from rlrun.algos.ppo import PPO, clipped_surrogate_loss, explained_variance, value_loss
from rlrun.core import Transition
from rlrun.errors import ConfigError
from rlrun.networks import network

OBS_SPACE = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)
BOX_ACTIONS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

# eps = 0.2: the ratio is clipped to [0.8, 1.2]; the objective per row is min(rho A, clip(rho) A)
SURROGATE = {
    "inside, positive A": (1.1, 2.0, 2.2),     # min(2.2, 2.2)
    "inside, negative A": (0.9, -2.0, -1.8),   # min(-1.8, -1.8)
    "above, positive A": (1.5, 2.0, 2.4),      # min(3.0, 1.2 * 2 = 2.4): the gain is capped
    "above, negative A": (1.5, -2.0, -3.0),    # min(-3.0, 1.2 * -2 = -2.4): the loss is not
    "below, positive A": (0.5, 2.0, 1.0),      # min(1.0, 0.8 * 2 = 1.6): the loss is not capped
    "below, negative A": (0.5, -2.0, -1.6),    # min(-1.0, 0.8 * -2 = -1.6): the gain is capped
}


@pytest.mark.parametrize("ratio, advantage, objective", SURROGATE.values(), ids=SURROGATE.keys())
def test_clipped_surrogate_per_row(ratio, advantage, objective):
    rho = torch.tensor([ratio], requires_grad=True)
    loss = clipped_surrogate_loss(rho, torch.tensor([advantage]), clip_range=0.2)
    assert loss.item() == pytest.approx(-objective)
    loss.backward()
    clipped = objective != pytest.approx(ratio * advantage)
    # where the clipped term is the minimum the ratio gets no gradient; elsewhere d(-rho A)/d rho = -A
    assert rho.grad.item() == pytest.approx(0.0 if clipped else -advantage)


def test_clipped_surrogate_is_the_negative_mean_over_rows():
    ratios, advantages, objectives = (torch.tensor(column) for column in zip(*SURROGATE.values()))
    loss = clipped_surrogate_loss(ratios, advantages, clip_range=0.2)
    assert loss.item() == pytest.approx(-(2.2 - 1.8 + 2.4 - 3.0 + 1.0 - 1.6) / 6)
    assert loss.item() == pytest.approx(-objectives.mean().item())


def test_value_loss_with_and_without_clipping():
    # V_old = 1, G = 3, c = 0.2: the clipped prediction V_old + clip(V - V_old, -0.2, 0.2) stays in [0.8, 1.2]
    values = torch.tensor([2.0, 1.1, 4.0, 0.0])
    old_values, targets = torch.ones(4), torch.full((4,), 3.0)
    # unclipped (V - G)^2: 1, 3.61, 1, 9; clipped (1.2 - 3)^2 = 3.24, (1.1 - 3)^2 = 3.61, 3.24, (0.8 - 3)^2 = 4.84
    assert value_loss(values, old_values, targets, None).item() == pytest.approx((1 + 3.61 + 1 + 9) / 4)
    assert value_loss(values, old_values, targets, 0.2).item() == pytest.approx((3.24 + 3.61 + 3.24 + 9) / 4)


def test_explained_variance():
    targets = np.array([3.0, 4.0, 6.0, 1.5, 1.0])
    assert explained_variance(targets, targets) == 1.0
    assert explained_variance(np.full(5, targets.mean()), targets) == pytest.approx(0.0)
    assert explained_variance(np.zeros(3), np.ones(3)) is None  # targets that do not vary


def identity_critic_uniform_actor(in_dim: int, out_dim: int) -> nn.Module:
    """V(s) = s for the critic (out_dim 1); equal logits for the actor."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.constant_(layer.weight, 1.0 if out_dim == 1 else 0.0)
    nn.init.zeros_(layer.bias)
    return layer


# One env, five steps, gamma = 0.5, lambda = 1, r_t = 1. The time limit cuts an episode after t = 2: its true
# final state has V = 10 (the trainer's next_obs), not V(s_3) = 4 of the next episode's first state; the next
# episode terminates at t = 4. With V(s) = s the observations are the values:
VALUES = [1.0, 2.0, 3.0, 4.0, 5.0]       # V_old(s_t)
NEXT_VALUES = [2.0, 3.0, 10.0, 5.0, 6.0]  # V_old(s'_t)
TERMINATED = [False, False, False, False, True]
TRUNCATED = [False, False, True, False, False]
# A_0 = 1 + 0.5 + 0.25 + 0.125 * 10 - 1 = 2, A_1 = 1 + 0.5 + 0.25 * 10 - 2 = 2, A_2 = 1 + 0.5 * 10 - 3 = 3,
# A_3 = 1 + 0.5 * 1 - 4 = -2.5, A_4 = 1 - 5 = -4 (terminated: no bootstrap); G_t = A_t + V_old(s_t)
ADVANTAGES = np.array([2.0, 2.0, 3.0, -2.5, -4.0])
TARGETS = ADVANTAGES + np.array(VALUES)


def feed_rollout(ppo: PPO) -> dict[str, float]:
    metrics = {}
    for t in range(5):
        metrics = ppo.observe(Transition(np.array([[VALUES[t]]], np.float32), np.array([t % 2]), np.array([1.0]),
                                         np.array([[NEXT_VALUES[t]]], np.float32), np.array([TERMINATED[t]]),
                                         np.array([TRUNCATED[t]])))
    return metrics


def test_update_bootstraps_from_the_true_final_observation_at_a_truncation():
    ppo = PPO(OBS_SPACE, gym.spaces.Discrete(2), context(identity_critic_uniform_actor), gamma=0.5, gae_lambda=1.0,
              n_steps=5, update_epochs=1, num_minibatches=1, normalize_advantages=False,
              orthogonal_init=False)
    metrics = feed_rollout(ppo)
    # one minibatch, before any step: V = V_old, rho = 1, so L_value = mean A^2, L_clip = -mean A, approx_kl = 0
    assert metrics["value_loss"] == pytest.approx(np.mean(ADVANTAGES ** 2), rel=1e-5)
    assert metrics["policy_loss"] == pytest.approx(-ADVANTAGES.mean(), abs=1e-6)
    assert metrics["entropy"] == pytest.approx(math.log(2), rel=1e-5)
    assert metrics["approx_kl"] == 0.0 and metrics["clip_fraction"] == 0.0
    assert metrics["explained_variance"] == pytest.approx(1 - np.var(ADVANTAGES) / np.var(TARGETS), rel=1e-5)
    assert len(ppo.rollout) == 0 and ppo.env_steps == 5


def adam_steps(ppo: PPO) -> int:
    return int(next(iter(ppo.optimizer.state.values()))["step"])


def test_update_makes_epochs_times_minibatches_steps_unless_the_kl_passes_target_kl():
    make = partial(PPO, OBS_SPACE, gym.spaces.Discrete(2), context(network), gamma=0.5, n_steps=5, update_epochs=3,
                   num_minibatches=2, lr=0.05)
    torch.manual_seed(0)
    everything = make()
    feed_rollout(everything)
    assert adam_steps(everything) == 3 * 2
    torch.manual_seed(0)
    stopped = make(target_kl=1e-12)
    metrics = feed_rollout(stopped)
    # the first minibatch is scored by the policy that collected the rollout (approx_kl 0) and stepped on; the
    # second sees the moved policy, whose approx_kl > 1e-12 stops the update before its step
    assert adam_steps(stopped) == 1
    assert 0 < metrics["approx_kl"]


def test_more_minibatches_than_rollout_rows_is_refused():
    ppo = PPO(OBS_SPACE, gym.spaces.Discrete(2), context(network), n_steps=2, num_minibatches=8)
    three_envs = Transition(np.zeros((3, 1), np.float32), np.zeros(3, np.int64), np.ones(3),
                            np.zeros((3, 1), np.float32), np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ConfigError, match=r"algo.num_minibatches=8 is more than the 2 x 3 rows of a rollout"):
        ppo.observe(three_envs)


def box_rollout_step(rows: int = 4) -> Transition:
    rng = np.random.default_rng(0)
    return Transition(rng.normal(size=(rows, 1)).astype(np.float32), rng.uniform(-1, 1, (rows, 2)).astype(np.float32),
                      rng.normal(size=rows), rng.normal(size=(rows, 1)).astype(np.float32), np.zeros(rows, bool),
                      np.zeros(rows, bool))


def test_gaussian_actions_learn_their_log_std_and_report_every_metric():
    torch.manual_seed(0)
    ppo = PPO(OBS_SPACE, BOX_ACTIONS, context(network), n_steps=2, num_minibatches=2, update_epochs=2,
              log_std_init=-1.0, entropy_coef=0.01, value_clip_range=0.2)
    obs = np.zeros((4000, 1), np.float32)
    samples = ppo.act(obs)
    assert samples.shape == (4000, 2)
    np.testing.assert_allclose(samples.mean(0), ppo.act(obs[:1], explore=False)[0], atol=0.03)
    np.testing.assert_allclose(samples.std(0), math.exp(-1.0), atol=0.03)
    before = ppo.actor_critic.head.log_std.detach().clone()
    assert ppo.observe(box_rollout_step()) == {}
    metrics = ppo.observe(box_rollout_step())
    assert set(metrics) == {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
                            "charts/learning_rate"}
    assert all(math.isfinite(value) for value in metrics.values())
    assert not torch.equal(before, ppo.actor_critic.head.log_std)


def test_state_dict_round_trip_with_an_unfinished_rollout(tmp_path):
    make = partial(PPO, OBS_SPACE, BOX_ACTIONS, context(network), n_steps=3, num_minibatches=2)
    torch.manual_seed(0)
    source = make()
    source.observe(box_rollout_step())
    source.observe(box_rollout_step())
    source.observe(box_rollout_step())  # an update: the optimizer has state
    source.observe(box_rollout_step())  # one step of the next rollout
    checkpoint.save(tmp_path / "ppo.pt", {"agent": source.state_dict()})
    restored = make()
    restored.load_state_dict(checkpoint.load(tmp_path / "ppo.pt")["agent"])
    obs = np.linspace(-1, 1, 7, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(restored.act(obs, explore=False), source.act(obs, explore=False))
    assert len(restored.rollout) == 1 and restored.env_steps == source.env_steps == 16
    # the next update, from the same random state, is the same in both
    results = []
    for agent in (source, restored):
        torch.manual_seed(1)
        agent.observe(box_rollout_step())
        results.append(agent.observe(box_rollout_step()))
    assert results[0] == results[1] and set(results[0]) >= {"policy_loss", "approx_kl"}
    for a, b in zip(source.actor_critic.parameters(), restored.actor_critic.parameters()):
        assert torch.equal(a, b)


def test_each_env_keeps_its_sde_noise_for_the_rollout_or_for_sde_sample_every_steps():
    torch.manual_seed(0)
    obs = np.full((4, 1), 0.5, np.float32)
    ppo = PPO(OBS_SPACE, BOX_ACTIONS, context(network), n_steps=3, num_minibatches=2, use_sde=True)
    first = ppo.act(obs)
    assert len(np.unique(first[:, 0])) == 4  # one noise matrix per env
    for _ in range(2):
        ppo.observe(box_rollout_step())
        assert np.array_equal(ppo.act(obs), first)
    ppo.observe(box_rollout_step())  # the rollout ends: an update, and new noise
    assert ppo.exploration.current is None
    every = PPO(OBS_SPACE, BOX_ACTIONS, context(network), n_steps=3, num_minibatches=2, use_sde=True,
                sde_sample_every=8)
    first = every.act(obs)
    every.observe(box_rollout_step())  # 4 env steps
    assert np.array_equal(every.act(obs), first)
    every.observe(box_rollout_step())  # 8: due
    assert not np.array_equal(every.act(obs), first)


def test_sde_noise_scale_is_learned_and_checkpointed(tmp_path):
    torch.manual_seed(0)
    make = partial(PPO, OBS_SPACE, BOX_ACTIONS, context(network), n_steps=2, num_minibatches=2, use_sde=True,
                   sde_sample_every=100)
    source = make()
    before = source.actor_critic.head.sde.log_std.detach().clone()
    source.act(np.zeros((4, 1), np.float32))
    source.observe(box_rollout_step())
    source.observe(box_rollout_step())
    assert not torch.equal(before, source.actor_critic.head.sde.log_std)
    held = source.act(np.zeros((4, 1), np.float32))
    checkpoint.save(tmp_path / "ppo.pt", {"agent": source.state_dict()})
    restored = make()
    restored.load_state_dict(checkpoint.load(tmp_path / "ppo.pt")["agent"])
    assert torch.equal(restored.exploration.current, source.exploration.current)
    np.testing.assert_array_equal(restored.act(np.zeros((4, 1), np.float32)), held)


def test_tuple_actions_are_refused_in_one_line(tmp_path):
    result = run_rlrun("algo=ppo", "env=gym", "env.id=rlrun_test_envs:RlrunTest/TupleActions-v0", "hydra.run.dir=run",
                       cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == ("rlrun: error: algo=ppo cannot act in rlrun_test_envs:RlrunTest/TupleActions-v0: it "
                             "does not support Tuple actions; no rlrun algorithm handles them\n")


def test_ppo_learns_cartpole(tmp_path):
    # the preset with four fifths of its budget, at a constant learning rate (a random policy returns ~20)
    result = run_rlrun("algo=ppo", "env=CartPole-v1", "total_steps=20000", "algo.lr_schedule=constant",
                       "eval.every=2500", "progress=false", "seed=0", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "preset tuned/ppo_CartPole-v1" in result.stdout
    assert max(e["mean_return"] for e in read_summary(tmp_path / "run")["evaluations"]) >= 300


def test_ppo_with_sde_learns_pendulum(tmp_path):
    # the preset (gSDE) with 30% of its budget, at which it first passes -200 (a random policy returns ~-1200)
    result = run_rlrun("algo=ppo", "env=Pendulum-v1", "total_steps=30000", "eval.every=30000", "progress=false",
                       "seed=0", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "preset tuned/ppo_Pendulum-v1" in result.stdout
    assert read_summary(tmp_path / "run")["final_eval"]["mean_return"] >= -400
