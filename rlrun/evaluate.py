"""`rlrun-eval`: evaluate a saved agent, optionally recording a video of it.

    rlrun-eval PATH [--config-dir DIR] [episodes=<the run's eval.episodes>] [seed=<the run's>] [video=false]
               [device=cpu] [epsilon=<the run's eval.epsilon>]

PATH is a checkpoint, or a run folder (its checkpoints/best.pt, else last.pt). The agent is rebuilt
from rlrun's config groups (and the --config-dir folders the run used), composed with the run's
.hydra/overrides.yaml; nothing stored in the checkpoint is imported or built, its config only has to
name the same algorithm, env, network and seed. By default it repeats the run's own evaluation at the
checkpoint's step (the same seed, eval.episodes, eval.epsilon and eval.max_episode_steps), so last.pt
gives the run's final eval return; episodes=, seed= and epsilon= evaluate otherwise. The result goes to
eval.json in the run folder. video=true records the first episode to <run>/videos/*.mp4 with gymnasium's
RecordVideo and adds it to the run's TensorBoard.

From Python, rlrun.load_agent(PATH) returns the saved agent, rebuilt the same way, ready to act.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlrun.arguments import CommandLine, compose_config, saved_overrides
from rlrun.checks import run_folder_of
from rlrun.core import Agent
from rlrun.errors import ConfigError, user_errors
from rlrun.run import build_agent, exit_without_teardown, fixed_key_changed, value_at
from rlrun.validation import BOOLEAN, NON_NEGATIVE_INT, POSITIVE_INT, UNIT_INTERVAL, check, one_of, optional

OPTIONS = {"episodes": None, "seed": None, "video": False, "device": None, "epsilon": None}  # None: as the run did
OPTION_RULES = {"episodes": optional(POSITIVE_INT), "seed": optional(NON_NEGATIVE_INT), "video": BOOLEAN,
                "device": optional(one_of(["cpu", "cuda", "auto"])), "epsilon": optional(UNIT_INTERVAL)}
PREVIEW_FRAMES = 150


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    sys.path.append(os.getcwd())  # as `rlrun` does: a `module:Env` id's module may be in the working folder
    with user_errors("rlrun-eval"):
        command = CommandLine.parse(argv[1:])
        result = evaluate_saved_agent(Path(argv[0]), command.config_dirs(), **options(command.override_texts))
    print(f"rlrun-eval: {result['mean_return']:.2f} +- {result['std_return']:.2f} over {result['episodes']} episodes "
          f"({result['checkpoint']}, env step {result['env_steps']})")
    if result["repeats_the_run"]:
        print(f"rlrun-eval: the run's own evaluation at env step {result['env_steps']} (its seed, {result['episodes']} "
              f"episodes, epsilon {result['epsilon']}); episodes=, seed= or epsilon= evaluate otherwise")
    if "video" in result:
        print(f"rlrun-eval: video {result['video']}")
    exit_without_teardown()


def options(argv: list[str]) -> dict[str, Any]:
    given = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option {', '.join(sorted(unknown))}; rlrun-eval takes {', '.join(OPTIONS)}")
    chosen = {**OPTIONS, **given}
    check("", chosen, OPTION_RULES)
    return chosen


def locate(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for a checkpoint path or a run folder."""
    if path.is_dir():
        checkpoints = path / "checkpoints"
        found = next((checkpoints / name for name in ("best.pt", "last.pt") if (checkpoints / name).is_file()), None)
        if found is None:
            raise ConfigError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt; give a run folder or a .pt file")
        return found, path
    return path, run_folder_of(path)


def run_config(run_dir: Path, config_dirs: list[Path]) -> DictConfig:
    """The run's config, composed again from rlrun's config groups and `config_dirs` with the run's own overrides
    (.hydra/overrides.yaml of the run folder, or of the job folder above a `seed=<s>` run of sweep.seeds_per_trial)."""
    if (run_dir / ".hydra" / "overrides.yaml").is_file():
        return compose_config(saved_overrides(run_dir), config_dirs)
    if re.fullmatch(r"seed=\d+", run_dir.name) and (run_dir.parent / ".hydra" / "overrides.yaml").is_file():
        return compose_config([*saved_overrides(run_dir.parent), run_dir.name], config_dirs)
    raise ConfigError(f"{run_dir} has no .hydra/overrides.yaml: rlrun-eval rebuilds the agent from the config of the "
                      "run; give a checkpoint inside its run folder")


@dataclass
class SavedAgent:
    agent: Any
    cfg: DictConfig          # the run's config, composed again from its folder
    payload: dict[str, Any]  # the checkpoint
    checkpoint_path: Path
    run_dir: Path

    def make_envs(self, env_cfg: Any, num_envs: int, wrap=None) -> Any:
        """Evaluation envs as the run built them, with the checkpoint's frozen observation statistics."""
        from rlrun.envs import make_vector_env, use_observation_statistics

        envs = make_vector_env(env_cfg, num_envs=num_envs, vectorization="sync", wrap=wrap, evaluation=True,
                               max_episode_steps=self.cfg.eval.max_episode_steps)
        use_observation_statistics(envs, self.payload.get("observation_statistics"))
        return envs


def load_saved_agent(path: Path, config_dirs: list[Path], device: str | None = None) -> SavedAgent:
    """The agent saved at `path` (a checkpoint or a run folder), rebuilt from rlrun's config groups composed with
    its run folder's overrides, its weights loaded; nothing read from the checkpoint is imported or built."""
    from rlrun import checkpoint
    from rlrun.envs import make_vector_env

    checkpoint_path, run_dir = locate(Path(path))
    payload = checkpoint.load(checkpoint_path)
    if not {"agent", "config", "env_steps"} <= payload.keys() or not isinstance(payload["config"], dict):
        raise ConfigError(f"{checkpoint_path} is not an rlrun checkpoint (it has no agent, config and env_steps)")
    cfg = run_config(run_dir, config_dirs)
    OmegaConf.set_struct(cfg, False)  # record_video adds env.kwargs.render_mode
    if device is not None:
        cfg.device.name = device
    config = OmegaConf.to_container(cfg, resolve=True)
    differs = fixed_key_changed(payload["config"], config)
    if differs:
        raise ConfigError(f"{checkpoint_path} was written by a run with {differs}="
                          f"{value_at(payload['config'], differs)!r}, but its run folder composes {differs}="
                          f"{value_at(config, differs)!r}; it is not this run's checkpoint: give the checkpoint inside "
                          "its own run folder")
    spaces = make_vector_env(cfg.env, num_envs=1, vectorization="sync", evaluation=True)
    agent = build_agent(config, spaces.single_observation_space, spaces.single_action_space)
    spaces.close()
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise ConfigError(f"{checkpoint_path} does not fit the agent its run folder's config builds "
                          f"({str(error).strip().splitlines()[0]}); give the checkpoint inside its own run folder") from error
    return SavedAgent(agent, cfg, payload, checkpoint_path, run_dir)


def load_agent(path: str | Path, config_dirs: Sequence[str | Path] = (), device: str | None = None) -> Agent:
    """The agent saved at `path` (a checkpoint, or a run folder: its best.pt, else last.pt), ready to
    `act(observations, explore=False)` on a batch of observations. It is rebuilt from rlrun's config groups (and
    `config_dirs`, the --config-dir folders the run used) with the run's own overrides, never from what the
    checkpoint names. A run with env.normalize_observations=true standardized its observations: the envs of
    rlrun.evaluate.load_saved_agent(...).make_envs do so with the checkpoint's statistics."""
    return load_saved_agent(Path(path), [Path(folder) for folder in config_dirs], device).agent


def evaluate_saved_agent(path: Path, config_dirs: list[Path], episodes: int | None, seed: int | None, video: bool,
                         device: str | None, epsilon: float | None) -> dict[str, Any]:
    """Evaluate the agent saved at `path`; each of episodes, seed and epsilon that is None is the run's own (seed:
    the one the run evaluated with at the checkpoint's step)."""
    from rlrun import checkpoint
    from rlrun.trainer import derived_seed, evaluate

    if video:
        check_video_support()
    saved = load_saved_agent(path, config_dirs, device)
    cfg, payload = saved.cfg, saved.payload
    repeats_the_run = episodes is seed is epsilon is None
    episodes = cfg.eval.episodes if episodes is None else episodes
    seed = derived_seed(cfg.seed, payload["env_steps"]) if seed is None else seed
    epsilon = cfg.eval.epsilon if epsilon is None else epsilon
    envs = saved.make_envs(cfg.env, episodes)
    returns = evaluate(saved.agent, envs, seed, epsilon)
    envs.close()
    result = {"checkpoint": str(saved.checkpoint_path), "env_steps": payload["env_steps"], "episodes": episodes,
              "seed": seed, "epsilon": epsilon, "repeats_the_run": repeats_the_run,
              "mean_return": float(returns.mean()), "std_return": float(returns.std()), "returns": returns.tolist()}
    if video:
        result["video"] = str(record_video(saved.agent, cfg, payload["env_steps"], seed, saved.run_dir,
                                           saved.make_envs))
    checkpoint.write_text(saved.run_dir / "eval.json", json.dumps(result, indent=2) + "\n")
    return result


def check_video_support() -> None:
    """video=true records with moviepy (RecordVideo) and writes TensorBoard's GIF preview with Pillow."""
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame renders off screen: no sound card, no display
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        import moviepy  # noqa: F401  (imported to learn that it is installed)
        import PIL  # noqa: F401
    except ModuleNotFoundError as error:
        raise ConfigError(f"video=true needs {error.name}, which is not installed: pip install 'rlrun[video]', or "
                          "evaluate without video=true") from error


def record_video(agent: Any, config: Any, env_steps: int, seed: int, run_dir: Path, build) -> Path:
    """One deterministic episode to <run>/videos/eval-step<N>-episode-0.mp4, also added to TensorBoard."""
    import io

    import gymnasium as gym
    from moviepy import VideoFileClip
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.writer import FileWriter

    folder, prefix = run_dir / "videos", f"eval-step{env_steps}"
    env_cfg = OmegaConf.merge(config.env, {"kwargs": {"render_mode": "rgb_array"}})
    envs = build(env_cfg, 1, wrap=lambda env: gym.wrappers.RecordVideo(
        env, str(folder), episode_trigger=lambda episode: episode == 0, name_prefix=prefix, disable_logger=True))
    obs, _ = envs.reset(seed=seed)
    fps = envs.metadata.get("render_fps") or 30
    running = True
    while running:
        obs, _, terminated, truncated, _ = envs.step(agent.act(obs, explore=False))
        running = not (terminated[0] or truncated[0])
    envs.close()
    video = folder / f"{prefix}-episode-0.mp4"
    # TensorBoard shows a GIF: a preview of at most PREVIEW_FRAMES frames at half size keeps it cheap to encode
    # (the full episode stays in the mp4). It is encoded here with Pillow, since torch's add_video needs moviepy 1's
    # moviepy.editor, and written as the image summary add_video writes.
    with VideoFileClip(str(video)) as clip:
        frames = list(clip.iter_frames())
    stride = math.ceil(len(frames) / PREVIEW_FRAMES)
    preview = [Image.fromarray(frame[::2, ::2]) for frame in frames[::stride]]
    gif = io.BytesIO()
    preview[0].save(gif, format="GIF", save_all=True, append_images=preview[1:], loop=0,
                    duration=round(1000 * stride / fps))
    image = Summary.Image(height=preview[0].height, width=preview[0].width, colorspace=3,
                          encoded_image_string=gif.getvalue())
    writer = FileWriter(str(run_dir))
    writer.add_summary(Summary(value=[Summary.Value(tag="eval/video", image=image)]), env_steps)
    writer.close()
    return video
