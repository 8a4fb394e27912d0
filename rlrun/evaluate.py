"""`rlrun-eval`: evaluate a saved agent, optionally recording a video of it.

    rlrun-eval PATH [episodes=10] [seed=0] [video=false] [device=cpu] [epsilon=<the run's eval.epsilon>]

PATH is a checkpoint, or a run folder (its checkpoints/best.pt, else last.pt). The agent is rebuilt
from the config stored in the checkpoint and runs `episodes` deterministic episodes, seeded, as the
run evaluated (each action random with probability `epsilon`, the run's eval.max_episode_steps);
the result goes to eval.json in the run folder. video=true records the first episode to
<run>/videos/*.mp4 with gymnasium's RecordVideo and adds it to the run's TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rlrun.errors import ConfigError, user_errors
from rlrun.run import build_agent, exit_without_teardown

OPTIONS = {"episodes": 10, "seed": 0, "video": False, "device": None, "epsilon": None}
PREVIEW_FRAMES = 150


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    with user_errors("rlrun-eval"):
        result = evaluate_saved_agent(Path(argv[0]), **options(argv[1:]))
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
    if not isinstance(chosen["episodes"], int) or chosen["episodes"] < 1:
        raise ConfigError(f"episodes={chosen['episodes']!r} is invalid: it must be a positive integer")
    if chosen["epsilon"] is not None and not 0 <= chosen["epsilon"] <= 1:
        raise ConfigError(f"epsilon={chosen['epsilon']!r} is invalid: it must be a number in [0, 1]")
    return chosen


def locate(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for a checkpoint path or a run folder."""
    if path.is_dir():
        checkpoints = path / "checkpoints"
        found = next((checkpoints / name for name in ("best.pt", "last.pt") if (checkpoints / name).is_file()), None)
        if found is None:
            raise ConfigError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt; give a run folder or a .pt file")
        return found, path
    return path, path.parent.parent if path.parent.name == "checkpoints" else path.parent


def evaluate_saved_agent(path: Path, episodes: int, seed: int, video: bool, device: str | None,
                         epsilon: float | None) -> dict[str, Any]:
    from rlrun import checkpoint
    from rlrun.envs import make_vector_env, use_observation_statistics
    from rlrun.trainer import evaluate

    checkpoint_path, run_dir = locate(path)
    payload = checkpoint.load(checkpoint_path)
    if not {"agent", "config", "env_steps"} <= payload.keys():
        raise ConfigError(f"{checkpoint_path} is not an rlrun checkpoint (it has no agent, config and env_steps)")
    config = OmegaConf.create(payload["config"])
    if device is not None:
        config.device.name = device
    eval_cfg = config.get("eval", {})  # checkpoints of older runs have no eval.epsilon or eval.max_episode_steps

    def build(env_cfg: Any, num_envs: int, wrap=None):
        envs = make_vector_env(env_cfg, num_envs=num_envs, vectorization="sync", wrap=wrap, evaluation=True,
                               max_episode_steps=eval_cfg.get("max_episode_steps"))
        use_observation_statistics(envs, payload.get("observation_statistics"))
        return envs

    envs = build(config.env, episodes)
    agent = build_agent(OmegaConf.to_container(config), envs.single_observation_space, envs.single_action_space)
    agent.load_state_dict(payload["agent"])
    if epsilon is None:
        epsilon = eval_cfg.get("epsilon", 0.0)
    returns = evaluate(agent, envs, seed, epsilon)
    envs.close()
    result = {"checkpoint": str(checkpoint_path), "env_steps": payload["env_steps"], "episodes": episodes,
              "seed": seed, "epsilon": epsilon, "mean_return": float(returns.mean()), "std_return": float(returns.std()),
              "returns": returns.tolist()}
    if video:
        result["video"] = str(record_video(agent, config, payload["env_steps"], seed, run_dir, build))
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def record_video(agent: Any, config: Any, env_steps: int, seed: int, run_dir: Path, build) -> Path:
    """One deterministic episode to <run>/videos/eval-step<N>-episode-0.mp4, also added to TensorBoard."""
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame renders off screen: no sound card, no display
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
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
