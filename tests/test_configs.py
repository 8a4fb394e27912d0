"""Every shipped config composes and instantiates."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

import rlrun.cli  # noqa: F401  (registers the path_safe resolver)
from rlrun.checks import packaged_configs
from rlrun.envs import make_env
from rlrun.errors import ConfigError
from rlrun.returns import replay_ratio_warning
from rlrun.run import build_agent, check_config, hyperparameters

ALGOS = sorted(path.stem for path in packaged_configs("algo"))
ENV_CHOICES = sorted(path.stem for path in packaged_configs("env"))
ENVS = [name for name in ENV_CHOICES if name not in ("gym", "atari")]  # atari: test_atari


def leaves(node, path: str = ""):
    """(dotted path, value) of every non-dict value in a nested dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    else:
        yield path, node


def composed(*overrides: str):
    with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("env_name", ENVS)
@pytest.mark.parametrize("algo_name", ALGOS)
def test_every_algo_env_pair_composes_and_instantiates(algo_name, env_name):
    cfg = composed(f"algo={algo_name}", f"env={env_name}")
    config = OmegaConf.to_container(cfg, resolve=True)
    check_config(config)
    algo = get_class(cfg.algo._target_)
    assert all(warning(hyperparameters(config["algo"])) is None for warning in algo.config_warnings)
    assert cfg.env.id == env_name  # env configs are named by their gymnasium id
    env = make_env(cfg.env.id, cfg.env.max_episode_steps, dict(cfg.env.kwargs), dict(cfg.env.discretize))
    if isinstance(env.observation_space, algo.observation_spaces) and isinstance(env.action_space, algo.action_spaces):
        agent = build_agent(config, env.observation_space, env.action_space)
        action = agent.act(np.asarray([env.reset(seed=0)[0]]))
        assert np.shape(action[0]) == env.action_space.shape  # Box actions are clipped by the env wrapper
        if isinstance(env.action_space, gym.spaces.Discrete):
            assert env.action_space.contains(int(action[0]))


def test_train_every_overridden_alone_on_a_preset_that_trains_in_rounds_is_warned():
    preset = OmegaConf.to_container(composed("algo=dqn", "env=CartPole-v1"), resolve=True)["algo"]
    assert (preset["train_every"], preset["gradient_steps"]) == (256, 128)
    warning = replay_ratio_warning({**preset, "train_every": 4})
    assert warning.startswith("algo.gradient_steps=128 every algo.train_every=4 env steps is 32 gradient steps per env step")
    assert replay_ratio_warning({**preset, "train_every": 4, "gradient_steps": 1}) is None
    assert replay_ratio_warning({**preset, "train_every": 1, "gradient_steps": 8}) is None  # a chosen high ratio


def test_generic_gym_env_takes_any_id():
    cfg = composed("env=gym", "env.id=LunarLander-v3")
    assert cfg.env.id == "LunarLander-v3" and cfg.env.num_envs == 1


def test_a_box2d_env_without_box2d_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "Box2D", None)
    for module in [name for name in sys.modules if name.startswith("gymnasium.envs.box2d")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ConfigError, match=r"^env.id='LunarLander-v3' needs Box2D, which is not installed: install the "
                                          r"box2d extra: pip install 'rlrun\[box2d\]'$"):
        make_env("LunarLander-v3")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_device_configs(device):
    cfg = composed(f"device={device}")
    agent = build_agent(OmegaConf.to_container(cfg, resolve=True), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    assert agent.device.type in ("cpu", "cuda")


def test_network_config_builds_the_mlp():
    cfg = composed("network.hidden_sizes=[32]", "network.activation=relu")
    net = instantiate(cfg.network)(4, 2)
    assert [type(layer).__name__ for layer in net] == ["Linear", "ReLU", "Linear"]
    assert net[0].out_features == 32


@pytest.mark.parametrize("path", packaged_configs("tuned"), ids=lambda path: path.stem)
def test_tuned_presets_are_picked_for_their_pair_and_lose_to_the_command_line(path):
    algo_name, env_name = path.stem.split("_", 1)
    assert algo_name in ALGOS and env_name in ENV_CHOICES
    preset = OmegaConf.load(path)
    cfg = composed(f"algo={algo_name}", f"env={env_name}")
    assert OmegaConf.merge(cfg, preset) == cfg  # every value of the preset is in the composed config
    other_env = next(name for name in ENVS if name != env_name)
    other = composed(f"algo={algo_name}", f"env={other_env}")
    assert OmegaConf.merge(other, preset) != other  # another env does not get this pair's preset
    key, value = next((k, v) for k, v in leaves(OmegaConf.to_container(preset)) if isinstance(v, (int, float)))
    overridden = composed(f"algo={algo_name}", f"env={env_name}", f"{key}={value * 2}")
    assert OmegaConf.select(overridden, key) == value * 2


def test_every_config_folder_is_an_installed_package():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(("rlrun", *folder.relative_to(root).parts)) for folder in (root / "configs").rglob("*")
               if folder.is_dir() and any(folder.glob("*.yaml"))}
    assert folders - listed == set()  # a folder missing there would be left out of a (non-editable) install
