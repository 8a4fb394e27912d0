"""Environment construction: gymnasium vector envs with same-step autoreset and episode statistics."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.utils import RunningMeanStd

from rlrun.errors import ConfigError

VECTORIZATIONS = {"sync": gym.vector.SyncVectorEnv, "async": gym.vector.AsyncVectorEnv}
EXTRAS = {"Box2D": "box2d"}  # modules gymnasium's envs need -> the rlrun extra that installs them


def make_env(env_id: str, max_episode_steps: int | None = None, kwargs: dict[str, Any] | None = None,
             discretize: dict[str, Any] | None = None, *, atari: dict[str, Any] | None = None,
             evaluation: bool = False) -> gym.Env:
    """gymnasium.make, then the observation wrappers below, or the Atari ones where `atari` is given (the
    training-only ones left out when `evaluation`); one-line errors for unknown ids or missing packages."""
    if env_id.startswith("ALE/") or atari:
        register_atari_envs(env_id)
    if atari:
        return atari_env(make_base_env(env_id, None, kwargs), env_id, max_episode_steps, atari, evaluation)
    return wrap_observations(make_base_env(env_id, max_episode_steps, kwargs), env_id, discretize or {})


def register_atari_envs(env_id: str) -> None:
    try:
        import ale_py
        import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
    except ModuleNotFoundError as error:
        raise ConfigError(f"env.id={env_id!r} needs {error.name}, which is not installed: install the atari extra: "
                          "pip install 'rlrun[atari]'") from error
    gym.register_envs(ale_py)


def atari_env(env: gym.Env, env_id: str, max_episode_steps: int | None, atari: dict[str, Any],
              evaluation: bool) -> gym.Env:
    """The preprocessing of the Nature DQN (Mnih et al. 2015): noop starts, frame skip (max over the last two
    frames), 84x84 grayscale, a life loss as terminal and rewards clipped to their sign for training only,
    then a stack of the last frames: uint8 observations of shape (frame_stack, screen_size, screen_size)."""
    if not hasattr(env.unwrapped, "ale"):
        raise ConfigError(f"env.atari applies to Atari games (ALE/... ids), not to {env_id}; set env.atari=null")
    env = gym.wrappers.AtariPreprocessing(env, noop_max=atari["noop_max"], frame_skip=atari["frame_skip"],
                                          screen_size=atari["screen_size"])
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)  # in agent steps, each frame_skip frames
    env = gym.wrappers.RecordEpisodeStatistics(env)  # the raw score of whole games
    if not evaluation and atari["terminal_on_life_loss"]:
        env = TerminalOnLifeLoss(env)
    if not evaluation and atari["clip_rewards"]:
        env = gym.wrappers.TransformReward(env, np.sign)
    return gym.wrappers.FrameStackObservation(env, atari["frame_stack"])


class TerminalOnLifeLoss(gym.Wrapper):
    """Ends the episode (terminated=True) when a life is lost, while the game goes on.

    Mnih et al. (2015) mark a life loss as terminal for learning, which is not the end of the game.
    AtariPreprocessing(terminal_on_life_loss=True) restarts the game on the reset() that follows, so under
    autoreset every episode would be a first life. Here that reset() returns the observation where the life was
    lost and the game continues; a game over, a time limit or a seeded reset (the trainer reseeds its envs at
    checkpoints) resets the game. Lives falling to 0 do not count: some games (Qbert) sit at 0 lives for a few
    frames before the game is over.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.continue_from: tuple[Any, dict[str, Any]] | None = None  # (obs, info) where a life was lost

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives and not (terminated or truncated)
        self.lives = lives
        self.continue_from = (obs, info) if life_lost else None
        return obs, reward, terminated or life_lost, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.continue_from is not None and seed is None:
            (obs, info), self.continue_from = self.continue_from, None
            return obs, dict(info)
        self.continue_from = None
        obs, info = self.env.reset(seed=seed, options=options)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


def make_base_env(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any] | None) -> gym.Env:
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
    except (gym.error.NameNotFound, gym.error.VersionNotFound, gym.error.NamespaceNotFound) as error:
        raise ConfigError(unknown_env_message(env_id)) from error
    except ModuleNotFoundError as error:
        raise ConfigError(f"env.id={env_id!r}: {missing_module(env_id)}") from error
    except gym.error.Error as error:
        missing = getattr(error.__cause__, "name", None)  # DependencyNotInstalled comes from a ModuleNotFoundError
        if isinstance(error, gym.error.DependencyNotInstalled) and missing in EXTRAS:
            raise ConfigError(f"env.id={env_id!r} needs {missing}, which is not installed: install the "
                              f"{EXTRAS[missing]} extra: pip install 'rlrun[{EXTRAS[missing]}]'") from error
        raise ConfigError(f"env.id={env_id!r}: {str(error).strip().splitlines()[0]}") from error
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        given = ", ".join(f"env.kwargs.{key}" for key in (kwargs or {}))
        raise ConfigError(f"env.id={env_id!r} does not take the keyword arguments given ({given}): "
                          f"{str(error).split(' was raised')[0]}; remove the ones it does not take") from error


def missing_module(env_id: str) -> str:
    """What keeps the module of a `module:Env` id from importing: the module itself, or a module it imports."""
    import importlib

    module = env_id.split(":", 1)[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module or error.name is None:
            return f"there is no module {module!r} to import; install the package that registers this environment"
        return f"module {module!r} needs {error.name!r}, which is not installed; install it"
    return f"module {module!r} imports, but creating the environment needs a module that is not installed"


def wrap_observations(env: gym.Env, env_id: str, discretize: dict[str, Any]) -> gym.Env:
    """Box observations -> one Discrete index when `discretize.bins` is set; Tuple of Discrete -> one Discrete index."""
    space = env.observation_space
    if discretize.get("bins") is not None:
        return discretized(env, env_id, discretize)
    if isinstance(space, gym.spaces.Tuple) and all(isinstance(part, gym.spaces.Discrete) for part in space):
        sizes = tuple(int(part.n) for part in space)
        starts = np.array([int(part.start) for part in space])
        return gym.wrappers.TransformObservation(
            env, lambda obs: int(np.ravel_multi_index(tuple(np.asarray(obs) - starts), sizes)),
            gym.spaces.Discrete(int(np.prod(sizes))))
    return env


def discretized(env: gym.Env, env_id: str, discretize: dict[str, Any]) -> gym.Env:
    """Clip to [low, high] (the space's bounds where not given), then cut each dimension into `bins` equal bins."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"env.discretize.bins applies to Box observations; {env_id} has {type(space).__name__} ones")
    bins = list(discretize["bins"])
    low = np.asarray(discretize.get("low") if discretize.get("low") is not None else space.low, dtype=np.float64).ravel()
    high = np.asarray(discretize.get("high") if discretize.get("high") is not None else space.high, dtype=np.float64).ravel()
    for key, values in (("bins", bins), ("low", low), ("high", high)):
        if len(values) != space.shape[0] or len(space.shape) != 1:
            raise ConfigError(f"env.discretize.{key} needs one value per observation dimension of {env_id} "
                              f"(shape {space.shape}), got {len(values)}")
    unbounded = [i for i in range(len(low)) if not np.isfinite(low[i]) or not np.isfinite(high[i])]
    if unbounded:
        raise ConfigError(f"observation dimensions {unbounded} of {env_id} are unbounded; give finite bounds with "
                          "env.discretize.low=[...] env.discretize.high=[...]")
    if any(not isinstance(b, int) or b < 1 for b in bins) or np.any(low >= high):
        raise ConfigError(f"env.discretize needs positive integer bins and low < high, got bins={bins}")
    box = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
    clipped = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, box.low, box.high), box)
    return gym.wrappers.DiscretizeObservation(clipped, bins=tuple(bins))


def unknown_env_message(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.pprint_registry() for the registered ids"
    return f"unknown environment {env_id!r}: {hint}"


def make_vector_env(env_cfg: Any, num_envs: int | None = None, vectorization: str | None = None,
                    wrap: Callable[[gym.Env], gym.Env] | None = None, evaluation: bool = False,
                    max_episode_steps: int | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of `env_cfg.id` that reset in the same step an episode ends.

    The true last observation of a finished episode is in info["final_obs"] (mask info["_final_obs"]);
    finished episodes' return and length are in info["episode"] (mask info["_episode"]).
    Box actions are clipped to the space's bounds before they reach the env. `wrap`, when given, wraps
    each copy (e.g. in gymnasium's RecordVideo); it must be picklable for async envs. `evaluation` leaves out
    the training-only Atari wrappers (life loss as terminal, reward clipping). `max_episode_steps`, when given,
    replaces env_cfg.max_episode_steps (an evaluation's own time limit). With env.normalize_rewards the training
    envs' rewards are divided by the running standard deviation of their discounted sum (gymnasium's
    NormalizeReward, with discount env.normalize_rewards_gamma, 0.99 when null); evaluation envs and
    info["episode"] keep the env's own rewards.
    """
    vectorization = vectorization or env_cfg.vectorization
    if vectorization not in VECTORIZATIONS:
        raise ConfigError(f"env.vectorization={vectorization!r} is unknown; use sync or async")
    kwargs = dict(env_cfg.kwargs or {})
    discretize = dict(env_cfg.get("discretize") or {})
    atari = dict(env_cfg.get("atari") or {})
    time_limit = max_episode_steps or env_cfg.max_episode_steps
    make_one = partial(make_env, env_cfg.id, time_limit, kwargs, discretize, atari=atari, evaluation=evaluation)
    if wrap is not None:
        make_one = partial(wrapped_env, make_one, wrap)
    envs = VECTORIZATIONS[vectorization]([make_one] * (num_envs or env_cfg.num_envs), autoreset_mode=AutoresetMode.SAME_STEP)
    if env_cfg.get("normalize_observations"):
        envs = NormalizeObservation(envs, env_cfg.id)
    envs = GameStatistics(envs) if atari else gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if env_cfg.get("normalize_rewards") and not evaluation:  # outside the statistics: episodes keep the env's returns
        gamma = env_cfg.get("normalize_rewards_gamma")
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=0.99 if gamma is None else gamma)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        bounded, batched = envs.single_action_space, envs.action_space
        envs = gym.wrappers.vector.ClipAction(envs)
        # ClipAction reports (-inf, inf) bounds; agents see the env's own (DDPG scales its actor to them)
        envs.single_action_space, envs.action_space = bounded, batched
    return envs


def wrapped_env(make: Callable[[], gym.Env], wrap: Callable[[gym.Env], gym.Env]) -> gym.Env:
    return wrap(make())


class GameStatistics(gym.vector.VectorWrapper):
    """Atari envs record their statistics over whole games themselves (an episode ends at each life loss in
    training); same-step autoreset puts them in info["final_info"]: this moves them to info["episode"] (mask
    info["_episode"]), where the vector RecordEpisodeStatistics would put them."""

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        final_info = info.get("final_info", {})
        if "_episode" in final_info:
            info["episode"], info["_episode"] = final_info["episode"], final_info["_episode"]
        return obs, reward, terminated, truncated, info


class NormalizeObservation(gym.vector.VectorWrapper):
    """Standardizes observations with running statistics, as gymnasium.wrappers.vector.NormalizeObservation does
    (same RunningMeanStd), which refuses same-step autoreset: this one also normalizes info["final_obs"].

    Set `update_running_mean = False` to freeze the statistics (evaluation envs).
    """

    def __init__(self, envs: gym.vector.VectorEnv, env_id: str, epsilon: float = 1e-8):
        super().__init__(envs)
        if not isinstance(envs.single_observation_space, gym.spaces.Box):
            raise ConfigError(f"env.normalize_observations=true needs Box observations; {env_id} has "
                              f"{type(envs.single_observation_space).__name__} ones")
        shape = envs.single_observation_space.shape
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.obs_rms = RunningMeanStd(shape=shape)
        self.epsilon = epsilon
        self.update_running_mean = True

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)).astype(np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.update_running_mean:
            self.obs_rms.update(obs)
        return self.normalize(obs), info

    def step(self, actions: Any) -> tuple[np.ndarray, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.update_running_mean:
            self.obs_rms.update(obs)
        if "_final_obs" in info:
            info["final_obs"] = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                info["final_obs"][i] = self.normalize(info["final_obs"][i])
        return self.normalize(obs), reward, terminated, truncated, info


def normalizer(envs: gym.vector.VectorEnv, kind: type[gym.vector.VectorWrapper]) -> Any:
    """The wrapper of type `kind` around `envs`, or None."""
    while not isinstance(envs, kind):
        if not isinstance(envs, gym.vector.VectorWrapper):
            return None
        envs = envs.env
    return envs


def running_statistics(rms: RunningMeanStd) -> dict[str, Any]:
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}


def use_running_statistics(rms: RunningMeanStd, statistics: dict[str, Any]) -> None:
    rms.mean = statistics["mean"].numpy().astype(np.float64)
    rms.var = statistics["var"].numpy().astype(np.float64)
    rms.count = statistics["count"]


def observation_statistics(envs: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """The running mean, variance and count of a normalizing env (None when it does not normalize), for checkpoints."""
    found = normalizer(envs, NormalizeObservation)
    return None if found is None else running_statistics(found.obs_rms)


def use_observation_statistics(envs: gym.vector.VectorEnv, statistics: dict[str, Any] | None,
                               freeze: bool = True) -> None:
    """Normalize `envs` with `statistics` (from observation_statistics) from now on: fixed ones to evaluate, or,
    with freeze=False, as the starting point of the running statistics (a resumed training run)."""
    found = normalizer(envs, NormalizeObservation)
    if found is None or statistics is None:
        return
    use_running_statistics(found.obs_rms, statistics)
    found.update_running_mean = not freeze


def reward_statistics(envs: gym.vector.VectorEnv) -> dict[str, Any] | None:
    """The running statistics of the discounted returns that env.normalize_rewards divides the rewards by (None
    without it), for checkpoints. The returns summed so far are not kept: a checkpoint is written at a sync point,
    where every env resets, which starts them again at 0."""
    found = normalizer(envs, gym.wrappers.vector.NormalizeReward)
    return None if found is None else running_statistics(found.return_rms)


def use_reward_statistics(envs: gym.vector.VectorEnv, statistics: dict[str, Any] | None) -> None:
    """Go on from `statistics` (from reward_statistics): a resumed training run."""
    found = normalizer(envs, gym.wrappers.vector.NormalizeReward)
    if found is not None and statistics is not None:
        use_running_statistics(found.return_rms, statistics)
