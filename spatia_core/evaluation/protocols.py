"""Evaluation protocols: closed loop, held-out real views, long horizon, ablations.

Each protocol runs the world loop with the configured generator backend and returns a plain
dict (JSON-ready). The metric functions come from :mod:`spatia_core.evaluation.metrics`.

* ``closed_loop``: a trajectory that returns to its start; the last frame is compared with the
  first (PSNR_C, SSIM_C, LPIPS_C, match accuracy; the paper's Table 3), plus camera-control error
  of the generated frames against the commanded poses, coverage and memory size per clip.
* ``held_out``: leave-one-out on a real posed RGB-D sequence: the memory is built from every other
  frame, the generator produces the held-out view, which is compared with the real image.
* ``long_horizon``: the closed loop repeated; PSNR_C and drift after each loop (Table 6 style).
* ``ablations``: closed loop with no scene video (empty memory), K in {0, 1, 3, 5, 7} and voxel
  size in {0.01, 0.03, 0.05, 0.07} m, all in the same run.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import SpatiaConfig
from ..trajectories import make_trajectory
from ..world import SpatiaWorld
from ..worlds import read_rgbd_folder
from . import matching, metrics


def image_metrics(pred: np.ndarray, target: np.ndarray, lpips_model=None, mask=None) -> dict:
    """PSNR, SSIM and (when its weights are present) LPIPS of ``pred`` against ``target``."""
    out = {"psnr": float(metrics.psnr(pred, target, mask=mask)), "ssim": float(metrics.ssim(pred, target))}
    out["lpips"] = float(lpips_model(pred, target)) if lpips_model is not None else None
    return out


def _run(world: SpatiaWorld, poses: np.ndarray) -> dict:
    """Generate along ``poses``; frames, per-frame coverage, memory size and timings per clip."""
    frames, coverage, memory, timings = [], [], [], []
    for clip in world.run(poses):
        frames.append(clip.frames)
        coverage += clip.visibility.reshape(len(clip.frames), -1).mean(1).tolist()
        memory.append(len(world.memory))
        timings.append({k: round(v, 4) for k, v in clip.timings.items()})
    return {"frames": np.concatenate(frames), "coverage": coverage, "memory_voxels": memory, "timings": timings}


def closed_loop(config: SpatiaConfig, n_frames: int = 48, trajectory: str = "loop", lpips_model=None,
                match_method: str = "auto", world: SpatiaWorld | None = None) -> dict:
    """Closed-loop generation: last frame vs first (see the module docstring)."""
    world = world or SpatiaWorld(config)
    if world.init is None:
        world.reset()
    poses = make_trajectory(trajectory, world.init.start_pose, n_frames)
    t0 = time.perf_counter()
    run = _run(world, poses)
    seconds = time.perf_counter() - t0
    # "first" is the world's initial image (what Spatia starts from), "last" the final generated frame
    first, last = world.start_image, run["frames"][-1]
    if first.shape != last.shape:
        first = run["frames"][0]
    result = {f"{k}_c": v for k, v in image_metrics(last, first, lpips_model).items()}
    result["match"] = matching.match_accuracy(first, last, method=match_method)
    # every 3rd frame: consecutive loop frames are too close for a translation direction
    step = 3 if len(poses) >= 12 else 1
    result["camera_control"] = matching.camera_control_error(run["frames"][::step], poses[::step], world.intrinsics.matrix())
    result.update(frames=len(poses), seconds=round(seconds, 3), seconds_per_frame=round(seconds / len(poses), 4),
                  coverage=run["coverage"], memory_voxels=run["memory_voxels"], timings=run["timings"])
    return result


def held_out(config: SpatiaConfig, folder, intrinsics=None, lpips_model=None, frames: list[int] | None = None) -> dict:
    """Leave-one-out on a posed RGB-D folder: each frame generated from a memory of the others."""
    all_frames = read_rgbd_folder(folder, intrinsics=intrinsics or None, depth_scale=config.world.depth_scale)
    views = []
    for i in frames if frames is not None else range(len(all_frames)):
        others = [j for j in range(len(all_frames)) if j != i]
        held = all_frames[i]
        cfg = config.with_overrides({"world.source": "rgbd_folder", "world.path": str(folder), "world.frames": others,
                                     "world.intrinsics": list(intrinsics or []), "camera.width": held.intrinsics.width,
                                     "camera.height": held.intrinsics.height,
                                     "camera.intrinsics": [held.intrinsics.fx, held.intrinsics.fy, held.intrinsics.cx,
                                                           held.intrinsics.cy]})
        world = SpatiaWorld(cfg)
        init = world.reset()
        # the held-out pose in the world's map frame (the world re-expresses its frames)
        pose = init.map_from_source @ held.pose
        clip = world.step_clip(pose[None], retrieve=True, remember=False)
        view = image_metrics(clip.frames[0], held.rgb, lpips_model)
        view.update(frame=i, coverage=float(clip.visibility.mean()),
                    psnr_covered=float(metrics.psnr(clip.frames[0], held.rgb, mask=clip.visibility[0])))
        views.append(view)
    summary = {k: float(np.mean([v[k] for v in views])) for k in ("psnr", "ssim", "coverage", "psnr_covered")}
    lp = [v["lpips"] for v in views if v["lpips"] is not None]
    summary["lpips"] = float(np.mean(lp)) if lp else None
    return {"folder": str(folder), "views": views, "mean": summary}


def long_horizon(config: SpatiaConfig, loops: int = 3, frames_per_loop: int = 24, lpips_model=None) -> dict:
    """The closed loop driven ``loops`` times in a row; PSNR_C and drift after each loop."""
    world = SpatiaWorld(config)
    world.reset()
    poses = make_trajectory("loop", world.init.start_pose, frames_per_loop)
    first = world.start_image if world.start_image.shape[:2] == (world.intrinsics.height, world.intrinsics.width) else None
    rows = []
    for k in range(1, loops + 1):
        run = _run(world, poses)
        if k == 1:
            first = run["frames"][0] if first is None else first
            reference = run["frames"]
        row = {"loop": k, "clips": k * -(-frames_per_loop // world.config.generator.clip_frames)}
        row.update({f"{m}_c": v for m, v in image_metrics(run["frames"][-1], first, lpips_model).items()})
        # drift: mean PSNR of this loop's frames against the first loop's frames at the same poses
        row["drift_psnr"] = float(np.mean([metrics.psnr(a, b) for a, b in zip(run["frames"], reference)]))
        row["memory_voxels"] = len(world.memory)
        rows.append(row)
    return {"frames_per_loop": frames_per_loop, "loops": rows}


def ablations(config: SpatiaConfig, n_frames: int = 24, lpips_model=None,
              ks=(0, 1, 3, 5, 7), voxels=(0.01, 0.03, 0.05, 0.07)) -> dict:
    """Closed-loop PSNR_C etc. without scene video, for each K and for each voxel size."""
    rows = []

    def run(name, cfg, world=None):
        res = closed_loop(cfg, n_frames, lpips_model=lpips_model, match_method="sift", world=world)
        rows.append({"variant": name, "psnr_c": res["psnr_c"], "ssim_c": res["ssim_c"], "lpips_c": res["lpips_c"],
                     "match_accuracy": res["match"]["accuracy"], "seconds_per_frame": res["seconds_per_frame"],
                     "final_memory_voxels": res["memory_voxels"][-1]})

    # no scene video: the generator sees an empty memory (the start image is still the reference)
    empty = SpatiaWorld(config)
    empty.reset()
    empty.memory.clear()
    run("no scene video", config, world=empty)
    for k in ks:
        run(f"K={k}", config.with_overrides({"retrieval.k": k}))
    for v in voxels:
        run(f"voxel={v:g} m", config.with_overrides({"memory.voxel_size": v}))
    return {"rows": rows}


def default_config(small: bool) -> SpatiaConfig:
    """The evaluation's base config: 320x240, 2 cm voxels (``small``: 96x72, 3 cm, short clips)."""
    cfg = SpatiaConfig()
    if small:
        return cfg.with_overrides({"camera.width": 96, "camera.height": 72, "memory.voxel_size": 0.03,
                                   "generator.clip_frames": 8})
    return cfg.with_overrides({"camera.width": 320, "camera.height": 240, "memory.voxel_size": 0.02})


__all__ = ["ablations", "closed_loop", "default_config", "held_out", "image_metrics", "long_horizon"]
