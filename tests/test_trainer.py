"""The trainer loop against a tiny deterministic env and a recording agent."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun import checkpoint
from rlrun.checkpoint import Checkpointer
from rlrun.core import Agent, ReplayMemory
from rlrun.envs import make_vector_env
from rlrun.errors import TrainingDiverged
from rlrun.recording import Recorder
from rlrun.returns import intervals_passed
from rlrun.trainer import Trainer, TrainerSettings, evaluate, true_next_obs


class RecordingAgent(Agent):
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


def make_trainer(agent, run_dir, settings, train_envs=2, eval_envs=2, keep=1, save_replay=None) -> Trainer:
    """A trainer on corridors, with the checkpointer and recorder of a run of CONFIG in `run_dir`."""
    return Trainer(agent, make_vector_env(corridor_cfg(train_envs)), make_vector_env(corridor_cfg(eval_envs)), settings,
                   Checkpointer(run_dir, agent, CONFIG, keep=keep, save_replay=save_replay),
                   Recorder(run_dir, CONFIG, "recording", settings.total_steps, progress=False))


@pytest.fixture
def finished_run(tmp_path):
    agent = RecordingAgent()
    settings = TrainerSettings(total_steps=25, eval_every=10, checkpoint_every=12, log_every=5, seed=0)
    trainer = make_trainer(agent, tmp_path, settings, eval_envs=3)
    return agent, trainer.run(), tmp_path


def test_counts_env_steps_over_all_envs(finished_run):
    agent, summary, _ = finished_run
    assert len(agent.transitions) == 13  # 13 vector steps of 2 envs pass 25 env steps
    assert summary["env_steps"] == 26
    assert summary["episodes"] == 4  # each env finishes a 5-step episode at vector steps 5 and 11


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


def test_checkpoints_are_sync_points_that_end_every_running_episode(finished_run):
    agent, _, _ = finished_run
    for index in (5, 11):  # vector steps 6 and 12 reach the checkpoint interval (12 and 24 env steps)
        t = agent.transitions[index]
        assert t.truncated.all() and not t.terminated.any()
        assert (t.next_obs[:, 0] == t.obs[:, 0] + 1).all()  # the true next observation
        assert (agent.transitions[index + 1].obs[:, 0] == 0.0).all()  # restarted envs
    assert sum(t.truncated.sum() for t in agent.transitions) == 4


def test_evaluates_at_each_interval_and_at_the_end(finished_run):
    _, summary, _ = finished_run
    assert [e["step"] for e in summary["evaluations"]] == [10, 20, 26]
    assert all(e["mean_return"] == 5.0 and e["std_return"] == 0.0 for e in summary["evaluations"])
    assert summary["final_eval"] == {"mean_return": 5.0, "std_return": 0.0, "episodes": 3}


def test_checkpoints_at_the_interval_on_improvement_and_at_the_end(finished_run):
    agent, _, run_dir = finished_run
    # best.pt at the first eval (step 10), last.pt at 12 and 24 env steps (6, 12 vector steps) and at the end
    assert agent.checkpointed_after == [5, 6, 12, 13]
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert last["env_steps"] == 26 and int(last["agent"]["observed"]) == 13
    assert last["config"] == CONFIG
    assert checkpoint.load(run_dir / "checkpoints" / "best.pt")["env_steps"] == 10


def test_tensorboard_logs_in_env_steps(finished_run):
    _, _, run_dir = finished_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = {tag: [s.step for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    # both envs finish an episode at vector steps 5 and 11: one mean per log interval that saw episodes end
    assert steps["charts/episodic_return"] == steps["charts/episodic_length"] == [10, 26]
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


def test_evaluation_takes_a_random_action_with_probability_epsilon():
    envs = make_vector_env(OmegaConf.create({"id": "RlrunTest/PixelGrid-v0", "num_envs": 20, "vectorization": "sync",
                                             "max_episode_steps": None, "kwargs": {}}))
    always_up = evaluate(RecordingAgent(), envs, seed=0)
    np.testing.assert_allclose(always_up, -0.5)  # 50 steps of -0.01: walking up never reaches the bottom-right goal
    random_walk = evaluate(RecordingAgent(), envs, seed=0, epsilon=1.0)
    assert random_walk.max() > 0  # some random walks reach the goal
    np.testing.assert_array_equal(random_walk, evaluate(RecordingAgent(), envs, seed=0, epsilon=1.0))  # seeded


def test_an_evaluation_time_limit_replaces_the_envs_own():
    envs = make_vector_env(corridor_cfg(1, max_episode_steps=4), max_episode_steps=2, evaluation=True)
    envs.reset(seed=0)
    envs.step(np.array([0]))
    _, _, terminated, truncated, _ = envs.step(np.array([0]))
    assert truncated[0] and not terminated[0]


def test_crossed_detects_each_multiple_once():
    def crossed(before, after, every):
        return intervals_passed(before, after, every) > 0

    assert [s for s in range(0, 30, 4) if crossed(s, s + 4, 10)] == [8, 16, 28]
    assert crossed(8, 12, 10) and not crossed(10, 14, 10) and crossed(18, 20, 10)


class CrashingAgent(RecordingAgent):
    """Interrupted (Ctrl-C) while observing its 9th transition."""

    def observe(self, t):
        if len(self.transitions) == 8:
            raise KeyboardInterrupt
        return super().observe(t)


def test_a_run_resumed_after_a_crash_continues_exactly(tmp_path):
    def trainer(agent, run_dir):
        settings = TrainerSettings(total_steps=30, eval_every=10, checkpoint_every=12, log_every=5, seed=3)
        return make_trainer(agent, run_dir, settings)

    whole = RecordingAgent()
    whole_summary = trainer(whole, tmp_path / "whole").run()
    with pytest.raises(KeyboardInterrupt):
        trainer(CrashingAgent(), tmp_path / "cut").run()
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert checkpoint.load(checkpoints / "last.pt")["env_steps"] == 12  # the sync point before the crash
    assert checkpoint.load(checkpoints / "interrupted.pt")["env_steps"] == 18  # 9 env steps, the 9th unobserved
    # TensorBoard reads a folder's event files in name order: the second they were made, then the host, the pid and
    # a per-process counter, whose "10" sorts before "9". A real resume comes seconds after the crash; so here.
    time.sleep(1)
    resumed = RecordingAgent()
    saved = checkpoint.load(checkpoints / "last.pt")
    saved["recorder"]["train_seconds"] = 1000.0  # as if the first 12 steps had taken that long
    resumed_summary = trainer(resumed, tmp_path / "cut").run(saved)
    assert len(resumed.transitions) == 9  # vector steps 7 to 15
    for a, b in zip(whole.transitions[6:], resumed.transitions, strict=True):
        for field in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    for key in ("env_steps", "episodes", "evaluations", "final_eval", "best_eval_return"):
        assert resumed_summary[key] == whole_summary[key]
    assert resumed_summary["steps_per_second"] < 30 / 1000  # steps per second of the whole run, not since the resume
    events = EventAccumulator(str(tmp_path / "cut"))
    events.Reload()
    assert [s.step for s in events.Scalars("eval/mean_return")] == [10, 20, 30]  # each step once
    assert [s.step for s in events.Scalars("losses/loss")] == [6, 10, 16, 20, 26, 30]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    class Diverging(RecordingAgent):
        def observe(self, t):
            super().observe(t)
            return {"td_loss": float("nan") if len(self.transitions) == 9 else 1.0}

    settings = TrainerSettings(total_steps=30, eval_every=100, checkpoint_every=12, log_every=5, seed=0)
    trainer = make_trainer(Diverging(), tmp_path, settings)
    with pytest.raises(TrainingDiverged, match=r"losses/td_loss became nan at env step 18; training stopped and the "
                                               r"last good checkpoint is .*last.pt \(env step 12\)"):
        trainer.run()
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["env_steps"] == 12
    assert not (tmp_path / "checkpoints" / "interrupted.pt").exists() and not (tmp_path / "summary.json").exists()


def test_checkpoint_keep_holds_the_last_k_interval_checkpoints(tmp_path):
    settings = TrainerSettings(total_steps=40, eval_every=100, checkpoint_every=6, log_every=5, seed=0)
    make_trainer(RecordingAgent(), tmp_path, settings, keep=3).run()
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_30.pt", "step_36.pt"]


class FixedReplay(ReplayMemory):
    def state_dict(self):
        return {"fields": {"obs": torch.zeros(1000)}, "size": 1000}

    def load_state_dict(self, state):
        pass


class ReplayAgent(RecordingAgent):
    def __init__(self):
        super().__init__()
        self.replay_buffer = FixedReplay()


@pytest.mark.parametrize("save_replay, limit, saved", [(None, 2**30, True), (None, 100, False), (True, 100, True),
                                                       (False, 2**30, False)])
def test_the_replay_buffer_goes_into_last_pt_as_checkpoint_save_replay_says(tmp_path, monkeypatch, save_replay,
                                                                            limit, saved):
    monkeypatch.setattr("rlrun.checkpoint.REPLAY_SAVE_LIMIT", limit)  # bytes; the buffer holds 4000
    settings = TrainerSettings(total_steps=10, eval_every=100, checkpoint_every=100, log_every=5, seed=0)
    make_trainer(ReplayAgent(), tmp_path, settings, save_replay=save_replay).run()
    assert ("replay_buffer" in checkpoint.load(tmp_path / "checkpoints" / "last.pt")) is saved
    assert "replay_buffer" not in checkpoint.load(tmp_path / "checkpoints" / "best.pt")
