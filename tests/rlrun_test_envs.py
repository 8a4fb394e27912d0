"""Environments for the tests; importing this module registers them (also as `rlrun_test_envs:<id>`)."""

import gymnasium as gym
import numpy as np


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
