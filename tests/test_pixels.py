"""Learning from pixels: the algorithms with network=cnn on a gridworld seen as an image (tests/rlrun_test_envs.py)."""

from __future__ import annotations

import pytest
from conftest import read_summary, run_rlrun

from rlrun import checkpoint

PIXEL_GRID = ["env=gym", "env.id=rlrun_test_envs:RlrunTest/PixelGrid-v0", "progress=false"]
# convolutions that see one grid cell (6 x 6 pixels) per step: the Nature ones learn too, but slower on a CPU
CELL_CNN = ["network=cnn", "network.conv_layers=[[16,6,6],[32,3,1]]", "network.hidden_sizes=[128]"]


def test_dqn_with_a_cnn_learns_the_gridworld_from_pixels(tmp_path):
    result = run_rlrun("algo=dqn", *PIXEL_GRID, *CELL_CNN, "total_steps=3000", "eval.every=1000", "seed=0",
                       "algo.lr=0.0005", "algo.learning_starts=500", "algo.target_update_every=500",
                       "algo.epsilon.decay_steps=2000", "algo.n_step=3", "eval.max_episode_steps=20",
                       "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # walking the shortest path (at most 12 steps) returns ~0.94 on average; missing the goal in the evaluation's
    # 20 steps returns -0.2
    assert read_summary(tmp_path / "run")["final_eval"]["mean_return"] >= 0.85


@pytest.mark.parametrize("algo", ["a2c", "ppo", "reinforce", "dqn"])
def test_network_auto_trains_the_nature_cnn_and_resumes(tmp_path, algo):
    args = (f"algo={algo}", *PIXEL_GRID, "eval.every=300", "eval.episodes=2", "checkpoint.every=300",
            *(["algo.learning_starts=100"] if algo == "dqn" else []),
            *(["algo.n_steps=50", "algo.num_minibatches=2"] if algo == "ppo" else []))
    first = run_rlrun(*args, "total_steps=300", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_rlrun("resume=run", "total_steps=600", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert read_summary(tmp_path / "run")["env_steps"] == 600
    weights = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["agent"]
    convolutions = [tensor.shape for tensor in _tensors(weights) if tensor.dim() == 4]
    assert convolutions[:3] == [(32, 1, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3)]


def _tensors(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _tensors(value)
    elif hasattr(node, "dim"):
        yield node
