"""Held-out views of real captures: the memory's render vs the nearest photo, before and after.

For each scene the memory is built from the training views only and every held-out view is
rendered from it (:mod:`spatia_core.evaluation.capture_eval`); the baseline is the nearest
training photo by camera pose, shown unchanged. Scenes (from ``../shared/data``):

* ``strecha``: ``strecha_herzjesu_p8``, 8 calibrated photos, no depth; held out ``every:4@2``
  (views 2 and 6, each with training views on both sides); depth from our plane-sweep stereo on
  the training views; photos at ``--size`` (long side, default 768), the sweep at 384.
* ``dining`` / ``primesense``: the two RGB-D sets, 5 frames each, sensor depth; held out ``ids:1,3``.

Three pipelines per scene:

* ``today``: what the project did before (issue 14): the multi-view depth source with its fixed
  0.3-12 m range and 320 px sweep, ``SpatialMemory`` defaults (1 cm voxels, ``max_depth`` 10 m),
  every frame fused as it is, the scene projection with push-pull hole filling;
* ``fused``: :mod:`spatia_core.captures.build` defaults: depth range from triangulated SIFT
  matches, voxel size and depth limits from the data, multi-view consistency check, edge
  floaters dropped, confidence weights, background-first hole filling; sensor depth also keeps
  the pixels no other view can check (its holes are not completed: ``complete=False``, measured
  better with the fallback below); the view rendered from the memory alone (``layers=0``, no
  fallback);
* ``ordered``: the same memory with the default rendering, view-ordered compositing
  (:mod:`spatia_core.captures.layers`): the nearest training views' own points first, the memory
  over them where clearly nearer, the nearest photo warped by its own completed depth where
  nothing is drawn, then the depth-aware fill. At a training view's own pose its own layer is
  drawn first, so its training-view PSNR measures that layer more than the fusion (``fused`` gives
  the memory's).

Usage::

    .venv/bin/python bench/bench_capture.py [--scenes strecha,dining,primesense] [--size 768]
        [--pipelines today,fused,ordered] [--out out/bench_capture.json] [--cache out/bench_capture_cache]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatia_core.captures.base import parse_holdout  # noqa: E402
from spatia_core.captures.build import BuildSettings, BuiltMemory, build_memory, mvs_depths  # noqa: E402
from spatia_core.captures.scale import depth_range_from_images  # noqa: E402
from spatia_core.captures.strecha import read_strecha  # noqa: E402
from spatia_core.captures.views import views_from_capture, views_from_rgbd  # noqa: E402
from spatia_core.evaluation.capture_eval import evaluate_heldout  # noqa: E402
from spatia_core.evaluation.metrics import LPIPS  # noqa: E402
from spatia_core.geometry_update.multiview import MultiViewDepth  # noqa: E402
from spatia_core.memory import SpatialMemory  # noqa: E402
from spatia_core.worlds import read_rgbd_folder  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RGBD = {"dining": ("rgbd_dining_slambook2", [518.0, 519.0, 325.5, 253.5]), "primesense": ("rgbd_primesense_open3d", None)}


def load_scene(name: str, size: int):
    """``(views, holdout spec, has sensor depth)``."""
    if name == "strecha":
        return views_from_capture(read_strecha(DATA / "strecha_herzjesu_p8"), size), "every:4@2", False
    folder, k = RGBD[name]
    return views_from_rgbd(read_rgbd_folder(DATA / folder, k)), "ids:1,3", True


def _cached(cache: Path | None, key: str, fn):
    if cache is None:
        return fn()
    path = cache / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if path.is_file():
        data = np.load(path)
        return [data[f"d{i}"] for i in range(len(data.files))]
    out = fn()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{f"d{i}": d for i, d in enumerate(out)})
    return out


def today_memory(train, depths) -> BuiltMemory:
    """The memory as the project built it before: defaults, every frame fused as it is."""
    mem = SpatialMemory()  # 1 cm voxels, max_depth 10 m
    n_in = n_far = 0
    for v, d in zip(train, depths):
        n_in += int((d > 0).sum())
        n_far += int((d >= mem.max_depth).sum())
        mem.insert_frame(v.rgb, d, v.intrinsics, v.pose)
    return BuiltMemory(mem, {"voxel_size": mem.voxel_size, "voxels": len(mem), "depth_pixels": n_in,
                             "dropped_beyond_max_depth": n_far})


def run_scene(name: str, pipelines: list[str], size: int, lpips_model, cache: Path | None) -> dict:
    views, spec, sensor = load_scene(name, size)
    held = parse_holdout(spec, len(views))
    train = [v for i, v in enumerate(views) if i not in held]
    test = [v for i, v in enumerate(views) if i in held]
    result = {"scene": name, "holdout": spec, "held_out": [v.name for v in test], "train": [v.name for v in train],
              "resolution": [views[0].rgb.shape[1], views[0].rgb.shape[0]], "pipelines": {}}
    for pipe in pipelines:
        t0 = time.perf_counter()
        if pipe == "today":
            settings = BuildSettings(fill="pushpull", splat_scale=1.25)
            if sensor:
                depths = [v.depth for v in train]
            else:
                frames = np.stack([v.rgb for v in train])
                poses = np.stack([v.pose for v in train])
                key = f"today|{name}|{size}|{[v.name for v in train]}"
                depths = _cached(cache, key, lambda: list(MultiViewDepth().estimate(frames, None, poses, train[0].intrinsics)))
            built = today_memory(train, depths)
        else:
            settings = BuildSettings(keep_unverified=sensor)
            if pipe == "fused":
                settings = replace(settings, layers=0, fallback=False)
            if sensor:
                depths = [v.depth for v in train]
            else:
                (lo, hi), _ = depth_range_from_images([v.rgb for v in train], [(v.pose, v.intrinsics) for v in train])
                key = f"fused|{name}|{size}|{[v.name for v in train]}|{lo:.4f}|{hi:.4f}|{settings.mvs_size}|" \
                      f"{settings.mvs_planes}|{settings.mvs_neighbors}|{settings.mvs_min_consistent}|{settings.edge_rel}"
                depths = _cached(cache, key, lambda: mvs_depths(train, (lo, hi), settings))
                result["depth_range"] = [lo, hi]
            built = build_memory(train, depths, settings)
        t_build = time.perf_counter() - t0
        ev = evaluate_heldout(built, train, test, settings, lpips_model)
        ev["seconds_build"] = round(t_build, 2)
        ev["settings"] = asdict(settings)
        result["pipelines"][pipe] = ev
        m = ev["mean"]
        print(f"  {name:10s} {pipe:6s} built in {t_build:5.1f} s, {built.info.get('voxels')} voxels "
              f"(voxel {built.info['voxel_size']:.4g} m, dropped beyond max_depth {built.info.get('dropped_beyond_max_depth')})",
              flush=True)
    return result


def print_table(results: list[dict]) -> None:
    print("\n| scene | pipeline | coverage | PSNR all / covered | SSIM | LPIPS | nearest photo PSNR / SSIM / LPIPS | train-view PSNR |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for pipe, ev in r["pipelines"].items():
            m, b = ev["mean"]["memory"], ev["mean"]["nearest_photo"]
            lp = lambda x: "-" if x is None or x != x else f"{x:.3f}"  # noqa: E731
            print(f"| {r['scene']} | {pipe} | {ev['mean']['coverage']:.2f} | {m['psnr']:.2f} / {m.get('psnr_covered', float('nan')):.2f} "
                  f"| {m['ssim']:.3f} | {lp(m.get('lpips'))} | {b['psnr']:.2f} / {b['ssim']:.3f} / {lp(b.get('lpips'))} "
                  f"| {ev['mean']['train_psnr']:.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", default="strecha,dining,primesense")
    p.add_argument("--pipelines", default="today,fused,ordered")
    p.add_argument("--size", type=int, default=768, help="long side of the Strecha photos, pixels")
    p.add_argument("--out", default="out/bench_capture.json")
    p.add_argument("--cache", default="", help="folder caching the stereo depth maps between runs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 1
    lpips_model = LPIPS()
    if not lpips_model.available():
        lpips_model = None
    pipelines = [s.strip() for s in args.pipelines.split(",") if s.strip()]
    unknown = sorted(set(pipelines) - {"today", "fused", "ordered"})
    if unknown:
        print(f"unknown pipeline(s) {unknown}: choose from today, fused, ordered", file=sys.stderr)
        return 2
    results = []
    for scene in [s.strip() for s in args.scenes.split(",") if s.strip()]:
        results.append(run_scene(scene, pipelines, args.size, lpips_model,
                                 Path(args.cache) if args.cache else None))
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
