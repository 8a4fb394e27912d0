"""Atari envs (real ale-py games): the Nature DQN preprocessing, life loss, reward clipping and game scores."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

pytest.importorskip("ale_py")

import rlrun.cli  # noqa: E402,F401  (registers the path_safe resolver)
import torch  # noqa: E402
from conftest import read_summary, run_rlrun  # noqa: E402

from rlrun.buffers import FrameReplayBuffer  # noqa: E402
from rlrun.checkpoint import Checkpointer  # noqa: E402
from rlrun.checks import packaged_configs  # noqa: E402
from rlrun.core import Agent  # noqa: E402
from rlrun.envs import make_env, make_vector_env  # noqa: E402
from rlrun.errors import ConfigError  # noqa: E402
from rlrun.recording import Recorder  # noqa: E402
from rlrun.run import build_agent, check_config  # noqa: E402
from rlrun.trainer import Trainer, TrainerSettings  # noqa: E402

ATARI = {"noop_max": 30, "frame_skip": 4, "screen_size": 84, "terminal_on_life_loss": True, "clip_rewards": True,
         "frame_stack": 4}


def atari_cfg(env_id: str, max_episode_steps: int | None = None):
    return OmegaConf.create({"id": env_id, "num_envs": 1, "vectorization": "sync", "max_episode_steps": max_episode_steps,
                             "kwargs": {"frameskip": 1}, "atari": ATARI})


def lives(envs: gym.vector.VectorEnv) -> int:
    return envs.unwrapped.envs[0].unwrapped.ale.lives()


class RandomAgent(Agent):
    observation_spaces = (gym.spaces.Box,)
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self, action_space):
        self.action_space = action_space
        self.terminations = 0

    def act(self, obs, explore=True):
        return np.array([self.action_space.sample() for _ in obs])

    def observe(self, t):
        self.terminations += int(t.terminated.sum())
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.fixture(scope="module")
def space_invaders_game():
    """One game of SpaceInvaders (3 lives, 5-30 points an alien) played with the same random actions by a
    training env and an evaluation env from the same seed, until the evaluation game is over."""
    train, evaluation = make_vector_env(atari_cfg("ALE/SpaceInvaders-v5")), \
        make_vector_env(atari_cfg("ALE/SpaceInvaders-v5"), evaluation=True)
    train.reset(seed=3)
    evaluation.reset(seed=3)
    rng = np.random.default_rng(0)
    steps = []
    game_over = False
    while not game_over:
        action = rng.integers(train.single_action_space.n, size=1)
        train_step, eval_step = train.step(action), evaluation.step(action)
        steps.append((train_step, eval_step))
        game_over = eval_step[2][0] or eval_step[3][0]
    return steps


def test_observations_are_stacks_of_84x84_uint8_frames():
    for evaluation in (False, True):
        env = make_env("ALE/Breakout-v5", kwargs={"frameskip": 1}, atari=ATARI, evaluation=evaluation)
        obs, _ = env.reset(seed=0)
        assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8


def test_training_and_evaluation_play_the_same_game(space_invaders_game):
    for train_step, eval_step in space_invaders_game:
        assert np.array_equal(train_step[0][0, -1], eval_step[0][0, -1])  # the newest frame


def test_training_clips_rewards_and_evaluation_reports_raw_ones(space_invaders_game):
    train_rewards = np.array([train_step[1][0] for train_step, _ in space_invaders_game])
    eval_rewards = np.array([eval_step[1][0] for _, eval_step in space_invaders_game])
    assert set(train_rewards) <= {-1.0, 0.0, 1.0}
    assert eval_rewards.max() > 1
    np.testing.assert_array_equal(train_rewards, np.sign(eval_rewards))


def test_life_loss_ends_training_episodes_only(space_invaders_game):
    train_terminations = [train_step[2][0] for train_step, _ in space_invaders_game]
    eval_terminations = [eval_step[2][0] for _, eval_step in space_invaders_game]
    assert sum(train_terminations) == 3 and train_terminations[-1]  # 2 lives lost, then the game over
    assert sum(eval_terminations) == 1


def test_the_trainer_gets_the_raw_score_of_the_whole_game(space_invaders_game):
    episode_infos = [train_step[4] for train_step, _ in space_invaders_game if "_episode" in train_step[4]]
    assert len(episode_infos) == 1 and episode_infos[0] is space_invaders_game[-1][0][4]
    raw_score = sum(eval_step[1][0] for _, eval_step in space_invaders_game)
    clipped_score = sum(train_step[1][0] for train_step, _ in space_invaders_game)
    assert episode_infos[0]["episode"]["r"][0] == raw_score > clipped_score
    assert episode_infos[0]["episode"]["l"][0] == len(space_invaders_game)


def test_after_a_life_loss_the_game_goes_on_until_a_seeded_reset():
    envs = make_vector_env(atari_cfg("ALE/Breakout-v5"))
    envs.reset(seed=0)
    envs.action_space.seed(0)
    assert lives(envs) == 5
    terminated = np.zeros(1, bool)
    while not terminated[0]:
        obs, _, terminated, _, info = envs.step(envs.action_space.sample())
    assert lives(envs) == 4 and "_episode" not in info  # autoreset did not restart the game
    assert np.array_equal(obs[0, -1], info["final_obs"][0][-1])  # the next episode starts where the life was lost
    for _ in range(5):
        envs.step(envs.action_space.sample())
    assert lives(envs) <= 4
    envs.reset(seed=1)
    assert lives(envs) == 5


def test_a_time_limit_counts_agent_steps_and_ends_the_game_with_its_score():
    envs = make_vector_env(atari_cfg("ALE/Breakout-v5", max_episode_steps=30))
    envs.reset(seed=0)
    for _ in range(30):
        _, _, _, truncated, info = envs.step(np.array([1]))
    assert truncated[0] and info["_episode"][0] and info["episode"]["l"][0] == 30
    assert lives(envs) == 5  # the truncated game was reset


def test_the_trainer_counts_games_not_lives(tmp_path):
    envs = make_vector_env(atari_cfg("ALE/Breakout-v5"))
    agent = RandomAgent(envs.single_action_space)
    agent.action_space.seed(0)
    settings = TrainerSettings(total_steps=600, eval_every=10**6, checkpoint_every=10**6, log_every=100, seed=0)
    config = {"seed": 0, "total_steps": 600, "env": {"id": "ALE/Breakout-v5"}, "algo": {}, "network": {}}
    summary = Trainer(agent, envs, make_vector_env(atari_cfg("ALE/Breakout-v5", max_episode_steps=50), evaluation=True),
                      settings, Checkpointer(tmp_path, agent, config),
                      Recorder(tmp_path, config, "random", settings.total_steps, progress=False)).run()
    assert summary["episodes"] >= 1
    assert agent.terminations >= 5 * summary["episodes"]  # each game: 4 life losses, then the game over


def test_plain_ale_ids_register_without_preprocessing():
    env = make_env("ALE/Pong-v5")
    assert env.observation_space.shape == (210, 160, 3)


def test_an_atari_block_needs_an_atari_game():
    with pytest.raises(ConfigError, match="env.atari applies to Atari games"):
        make_env("CartPole-v1", atari=ATARI)


def test_without_ale_py_the_error_says_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(ConfigError, match=r"needs ale_py.*pip install 'rlrun\[atari\]'"):
        make_env("ALE/Pong-v5", kwargs={"frameskip": 1}, atari=ATARI)


@pytest.mark.parametrize("algo", sorted(path.stem for path in packaged_configs("algo")))
def test_the_atari_config_composes_with_every_algo(algo):
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        cfg = compose("config", overrides=[f"algo={algo}", "env=atari", "env.id=ALE/Breakout-v5"])
    config = OmegaConf.to_container(cfg, resolve=True)
    check_config(config)
    assert cfg.env.id == "ALE/Breakout-v5" and OmegaConf.to_container(cfg.env.atari) == ATARI
    if algo not in ("dqn", "a2c", "ppo", "reinforce"):
        return  # they do not take image observations or Discrete actions (the CLI says so)
    envs = make_vector_env(cfg.env, num_envs=1, vectorization="sync")
    agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
    convolutions = [layer.out_channels for layer in agent_modules(agent) if isinstance(layer, torch.nn.Conv2d)]
    assert convolutions[:3] == [32, 64, 64]  # network=auto gave the Nature CNN
    if algo == "dqn":  # the preset's 1M-frame replay memory: ~7 GB allocated, not yet touched
        assert isinstance(agent.replay_buffer, FrameReplayBuffer) and agent.replay_buffer.rows.capacity == 1_000_000
        assert 84 * 84 * 10**6 <= agent.replay_buffer.nbytes <= 1.02 * 84 * 84 * 10**6


def agent_modules(agent):
    return [module for value in vars(agent).values() if isinstance(value, torch.nn.Module) for module in value.modules()]


@pytest.mark.parametrize("algo", ["dqn", pytest.param("a2c", marks=pytest.mark.slow)])  # a2c: test_pixels has its CNN
def test_dqn_and_a2c_train_checkpoint_and_resume_on_pong(tmp_path, algo):
    args = [f"algo={algo}", "env=atari", "env.id=ALE/Pong-v5", "env.max_episode_steps=100", "eval.every=200",
            "eval.episodes=1", "checkpoint.every=200", "progress=false",
            *(["algo.learning_starts=100", "algo.buffer_size=1000"] if algo == "dqn" else
              ["env.num_envs=2", "env.vectorization=sync"])]
    first = run_rlrun(*args, "total_steps=200", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_rlrun("resume=run", "total_steps=400", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = read_summary(tmp_path / "run")
    assert summary["env_steps"] == 400 and len(summary["evaluations"]) == 2


def test_rlrun_cfg_job_shows_the_atari_config(tmp_path):
    result = run_rlrun("--cfg", "job", "algo=dqn", "env=atari", "env.id=ALE/Breakout-v5", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "id: ALE/Breakout-v5" in result.stdout and "frame_stack: 4" in result.stdout
