"""`rlrun-eval`: evaluate a saved agent, optionally recording a video of it.

    rlrun-eval PATH [--config-dir DIR] [episodes=10] [seed=0] [video=false] [device=cpu]
               [epsilon=<the run's eval.epsilon>]

PATH is a checkpoint, or a run folder (its checkpoints/best.pt, else last.pt). The agent is rebuilt
from rlrun's config groups (and the --config-dir folders the run used), composed with the run's
.hydra/overrides.yaml; nothing stored in the checkpoint is imported or built, its config only has to
name the same algorithm, env, network and seed. The agent runs `episodes` deterministic episodes,
seeded, as the run evaluated (each action random with probability `epsilon`, the run's
eval.max_episode_steps); the result goes to eval.json in the run folder. video=true records the first episode to
<run>/videos/*.mp4 with gymnasium's RecordVideo and adds it to the run's TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlrun.arguments import CommandLine, compose_config, saved_overrides
from rlrun.checks import run_folder_of
from rlrun.errors import ConfigError, user_errors
from rlrun.run import build_agent, exit_without_teardown, fixed_key_changed, value_at
from rlrun.validation import BOOLEAN, NON_NEGATIVE_INT, POSITIVE_INT, UNIT_INTERVAL, check, one_of, optional

OPTIONS = {"episodes": 10, "seed": 0, "video": False, "device": None, "epsilon": None}
OPTION_RULES = {"episodes": POSITIVE_INT, "seed": NON_NEGATIVE_INT, "video": BOOLEAN,
                "device": optional(one_of(["cpu", "cuda", "auto"])), "epsilon": optional(UNIT_INTERVAL)}
PREVIEW_FRAMES = 150


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    with user_errors("rlrun-eval"):
        command = CommandLine.parse(argv[1:])
        result = evaluate_saved_agent(Path(argv[0]), command.config_dirs(), **options(command.override_texts))
    print(f"rlrun-eval: {result['mean_return']:.2f} +- {result['std_return']:.2f} over {result['episodes']} episodes "
          f"({result['checkpoint']}, env step {result['env_steps']})")
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


def evaluate_saved_agent(path: Path, config_dirs: list[Path], episodes: int, seed: int, video: bool,
                         device: str | None, epsilon: float | None) -> dict[str, Any]:
    from rlrun import checkpoint
    from rlrun.envs import make_vector_env, use_observation_statistics
    from rlrun.trainer import evaluate

    checkpoint_path, run_dir = locate(path)
    payload = checkpoint.load(checkpoint_path)
    if not {"agent", "config", "env_steps"} <= payload.keys() or not isinstance(payload["config"], dict):
        raise ConfigError(f"{checkpoint_path} is not an rlrun checkpoint (it has no agent, config and env_steps)")
    if video:
        check_video_support()
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

    def build(env_cfg: Any, num_envs: int, wrap=None):
        envs = make_vector_env(env_cfg, num_envs=num_envs, vectorization="sync", wrap=wrap, evaluation=True,
                               max_episode_steps=cfg.eval.max_episode_steps)
        use_observation_statistics(envs, payload.get("observation_statistics"))
        return envs

    envs = build(cfg.env, episodes)
    agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise ConfigError(f"{checkpoint_path} does not fit the agent its run folder's config builds "
                          f"({str(error).strip().splitlines()[0]}); give the checkpoint inside its own run folder") from error
    if epsilon is None:
        epsilon = cfg.eval.epsilon
    returns = evaluate(agent, envs, seed, epsilon)
    envs.close()
    result = {"checkpoint": str(checkpoint_path), "env_steps": payload["env_steps"], "episodes": episodes,
              "seed": seed, "epsilon": epsilon, "mean_return": float(returns.mean()), "std_return": float(returns.std()),
              "returns": returns.tolist()}
    if video:
        result["video"] = str(record_video(agent, cfg, payload["env_steps"], seed, run_dir, build))
    checkpoint.write_text(run_dir / "eval.json", json.dumps(result, indent=2) + "\n")
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
