"""Environment construction: gymnasium vector envs with same-step autoreset and episode statistics."""

from __future__ import annotations

import difflib
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from rlrun.core import ConfigError

VECTORIZATIONS = {"sync": gym.vector.SyncVectorEnv, "async": gym.vector.AsyncVectorEnv}


def make_env(env_id: str, max_episode_steps: int | None = None, kwargs: dict[str, Any] | None = None) -> gym.Env:
    """gymnasium.make with a one-line error for unknown ids (suggesting close names) or missing packages."""
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
    except (gym.error.NameNotFound, gym.error.VersionNotFound, gym.error.NamespaceNotFound) as error:
        raise ConfigError(unknown_env_message(env_id)) from error
    except ModuleNotFoundError as error:
        module = env_id.split(":", 1)[0]
        raise ConfigError(f"env.id={env_id!r}: cannot import module {module!r} ({error.name} is not installed?); "
                          "install the package that registers this environment") from error
    except gym.error.Error as error:
        raise ConfigError(f"env.id={env_id!r}: {str(error).strip().splitlines()[0]}") from error


def unknown_env_message(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.pprint_registry() for the registered ids"
    return f"unknown environment {env_id!r}: {hint}"


def make_vector_env(env_cfg: Any, num_envs: int | None = None, vectorization: str | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of `env_cfg.id` that reset in the same step an episode ends.

    The true last observation of a finished episode is in info["final_obs"] (mask info["_final_obs"]);
    finished episodes' return and length are in info["episode"] (mask info["_episode"]).
    Box actions are clipped to the space's bounds before they reach the env.
    """
    vectorization = vectorization or env_cfg.vectorization
    if vectorization not in VECTORIZATIONS:
        raise ConfigError(f"env.vectorization={vectorization!r} is unknown; use sync or async")
    kwargs = dict(env_cfg.kwargs or {})
    make_one = partial(make_env, env_cfg.id, env_cfg.max_episode_steps, kwargs)
    envs = VECTORIZATIONS[vectorization]([make_one] * (num_envs or env_cfg.num_envs), autoreset_mode=AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = gym.wrappers.vector.ClipAction(envs)
    return envs
