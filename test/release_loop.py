"""The official release's whole sampling loop (``inference.py`` ``generate_video``) as a test oracle.

``generate_video`` and every function it calls are compiled from the release's own
``inference.py`` (read with :mod:`ast`; nothing is re-typed) into a namespace where only the
pieces that need CUDA, MapAnything, PyTorch3D or model files are replaced, each by something
both sides of a comparison share:

* ``build_pipe``: returns the release's ``WanVideoPipeline`` on tiny random models (from
  :mod:`release_oracle`) and a LoRA state dict in the release's naming (``pipe.dit.`` stripped,
  as ``build_pipe`` does);
* ``run_mapanything``: returns a fixed point cloud (a PLY written by the test) instead of
  re-running MapAnything on the history frames of each round;
* ``run_render`` + ``load_video_frames``: the scene projection and the render score of the round's
  poses come from a function the test gives (our renderer on the same memory), looked up by the
  pose's index in the trajectory, instead of PyTorch3D renders written to and read back from mp4;
* ``save_video``: keeps the frames in memory (the per-round videos and the final video).

Everything else runs as released: round ranges and padding, the history inside the clip, the
units per round (``set_pipe_units``), LoRA switching, prompts (suffix, one line per round,
negative prompt), seeds, the reference selection (``select_reference_frames`` with the release's
``frustum_frontmost_mask_triton``, which runs its torch z-buffer on a CPU, and its Hungarian
``find_mask_matches``), ``call_latent_inference`` and the final decode of all rounds' latents.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from release_oracle import load_release

#: The functions of ``inference.py`` the loop needs (``build_pipe``, ``run_mapanything``,
#: ``run_render``, ``load_video_frames`` are replaced).
RELEASE_FUNCTIONS = (
    "resolve_path", "ensure_parent", "read_w2cs_from_txt", "read_intrinsics_from_txt", "trim_camera_w2c",
    "get_prompt_list", "set_pipe_units", "compute_total_rounds", "get_round_range", "select_reference_frames",
    "generate_video", "get_args",
)


def _frustum_culling(root: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("spatia_release_frustum_culling", root / "utils" / "frustum_culling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReleaseRun:
    """What one run of the release's loop produced."""

    def __init__(self):
        self.videos: dict[str, list] = {}  # save_video path -> frames
        self.rounds: list[dict] = []  # per call_latent_inference: kwargs summary, video (uint8), latents

    @property
    def final_video(self) -> np.ndarray:
        """The saved output video (``--save_path``), uint8 (N, H, W, 3)."""
        (path,) = [p for p in self.videos if p.endswith("output.mp4")]
        return np.stack([np.asarray(f) for f in self.videos[path]])


def run_release_loop(
    pipe,
    lora_state_dict: dict | None,
    case_dir: Path,
    work_dir: Path,
    points_ply: Path,
    render: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
    argv: list[str],
) -> ReleaseRun:
    """Run ``generate_video`` of the release on ``case_dir`` (``img.png``, ``w2c.txt``,
    ``intrinsics.txt``, ``prompt.txt``) with the tiny ``pipe``.

    ``render(indices)`` returns the scene projection (uint8 (T, H, W, 3)) and the render score
    (uint8 (T, H, W, 3), 255 = covered) at those trajectory indices; ``argv`` are extra
    ``inference.py`` flags (sizes, round lengths, steps, ...).
    """
    R = load_release()
    root = R.root
    source = (root / "inference.py").read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(root / "inference.py"))
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in RELEASE_FUNCTIONS]
    keep += [n for n in tree.body if isinstance(n, ast.Assign)
             and any(getattr(t, "id", None) == "NEGATIVE_PROMPT" for t in n.targets)]
    missing = set(RELEASE_FUNCTIONS) - {n.name for n in keep if isinstance(n, ast.FunctionDef)}
    if missing:
        raise LookupError(f"inference.py lacks {sorted(missing)}")
    fc = _frustum_culling(root)
    run = ReleaseRun()
    trajectory = None  # float32 (T, 3, 4) w2c of the whole trajectory, read like the release

    import open3d as o3d

    def build_pipe(vace_path, lora_path, hist_frames):
        return pipe, lora_state_dict

    def run_mapanything(args, round_idx, map_frames, map_extrinsics, intrinsic_path, work_dir):
        return {"round_dir": work_dir, "map_output_dir": work_dir, "map_video_path": f"map:{round_idx}",
                "map_intrinsic_path": intrinsic_path, "points_path": points_ply}

    renders: dict[str, np.ndarray] = {}

    def run_render(args, round_idx, points_path, map_video_path, round_extrinsic, intrinsic, work_dir):
        w2c = round_extrinsic.cpu().numpy()
        idx = [int(np.argmin(np.abs(trajectory - m[None]).reshape(len(trajectory), -1).max(1))) for m in w2c]
        for i, m in zip(idx, w2c):
            if not np.array_equal(trajectory[i], m):
                raise AssertionError("a round pose is not a trajectory pose")
        rgb, score = render(idx)
        renders[f"render:{round_idx}"], renders[f"score:{round_idx}"] = rgb, score
        return f"render:{round_idx}", f"score:{round_idx}"

    def load_video_frames(video_path, height, width):
        frames = renders[str(video_path)]
        if frames.shape[1:3] != (height, width):
            raise AssertionError(f"render is {frames.shape[1:3]}, the run is {height}x{width}")
        return [Image.fromarray(f) for f in frames]

    def save_video(frames, path, fps=24, quality=5):
        run.videos[str(path)] = [np.asarray(f).copy() for f in frames]

    namespace = {
        "argparse": argparse, "json": json, "math": math, "os": os, "re": re, "shutil": shutil, "sys": sys,
        "time": time, "Path": Path, "np": np, "o3d": o3d, "torch": torch, "Image": Image,
        "SCRIPT_DIR": root, "PROJECT_ROOT": root, "UTILS_DIR": root / "utils",
        "frustum_frontmost_mask_triton": fc.frustum_frontmost_mask_triton, "find_mask_matches": fc.find_mask_matches,
        "build_pipe": build_pipe, "run_mapanything": run_mapanything, "run_render": run_render,
        "load_video_frames": load_video_frames, "save_video": save_video,
        **{name: getattr(R.wan_video_new, name) for name in dir(R.wan_video_new) if name.startswith("WanVideoUnit_")},
    }
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(root / "inference.py"), "exec"), namespace)  # noqa: S102

    real_call = pipe.call_latent_inference

    def call_latent_inference(**kwargs):
        video, latents = real_call(**kwargs)
        run.rounds.append({
            "num_frames": kwargs["num_frames"], "seed": kwargs["seed"], "prompt": kwargs["prompt"],
            "refs": [np.asarray(r).copy() for r in (kwargs["ref_images"] or [])],
            "lora": pipe.lora_loaded, "video": np.stack([np.asarray(f) for f in video]), "latents": latents.clone(),
        })
        return video, latents

    work_dir.mkdir(parents=True, exist_ok=True)
    vace = work_dir / "vace.safetensors"
    vace.write_bytes(b"")  # generate_video checks that the control weights file exists; build_pipe ignores it
    argv = ["inference.py", "--img_path", str(case_dir / "img.png"), "--camera_w2c_path", str(case_dir / "w2c.txt"),
            "--camera_intrinsics_path", str(case_dir / "intrinsics.txt"), "--prompt_path", str(case_dir / "prompt.txt"),
            "--save_path", str(work_dir / "output.mp4"), "--work_dir", str(work_dir / "assets"), "--vace_path", str(vace),
            "--lora_path", "", *argv]
    old_argv = sys.argv
    try:
        sys.argv = argv
        args = namespace["get_args"]()
        trajectory = namespace["read_w2cs_from_txt"](str(case_dir / "w2c.txt"))
        pipe.call_latent_inference = call_latent_inference
        namespace["generate_video"](args)
    finally:
        sys.argv = old_argv
        del pipe.call_latent_inference
    return run
