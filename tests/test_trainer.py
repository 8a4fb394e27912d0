"""The trainer loop against a tiny deterministic env and a recording agent."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun import checkpoint
from rlrun.envs import make_vector_env
from rlrun.trainer import Trainer, TrainerSettings, crossed, true_next_obs


class RecordingAgent:
    """Always takes action 0; remembers every transition and when it was checkpointed."""

    observation_spaces = (gym.spaces.Box,)
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self):
        self.transitions = []
        self.checkpointed_after = []

    def act(self, obs, explore=True):
        return np.zeros(len(obs), dtype=np.int64)

    def observe(self, t):
        self.transitions.append(t)
        return {"loss": float(len(self.transitions)), "charts/custom": 2.0}

    def state_dict(self):
        self.checkpointed_after.append(len(self.transitions))
        return {"observed": torch.tensor(len(self.transitions))}

    def load_state_dict(self, state):
        pass


def corridor_cfg(num_envs: int, max_episode_steps=None):
    return OmegaConf.create({"id": "RlrunTest/Corridor-v0", "num_envs": num_envs, "vectorization": "sync",
                             "max_episode_steps": max_episode_steps, "kwargs": {"length": 5}})


CONFIG = {"seed": 0, "total_steps": 25, "algo": {"_target_": "tests.RecordingAgent"},
          "env": {"id": "RlrunTest/Corridor-v0", "num_envs": 2}, "network": {}}


@pytest.fixture
def finished_run(tmp_path):
    agent = RecordingAgent()
    settings = TrainerSettings(total_steps=25, eval_every=10, checkpoint_every=8, log_every=5, seed=0,
                               progress=False, algo="recording")
    trainer = Trainer(agent, make_vector_env(corridor_cfg(2)), make_vector_env(corridor_cfg(3)), tmp_path,
                      settings, CONFIG)
    return agent, trainer.run(), tmp_path


def test_counts_env_steps_over_all_envs(finished_run):
    agent, summary, _ = finished_run
    assert len(agent.transitions) == 13  # 13 vector steps of 2 envs pass 25 env steps
    assert summary["env_steps"] == 26
    assert summary["episodes"] == 4  # each env finishes its 5-step episode at vector steps 5 and 10


def test_hands_the_final_observation_to_the_agent(finished_run):
    agent, _, _ = finished_run
    ends = 0
    for t in agent.transitions:
        for i in range(2):
            if t.terminated[i]:
                assert t.next_obs[i, 0] == 5.0  # the final obs, not the reset obs 0
                ends += 1
            else:
                assert t.next_obs[i, 0] == t.obs[i, 0] + 1
    assert ends == 4
    assert agent.transitions[5].obs[0, 0] == 0.0  # the env was reset in the step it terminated


def test_evaluates_at_each_interval_and_at_the_end(finished_run):
    _, summary, _ = finished_run
    assert [e["step"] for e in summary["evaluations"]] == [10, 20, 26]
    assert all(e["mean_return"] == 5.0 and e["std_return"] == 0.0 for e in summary["evaluations"])
    assert summary["final_eval"] == {"mean_return": 5.0, "std_return": 0.0, "episodes": 3}


def test_checkpoints_at_the_interval_on_improvement_and_at_the_end(finished_run):
    agent, _, run_dir = finished_run
    # last.pt at 8, 16, 24 env steps (4, 8, 12 vector steps), best.pt at the first eval (step 10), last.pt at the end
    assert agent.checkpointed_after == [4, 5, 8, 12, 13]
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert last["env_steps"] == 26 and int(last["agent"]["observed"]) == 13
    assert last["config"] == CONFIG
    assert checkpoint.load(run_dir / "checkpoints" / "best.pt")["env_steps"] == 10


def test_tensorboard_logs_in_env_steps(finished_run):
    _, _, run_dir = finished_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = {tag: [s.step for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    # both envs finish an episode at vector steps 5 and 10: one mean per log interval that saw episodes end
    assert steps["charts/episodic_return"] == steps["charts/episodic_length"] == [10, 20]
    assert [s.value for s in events.Scalars("charts/episodic_length")] == [5, 5]
    assert steps["eval/mean_return"] == [10, 20, 26]
    assert steps["losses/loss"] == steps["charts/custom"] == steps["charts/SPS"] == [6, 10, 16, 20, 26]
    assert [s.value for s in events.Scalars("losses/loss")] == [2.0, 4.5, 7.0, 9.5, 12.0]  # means over each interval


def test_truncation_is_reported_with_the_final_observation(tmp_path):
    envs = make_vector_env(corridor_cfg(1, max_episode_steps=3))
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        obs, _, terminated, truncated, info = envs.step(np.zeros(1, dtype=np.int64))
    assert truncated[0] and not terminated[0]
    assert obs[0, 0] == 0.0 and true_next_obs(obs, info)[0, 0] == 3.0


def test_crossed_detects_each_multiple_once():
    assert [s for s in range(0, 30, 4) if crossed(s, s + 4, 10)] == [8, 16, 28]
    assert crossed(8, 12, 10) and not crossed(10, 14, 10) and crossed(18, 20, 10)
