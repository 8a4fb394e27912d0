"""DQN's Bellman targets, n-step returns and schedule against hand-computed numbers; a short learning run."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from conftest import context, read_summary, run_rlrun
from rlrun.algos.dqn import DQN
from rlrun.core import Transition
from rlrun.errors import ConfigError
from rlrun.networks import DuelingQNetwork, network
from rlrun.validation import check

OBS_SPACE = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)


def constant_q(in_dim: int, out_dim: int, values=(0.0, 0.0), dueling: bool = False) -> nn.Module:
    """Q(s, .) = `values` for every s."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor(values))
    return layer


def agent(make_net=constant_q, **kwargs) -> DQN:
    defaults = dict(gamma=0.5, learning_starts=0, batch_size=1, buffer_size=100)
    return DQN(OBS_SPACE, gym.spaces.Discrete(2), context(make_net), **{**defaults, **kwargs})


def step(obs, reward, next_obs, terminated=False, truncated=False, action=0) -> Transition:
    return Transition(np.array([[obs]], np.float32), np.array([action]), np.array([reward], np.float32),
                      np.array([[next_obs]], np.float32), np.array([terminated]), np.array([truncated]))


def targets(dqn: DQN, reward, discount, terminated) -> list[float]:
    size = len(reward)
    y = dqn.td_target(torch.tensor(reward), torch.tensor(discount), torch.tensor(terminated), torch.zeros(size, 1))
    return y.tolist()


def with_q_values(dqn: DQN, online, target) -> DQN:
    with torch.no_grad():
        dqn.q.bias.copy_(torch.tensor(online))
        dqn.q_target.bias.copy_(torch.tensor(target))
    return dqn


def test_target_is_reward_plus_discounted_max_of_the_target_net_unless_terminated():
    dqn = with_q_values(agent(), online=[5.0, 2.0], target=[1.0, 3.0])
    # y = r + gamma (1 - terminated) max_a' Q_target(s', a') = 1 + 0.5 * 3; terminated: y = r
    assert targets(dqn, [1.0, 1.0], [0.5, 0.5], [0.0, 1.0]) == pytest.approx([2.5, 1.0])


def test_double_dqn_picks_the_action_with_the_online_net_and_values_it_with_the_target_net():
    dqn = with_q_values(agent(double=True), online=[5.0, 2.0], target=[1.0, 3.0])
    # argmax_a Q(s', a) = 0, Q_target(s', 0) = 1: y = 1 + 0.5 * 1
    assert targets(dqn, [1.0, 1.0], [0.5, 0.5], [0.0, 1.0]) == pytest.approx([1.5, 1.0])


def stored(dqn: DQN) -> dict[str, list]:
    size = len(dqn.replay_buffer)
    return {name: values[:size].squeeze().tolist() for name, values in dqn.replay_buffer.data.items()}


def test_n_step_returns_bootstrap_at_a_truncation():
    dqn = agent(n_step=3)
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0]
    for t, reward in enumerate(rewards):  # s_0 .. s_4; the time limit cuts the episode after s_4 (final obs 5)
        dqn.store(step(t, reward, t + 1, truncated=t == 4))
    got = stored(dqn)
    # gamma = 0.5: R_0 = 1 + 0.5*2 + 0.25*4 = 3, R_1 = 2 + 0.5*4 + 0.25*8 = 6, R_2 = 4 + 0.5*8 + 0.25*16 = 12,
    # then the window is flushed at the truncation: R_3 = 8 + 0.5*16 = 16 (two steps), R_4 = 16 (one step)
    assert got["obs"] == [0, 1, 2, 3, 4]
    assert got["reward"] == pytest.approx([3, 6, 12, 16, 16])
    assert got["next_obs"] == [3, 4, 5, 5, 5]  # s_{t+3}, or the true final observation
    assert got["discount"] == pytest.approx([0.125, 0.125, 0.125, 0.25, 0.5])
    assert got["terminated"] == [0, 0, 0, 0, 0]  # the target bootstraps from Q_target(final obs)
    assert not dqn.windows[0]  # nothing left over for the next episode


def test_n_step_returns_are_cut_at_a_termination():
    dqn = agent(n_step=3)
    for t, reward in enumerate([1.0, 2.0]):
        dqn.store(step(t, reward, t + 1, terminated=t == 1))
    got = stored(dqn)
    assert got["reward"] == pytest.approx([1 + 0.5 * 2, 2])
    assert got["terminated"] == [1, 1]
    assert got["next_obs"] == [2, 2]
    dqn = with_q_values(dqn, online=[0.0, 0.0], target=[7.0, 7.0])
    # terminated rows get y = R_t whatever Q_target says; the bootstrap would have added 0.25 * 7
    assert targets(dqn, got["reward"], got["discount"], got["terminated"]) == pytest.approx([2.0, 2.0])


def test_n_step_target_with_a_truncation_bootstraps_with_gamma_to_the_steps_taken():
    dqn = with_q_values(agent(n_step=3), online=[0.0, 0.0], target=[7.0, 4.0])
    dqn.store(step(0, 1.0, 1))
    dqn.store(step(1, 2.0, 2, truncated=True))
    got = stored(dqn)
    # y_0 = 1 + 0.5*2 + 0.5^2 * 7, y_1 = 2 + 0.5 * 7
    assert targets(dqn, got["reward"], got["discount"], got["terminated"]) == pytest.approx([3.75, 5.5])


def test_one_step_transitions_with_several_envs():
    dqn = agent()
    two = Transition(np.array([[0.0], [10.0]], np.float32), np.array([0, 1]), np.array([1.0, 2.0], np.float32),
                     np.array([[1.0], [11.0]], np.float32), np.array([False, True]), np.array([False, False]))
    dqn.store(two)
    got = stored(dqn)
    assert got["obs"] == [0, 10] and got["action"] == [0, 1] and got["next_obs"] == [1, 11]
    assert got["reward"] == [1, 2] and got["terminated"] == [0, 1] and got["discount"] == [0.5, 0.5]


def test_learning_and_target_updates_are_counted_in_env_steps_over_all_envs():
    dqn = agent(train_every=4, target_update_every=6, learning_starts=2, tau=1.0, lr=0.1,
                make_net=partial(network, hidden_sizes=[4]))
    two = Transition(np.zeros((2, 1), np.float32), np.array([0, 1]), np.ones(2, np.float32),
                     np.ones((2, 1), np.float32), np.array([False, False]), np.array([False, False]))
    learned, synced = [], []
    for vector_step in range(1, 7):  # 2, 4, ..., 12 env steps
        metrics = dqn.observe(two)
        learned.append("td_loss" in metrics)
        synced.append(all(torch.equal(a, b) for a, b in zip(dqn.q.parameters(), dqn.q_target.parameters())))
    assert learned == [False, True, False, True, False, True]  # at 4, 8, 12 env steps
    assert synced == [True, False, True, False, False, True]  # copied at 6 and 12, after the updates at 4, 8
    assert metrics["charts/epsilon"] == dqn.epsilon(12)


def test_a_vector_step_past_several_train_every_multiples_makes_that_many_rounds_of_updates():
    dqn = agent(train_every=2, gradient_steps=3, make_net=partial(network, hidden_sizes=[4]))
    four = Transition(np.zeros((4, 1), np.float32), np.array([0, 1, 0, 1]), np.ones(4, np.float32),
                      np.ones((4, 1), np.float32), np.zeros(4, bool), np.zeros(4, bool))
    dqn.observe(four)  # 4 env steps: the multiples 2 and 4 of train_every
    assert [state["step"].item() for state in dqn.optimizer.state.values()] == [6] * 4  # 2 rounds x 3 steps


def test_huber_loss_and_q_values_metrics():
    dqn = with_q_values(agent(gamma=0.0, lr=1e-9), online=[3.0, 0.0], target=[0.0, 0.0])
    dqn.store(step(0, 0.5, 1))  # y = 0.5, Q = 3: Huber = |3 - 0.5| - 0.5 = 2
    metrics = dqn.learn(1)
    assert metrics["td_loss"] == pytest.approx(2.0, rel=1e-4)
    assert metrics["q_values"] == pytest.approx(3.0, rel=1e-4)
    mse = with_q_values(agent(gamma=0.0, lr=1e-9, loss="mse"), online=[3.0, 0.0], target=[0.0, 0.0])
    mse.store(step(0, 0.5, 1))
    assert mse.learn(1)["td_loss"] == pytest.approx(6.25, rel=1e-4)


def test_epsilon_greedy_actions():
    dqn = with_q_values(agent(learning_starts=100, epsilon={"schedule": "linear", "start": 1.0, "end": 0.2,
                                                            "decay_steps": 1000}), online=[0.0, 1.0], target=[0, 0])
    obs = np.zeros((4000, 1), np.float32)
    torch.manual_seed(0)
    assert dqn.act(obs).mean() == pytest.approx(0.5, abs=0.03)  # before learning_starts: uniform
    dqn.env_steps = 1000  # epsilon 0.2: greedy action 1 with probability 0.8 + 0.2 / 2
    assert dqn.act(obs).mean() == pytest.approx(0.9, abs=0.03)
    assert dqn.act(obs, explore=False).tolist() == [1] * 4000


def test_dueling_network_combines_value_and_mean_centred_advantages():
    net = network(3, 4, hidden_sizes=[8], activation="relu", dueling=True)
    assert isinstance(net, DuelingQNetwork)
    x = torch.randn(5, 3)
    value, advantage = super(DuelingQNetwork, net).forward(x)
    torch.testing.assert_close(net(x), value + advantage - advantage.mean(-1, keepdim=True))
    torch.testing.assert_close(net(x).mean(-1, keepdim=True), value)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="algo.loss"):
        check("algo", {"loss": "l1"}, DQN.hyperparameter_rules)
    with pytest.raises(ConfigError, match="algo.n_step=0"):
        check("algo", {"n_step": 0}, DQN.hyperparameter_rules)
    with pytest.raises(ConfigError, match="algo.epsilon.end"):
        agent(epsilon={"schedule": "linear", "start": 1.0, "end": 1.5, "decay_steps": 10})


def test_state_dict_round_trip(tmp_path):
    from rlrun import checkpoint

    make_net = partial(network, hidden_sizes=[16])
    source = agent(make_net=make_net, dueling=True)
    source.env_steps = 123
    checkpoint.save(tmp_path / "dqn.pt", {"agent": source.state_dict()})
    restored = agent(make_net=make_net, dueling=True)
    restored.load_state_dict(checkpoint.load(tmp_path / "dqn.pt")["agent"])
    obs = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    x = torch.as_tensor(obs)
    assert torch.equal(restored.q(x), source.q(x)) and torch.equal(restored.q_target(x), source.q_target(x))
    assert restored.env_steps == 123


def test_box_actions_are_refused_with_the_algorithms_that_handle_them(tmp_path):
    result = run_rlrun("algo=dqn", "env=Pendulum-v1", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "algo=dqn cannot act in Pendulum-v1: it does not support Box actions; algorithms that handle them: " \
           "a2c" in result.stderr


def test_dqn_learns_cartpole(tmp_path):
    result = run_rlrun("algo=dqn", "env=CartPole-v1", "total_steps=10000", "eval.every=5000", "progress=false",
                       "seed=0", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert max(e["mean_return"] for e in read_summary(tmp_path / "run")["evaluations"]) >= 200
