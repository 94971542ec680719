"""Pictures of environments: frames from ``render_mode="rgb_array"`` and a GIF writer.

``record_episode(env, policy, path)`` plays one episode of env 0 of a ``BatchedEnv`` and writes it
as an animated GIF (``.gif``) or, for a single frame per step, a folder of PNGs (any other path).
Needs Pillow (``pip install pillow``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .core import BatchedEnv


def render_env(env: BatchedEnv, index: int = 0) -> np.ndarray:
    """An RGB frame (uint8 [H, W, 3]) of environment ``index`` of a ``BatchedEnv``."""
    if not 0 <= index < env.num_envs:
        raise ValueError(f"index must be in [0, {env.num_envs}), got {index}")
    S, _, P = env._numpy_views()
    task = int(env.bk["task"][index])
    return env.family.render_rgb(S, P, index, task)


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 4.0) -> str:
    """Write RGB frames (uint8 [H, W, 3], all the same size) as an animated GIF; returns the path."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("save_gif needs Pillow: pip install pillow") from exc
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame")
    images = []
    for k, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frame {k} must be uint8 [H, W, 3], got {f.dtype} {f.shape}")
        images.append(Image.fromarray(f))
    path = os.fspath(path)
    duration = max(1, round(1000.0 / fps))
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
    return path


def record_episode(
    env: BatchedEnv,
    policy: Callable[[torch.Tensor], torch.Tensor] | None = None,
    path: str | os.PathLike = "episode.gif",
    *,
    max_steps: int = 1000,
    fps: float = 4.0,
    seed: int = 0,
) -> str:
    """Play one episode of env 0 and save it as a GIF. ``policy(obs) -> actions`` gets the batch of
    observations and returns actions for every env (default: uniform random, seeded)."""
    g = torch.Generator().manual_seed(seed)

    def random_policy(obs):
        shape = (env.num_envs,) if env.family.action_dim == 1 else (env.num_envs, env.family.action_dim)
        return torch.randint(0, env.family.num_actions, shape, generator=g, dtype=torch.int32).to(env.device)

    policy = policy or random_policy
    obs = env.observe()
    frames = [render_env(env, 0)]
    for _ in range(max_steps):
        result = env.step(policy(obs))
        obs = result.obs
        done = bool(result.terminated[0] or result.truncated[0])
        if done and "final_obs" in result.info:
            frames.append(frames[-1])  # the env already reset; the last picture is the one before
        else:
            frames.append(render_env(env, 0))
        if done:
            break
    return save_gif(frames, path, fps=fps)
