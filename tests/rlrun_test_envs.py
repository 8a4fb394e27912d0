"""Environments for the tests; importing this module registers them (also as `rlrun_test_envs:<id>`).

It also lets a test stop an rlrun process at a known point, to kill it there whatever the machine's speed:
with RLRUN_TEST_STOP set, the process creates the file RLRUN_TEST_STOPPED and waits (until it is killed; once: not
where that file already exists) at

    steps:<n>:<k>   the k-th env step of a RlrunTest/StopsAtStep-v0 env after the n-th last.pt is written (n = 0:
                    from the start; evaluation steps count too)
    write:<n>       the n-th checkpoint write (any .pt), its temp file just created, still empty
    rename:<n>      the n-th checkpoint write, its temp file written and synced, before the rename over the old file
"""

import gc
import os
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

STOP = os.environ.get("RLRUN_TEST_STOP", "")
checkpoints_written = 0   # last.pt renames in this process
checkpoint_temp_files = {"write": 0, "rename": 0}
steps_after_checkpoint = 0
temp_file_opening = False  # a checkpoint's temp file is being created


def wait_to_be_killed() -> None:
    """Stop here once: a process that finds the file made (a job requeued after the stop) goes on."""
    if os.path.exists(os.environ["RLRUN_TEST_STOPPED"]):
        return
    with open(os.environ["RLRUN_TEST_STOPPED"], "w") as marker:
        marker.write(str(os.getpid()))
    while True:
        time.sleep(60)


def is_checkpoint_temp_file(path) -> bool:
    name = os.path.basename(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
    return isinstance(name, str) and name.startswith(".") and ".pt." in name and name.endswith(".rlrun-tmp")


def stop_at_checkpoint_writes(event: str, args: tuple) -> None:
    """An audit hook: sees the temp files of checkpoint writes created (the audit event of os.open comes before the
    file exists: the stop waits for the os.fdopen that follows) and renamed."""
    global checkpoints_written, temp_file_opening
    if event == "open" and isinstance(args[0], int) and temp_file_opening:
        temp_file_opening = False
        checkpoint_temp_files["write"] += 1
        if STOP == f"write:{checkpoint_temp_files['write']}":
            wait_to_be_killed()
    if event not in ("open", "os.rename") or not args or not is_checkpoint_temp_file(args[0]):
        return
    if event == "open":
        temp_file_opening = bool((args[2] or 0) & os.O_CREAT)
        return
    checkpoint_temp_files["rename"] += 1
    if STOP == f"rename:{checkpoint_temp_files['rename']}":
        wait_to_be_killed()
    if os.path.basename(os.fspath(args[0])).startswith(".last.pt."):
        checkpoints_written += 1


if STOP:
    sys.addaudithook(stop_at_checkpoint_writes)


class StopsAtStep(gym.Wrapper):
    """The gymnasium env `wraps` (made with the other keyword arguments), stepping as it does, where a test can stop
    the process (RLRUN_TEST_STOP=steps:<n>:<k>)."""

    def __init__(self, wraps: str, **kwargs):
        super().__init__(gym.make(wraps, **kwargs))

    def step(self, action):
        global steps_after_checkpoint
        if STOP.startswith("steps:"):
            after, at = (int(part) for part in STOP.split(":")[1:])
            if checkpoints_written >= after:
                steps_after_checkpoint += 1
                if steps_after_checkpoint == at:
                    wait_to_be_killed()
        return self.env.step(action)


gym.register("RlrunTest/StopsAtStep-v0", entry_point=StopsAtStep)


class Corridor(gym.Env):
    """Walk right one cell per step whatever the action; reward 1 per step; terminates at `length`.

    The observation is the position, so an episode's final observation (`length`) is easy to tell
    apart from the first observation of the next episode (0).
    """

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 5, reward: float = 1.0):
        self.length = length
        self.reward = reward
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return np.array([self.position], np.float32), {}

    def step(self, action):
        self.position += 1
        return np.array([self.position], np.float32), self.reward, self.position >= self.length, False, {}


gym.register("RlrunTest/Corridor-v0", entry_point=Corridor)


class GarbageCollectedCorridor(Corridor):
    """A Corridor that fails in a process where Python's cyclic garbage collector is off (rlrun pauses it while
    it imports torch; async env workers forked then would never collect their garbage)."""

    def step(self, action):
        if not gc.isenabled():
            raise RuntimeError("this env is stepped in a process whose garbage collector is off")
        return super().step(action)


gym.register("RlrunTest/GarbageCollectedCorridor-v0", entry_point=GarbageCollectedCorridor)


class DictObservations(gym.Env):
    """An env whose Dict observations no rlrun algorithm reads."""

    observation_space = gym.spaces.Dict({"position": gym.spaces.Discrete(3)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {"position": 0}, {}

    def step(self, action):
        return {"position": 0}, 0.0, True, False, {}


gym.register("RlrunTest/DictObservations-v0", entry_point=DictObservations)


class TupleActions(gym.Env):
    """An env whose Tuple actions no rlrun algorithm takes."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


gym.register("RlrunTest/TupleActions-v0", entry_point=TupleActions)


class UnboundedActions(Corridor):
    """A Corridor whose Box actions have no bounds, which a tanh actor cannot scale to."""

    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


gym.register("RlrunTest/UnboundedActions-v0", entry_point=UnboundedActions)


class PixelGrid(gym.Env):
    """A `size` x `size` gridworld seen only as pixels: one uint8 channel, `cell` x `cell` pixels per cell (42 x 42
    by default, enough for the Nature DQN convolutions), the agent drawn at 255 and the goal (the bottom-right
    cell) at 128. Episodes start in a random cell other than
    the goal; actions move up, down, left, right; reward -0.01 per step and +1 on reaching the goal, which
    terminates the episode. The best policy walks the Manhattan distance to the goal (return ~0.94 on average)."""

    action_space = gym.spaces.Discrete(4)
    moves = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])

    def __init__(self, size: int = 7, cell: int = 6):
        self.size, self.cell = size, cell
        self.observation_space = gym.spaces.Box(0, 255, (1, size * cell, size * cell), np.uint8)
        self.goal = np.array([size - 1, size - 1])
        self.position = np.zeros(2, dtype=int)

    def render_pixels(self) -> np.ndarray:
        image = np.zeros(self.observation_space.shape, np.uint8)
        for (row, column), shade in ((self.goal, 128), (self.position, 255)):
            image[0, row * self.cell:(row + 1) * self.cell, column * self.cell:(column + 1) * self.cell] = shade
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        start = self.np_random.integers(self.size * self.size - 1)  # any cell but the goal (the last one)
        self.position = np.array(divmod(int(start), self.size))
        return self.render_pixels(), {}

    def step(self, action):
        self.position = np.clip(self.position + self.moves[action], 0, self.size - 1)
        at_goal = bool((self.position == self.goal).all())
        return self.render_pixels(), (1.0 if at_goal else 0.0) - 0.01, at_goal, False, {}


gym.register("RlrunTest/PixelGrid-v0", entry_point=PixelGrid, max_episode_steps=50)


class PacedCartPole(CartPoleEnv):
    """CartPole that sleeps `pause_s` in every step: a run of a few thousand steps lasts long enough on any machine
    for a test to interrupt it between two checkpoints, and leaves the CPU to the other tests while it waits."""

    def __init__(self, pause_s: float = 0.005, **kwargs):
        super().__init__(**kwargs)
        self.pause_s = pause_s

    def step(self, action):
        time.sleep(self.pause_s)
        return super().step(action)


# no namespace: a sweep names its job folders by the overrides, and the `/` of `RlrunTest/...` would nest them
gym.register("PacedCartPole-v0", entry_point=PacedCartPole, max_episode_steps=500)
