"""Tabular Q-learning and SARSA against hand-computed updates, and the exact-solution diagnostics."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import context
from rlrun.algos.qlearning import QLearning
from rlrun.algos.sarsa import Sarsa
from rlrun.core import Transition
from rlrun.errors import ConfigError
from rlrun.envs import make_env, make_vector_env
from rlrun.optimality import OptimalityGap, TabularModel, optimality_gap_for
from rlrun.trainer import true_next_obs

STATES, ACTIONS = gym.spaces.Discrete(3), gym.spaces.Discrete(2)
ALPHA, GAMMA = 0.5, 0.9


def agent(algo, epsilon=0.0, q=((1.0, 2.0), (3.0, 5.0), (4.0, 0.0))):
    made = algo(STATES, ACTIONS, context(seed=0), gamma=GAMMA, alpha={"start": ALPHA}, epsilon={"start": epsilon})
    made.q_table[:] = np.array(q)
    return made


def step(s, a, r, s_next, terminated=False, truncated=False) -> Transition:
    return Transition(np.array([s]), np.array([a]), np.array([r]), np.array([s_next]),
                      np.array([terminated]), np.array([truncated]))


@pytest.mark.parametrize("terminated, truncated, target", [
    (False, False, 1.0 + GAMMA * 5.0),  # r + gamma max_a' Q[1, a'] = 1 + 0.9 * 5
    (False, True, 1.0 + GAMMA * 5.0),   # a time limit: still bootstrap
    (True, False, 1.0),                 # terminal: no bootstrap
])
def test_q_learning_update(terminated, truncated, target):
    q = agent(QLearning)
    q.observe(step(0, 1, 1.0, 1, terminated, truncated))
    assert q.q_table[0, 1] == pytest.approx(2.0 + ALPHA * (target - 2.0))
    assert q.q_table.sum() == pytest.approx(1 + 3 + 5 + 4 + q.q_table[0, 1])  # nothing else moved


def test_sarsa_bootstraps_from_the_action_it_then_takes():
    sarsa = agent(Sarsa, epsilon=1.0)  # a' uniformly random, so it is not simply the greedy action
    taken = []
    for _ in range(20):
        before = sarsa.q_table[0, 1]
        sarsa.observe(step(0, 1, 1.0, 1))
        a_next = sarsa.act(np.array([1]))[0]  # the agent's next action, in s' = 1
        target = 1.0 + GAMMA * sarsa.q_table[1, a_next]
        assert sarsa.q_table[0, 1] == pytest.approx(before + ALPHA * (target - before))
        taken.append(a_next)
    assert set(taken) == {0, 1}  # both values of Q[1, .] served as targets


def test_sarsa_terminal_and_truncated_transitions():
    sarsa = agent(Sarsa)  # epsilon 0: a' is greedy
    sarsa.observe(step(0, 1, 1.0, 1, terminated=True))
    assert sarsa.q_table[0, 1] == pytest.approx(2.0 + ALPHA * (1.0 - 2.0))
    sarsa = agent(Sarsa)
    sarsa.observe(step(0, 1, 1.0, 1, truncated=True))  # a' = argmax Q[1] = 1, drawn but never taken
    assert sarsa.q_table[0, 1] == pytest.approx(2.0 + ALPHA * (1.0 + GAMMA * 5.0 - 2.0))


def test_sarsa_chooses_afresh_after_an_autoreset():
    sarsa = agent(Sarsa, epsilon=0.0, q=((1.0, 2.0), (0.0, 0.0), (4.0, 0.0)))
    # env 0 goes on into state 2 (greedy a' = 0); env 1 ends its episode and was reset into state 0
    two_envs = Transition(np.array([0, 0]), np.array([1, 1]), np.array([0.0, 0.0]), np.array([2, 2]),
                          np.array([False, True]), np.array([False, False]))
    sarsa.observe(two_envs)
    sarsa.q_table[2] = [0.0, 9.0]  # a later change of Q[2] must not change the committed a'
    np.testing.assert_array_equal(sarsa.act(np.array([2, 0])), [0, 1])  # committed a' = 0; fresh greedy in 0: 1


def test_greedy_evaluation_breaks_ties_by_the_first_index_and_exploration_at_random():
    q = agent(QLearning, q=((1.0, 1.0), (0.0, 0.0), (0.0, 0.0)))
    assert q.act(np.zeros(10, int), explore=False).tolist() == [0] * 10
    assert set(q.act(np.zeros(200, int))) == {0, 1}  # epsilon 0: only the tie is random


def test_epsilon_decays_linearly_over_env_steps():
    q = QLearning(STATES, ACTIONS, context(), epsilon={"schedule": "linear", "start": 1.0, "end": 0.1, "decay_steps": 10})
    metrics = [q.observe(step(0, 0, 0.0, 1)) for _ in range(12)]
    assert [round(m["charts/epsilon"], 2) for m in metrics] == [0.91, 0.82, 0.73, 0.64, 0.55, 0.46, 0.37, 0.28,
                                                                0.19, 0.1, 0.1, 0.1]


def test_bad_schedules_are_config_errors():
    with pytest.raises(ConfigError, match=r"algo.alpha.start=0 is invalid: it must be in \(0, 1\]"):
        QLearning(STATES, ACTIONS, context(), alpha={"start": 0})
    with pytest.raises(ConfigError, match="algo.epsilon.schedule='cosine' is unknown"):
        Sarsa(STATES, ACTIONS, context(), epsilon={"start": 1.0, "schedule": "cosine"})


def test_q_table_round_trips_through_a_checkpoint(tmp_path):
    from rlrun import checkpoint

    source = agent(Sarsa, epsilon=0.3)
    source.observe(step(0, 1, 1.0, 1))
    checkpoint.save(tmp_path / "last.pt", {"agent": source.state_dict()})
    state = checkpoint.load(tmp_path / "last.pt")["agent"]
    assert tuple(state["q_table"].shape) == (3, 2)
    restored = agent(Sarsa)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.q_table, source.q_table)
    obs = np.array([0, 1, 2, 1])
    np.testing.assert_array_equal(restored.act(obs, explore=False), source.act(obs, explore=False))
    assert restored.rng.bit_generator.state == source.rng.bit_generator.state


# A tiny MDP solved by hand, gamma = 0.5. State 2 is absorbing.
#   s0, a0 -> s1, r 0          s0, a1 -> end, r 1          s1, any -> end, r 4
#   Q*(s1, .) = 4   Q*(s0, a0) = 0 + 0.5 * 4 = 2   Q*(s0, a1) = 1
TINY = {
    0: {0: [(1.0, 1, 0.0, False)], 1: [(1.0, 2, 1.0, True)]},
    1: {0: [(1.0, 2, 4.0, True)], 1: [(0.5, 2, 4.0, True), (0.5, 2, 4.0, True)]},
    2: {0: [(1.0, 2, 0.0, True)], 1: [(1.0, 2, 0.0, True)]},
}


def test_value_iteration_on_a_hand_solved_mdp():
    model = TabularModel(TINY, gamma=0.5)
    np.testing.assert_allclose(model.optimal_q(), [[2.0, 1.0], [4.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(model.policy_values(np.array([1, 0, 0])), [1.0, 4.0, 0.0])


def test_optimality_gap_of_a_suboptimal_greedy_policy():
    gap = OptimalityGap(TabularModel(TINY, gamma=0.5), initial_distribution=np.array([1.0, 0.0, 0.0]))
    metrics = gap(SimpleNamespace(q_table=np.array([[0.0, 1.5], [4.0, 4.0], [0.0, 0.0]])))
    assert metrics == {"tabular/q_error_max": pytest.approx(2.0), "tabular/greedy_value_gap": pytest.approx(1.0)}


def test_optimal_cliff_walking_path_returns_minus_13():
    env = make_env("CliffWalking-v1")
    tabular_agent = SimpleNamespace(q_table=np.zeros((env.observation_space.n, env.action_space.n)), gamma=1.0)
    gap = optimality_gap_for(env, tabular_agent)
    assert gap.optimal_start_value == pytest.approx(-13.0)
    assert optimality_gap_for(make_env("CartPole-v1"), tabular_agent) is None


def test_discretization_bins_clip_and_flatten():
    env = make_env("RlrunTest/Corridor-v0", kwargs={"length": 12}, discretize={"bins": [4], "low": [0], "high": [8]})
    assert env.observation_space == gym.spaces.Discrete(4)
    observed = [env.reset(seed=0)[0]] + [env.step(0)[0] for _ in range(11)]
    # edges at 2, 4, 6; positions past 8 are clipped into the last bin
    assert observed == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3]


def test_cartpole_discretizes_with_the_shipped_bounds():
    cfg = OmegaConf.load(next(p for p in __import__("rlrun.checks", fromlist=["x"]).packaged_configs("env")
                              if p.stem == "CartPole-v1"))
    bins = (6, 6, 12, 12)
    env = make_env("CartPole-v1", discretize={**cfg.discretize, "bins": list(bins)})
    assert env.observation_space == gym.spaces.Discrete(6 * 6 * 12 * 12)
    index = env.reset(seed=0)[0]
    raw = env.unwrapped.state
    expected = [np.digitize(raw[i], np.linspace(cfg.discretize.low[i], cfg.discretize.high[i], bins[i] + 1)[1:-1])
                for i in range(4)]
    assert index == np.ravel_multi_index(expected, bins)


@pytest.mark.parametrize("discretize, message", [
    ({"bins": [2, 2, 2, 2]}, r"observation dimensions \[1, 3\] of CartPole-v1 are unbounded"),
    ({"bins": [2, 2], "low": [-1, -1], "high": [1, 1]}, "needs one value per observation dimension"),
])
def test_bad_discretization_is_a_config_error(discretize, message):
    with pytest.raises(ConfigError, match=message):
        make_env("CartPole-v1", discretize=discretize)


def test_tuples_of_discrete_spaces_become_one_index():
    env = make_env("Blackjack-v1")
    assert env.observation_space == gym.spaces.Discrete(32 * 11 * 2)
    obs, _ = env.reset(seed=0)
    raw, _ = env.unwrapped.reset(seed=0)
    assert obs == np.ravel_multi_index(raw, (32, 11, 2))


def run_episodes(agent, env_id: str, episodes: int, seed: int) -> list[float]:
    """Online returns of `episodes` episodes of one env, stepped as the trainer steps it."""
    envs = make_vector_env(OmegaConf.create({"id": env_id, "num_envs": 1, "vectorization": "sync",
                                             "max_episode_steps": None, "kwargs": {}}))
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < episodes:
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, info = envs.step(action)
        agent.observe(Transition(obs, action, reward, true_next_obs(next_obs, info), terminated, truncated))
        obs = next_obs
        if "_episode" in info:
            returns.append(float(info["episode"]["r"][0]))
    return returns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sutton_barto_cliff_walking_sarsa_walks_safer_than_q_learning(seed):
    """Example 6.6: epsilon 0.1, alpha 0.5, gamma 1, 500 episodes, no time limit."""
    settings = dict(gamma=1.0, alpha={"start": 0.5}, epsilon={"start": 0.1})
    space = make_env("CliffWalking-v1")
    q_learning = QLearning(space.observation_space, space.action_space, context(seed=seed), **settings)
    sarsa = Sarsa(space.observation_space, space.action_space, context(seed=seed), **settings)
    q_returns = run_episodes(q_learning, "CliffWalking-v1", 500, seed)
    sarsa_returns = run_episodes(sarsa, "CliffWalking-v1", 500, seed)
    assert np.mean(sarsa_returns[100:]) > np.mean(q_returns[100:])  # the book: about -25 vs -50
    greedy_return = OptimalityGap(TabularModel(space.unwrapped.P, 1.0), space.unwrapped.initial_state_distrib)
    assert greedy_return.optimal_start_value - greedy_return(q_learning)["tabular/greedy_value_gap"] == -13.0


@pytest.mark.parametrize("algo", [QLearning, Sarsa])
def test_envs_updating_the_same_cell_average_their_td_errors(algo):
    learner = agent(algo)
    terminal_rewards = Transition(np.array([0, 0, 2]), np.array([1, 1, 0]), np.array([1.0, 3.0, 0.0]),
                                  np.array([1, 1, 1]), np.array([True, True, True]), np.array([False, False, False]))
    learner.observe(terminal_rewards)
    # TD errors at Q[0, 1] = 2: (1 - 2) and (3 - 2), mean 0: no change (a sum of 8 such errors would overshoot)
    assert learner.q_table[0, 1] == pytest.approx(2.0)
    assert learner.q_table[2, 0] == pytest.approx(4.0 + ALPHA * (0.0 - 4.0))
