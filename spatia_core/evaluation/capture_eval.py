"""Held-out views of a posed-photo capture: the memory's render against the nearest photo.

The memory is built from the training views only; every held-out view is rendered from it and
compared with the real photo (by :func:`~spatia_core.captures.build.render_view`: view-ordered
compositing by default, ``settings.layers=0`` for the memory alone). The baseline on the same
views is the nearest training photo (by camera pose and viewing angle at the scene's median depth,
:func:`~spatia_core.captures.views.nearest_photo`, the same rule that orders the layers) shown
unchanged: a memory that
does not beat it adds nothing a user could not get by picking a photo. Metrics: PSNR over all
pixels and over the covered ones, SSIM and LPIPS (over all pixels, and masked to the covered
ones), coverage, all inside the held-out photo's padding frame when it has one (a flat border
that shows no scene and that every photo of the set shares, :mod:`~spatia_core.captures.padding`); and the training views re-rendered from the memory (how well the memory
reproduces what it was built from).
"""

from __future__ import annotations

import numpy as np

from ..captures.build import BuildSettings, BuiltMemory, render_view
from ..captures.padding import crop
from ..captures.views import View, nearest_photo
from . import metrics


def _scores(pred: np.ndarray, target: np.ndarray, lpips_model, mask: np.ndarray | None = None) -> dict:
    out = {"psnr": metrics.psnr(pred, target), "ssim": metrics.ssim(pred, target),
           "lpips": float(lpips_model(pred, target)) if lpips_model is not None else None}
    if mask is not None and mask.any():
        out["psnr_covered"] = metrics.psnr(pred, target, mask=mask)
        out["ssim_covered"] = metrics.ssim(pred, target, mask=mask)
        out["lpips_covered"] = (float(lpips_model(pred, target, mask=mask)) if lpips_model is not None else None)
    return out


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool)]
    return {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in keys}


def evaluate_heldout(built: BuiltMemory, train: list[View], test: list[View], settings: BuildSettings,
                     lpips_model=None, keep_images: bool = False) -> dict:
    """Per held-out view and on average: memory vs nearest photo, plus training-view re-renders."""
    scene_depth = float(np.median([np.linalg.norm(v.pose[:3, 3] - train[0].pose[:3, 3]) for v in train] + [1.0]))
    depth_med = built.info.get("scene_depth", scene_depth)
    views, images = [], []
    for v in test:
        r = render_view(built, v.intrinsics, v.pose, settings)
        j = nearest_photo(train, v.pose, depth_med)
        photo = train[j].rgb
        if photo.shape != v.rgb.shape:
            import cv2

            photo = cv2.resize(photo, (v.rgb.shape[1], v.rgb.shape[0]), interpolation=cv2.INTER_AREA)
        box = v.content_box  # scored inside a padding frame, if the photo has one (:mod:`..captures.padding`)
        real, mask = crop(v.rgb, box), crop(r["mask"], box)
        row = {"view": v.name, "coverage": metrics.coverage(mask), "nearest": train[j].name, "content_box": box}
        row["memory"] = _scores(crop(r["rgb"], box), real, lpips_model, mask)
        row["nearest_photo"] = _scores(crop(photo, box), real, lpips_model, mask)
        views.append(row)
        if keep_images:
            images.append({"view": v.name, "real": v.rgb, "memory": r["rgb"], "nearest": photo})
    train_rows = []
    for v in train:
        r = render_view(built, v.intrinsics, v.pose, settings)
        rgb, real, mask = (crop(x, v.content_box) for x in (r["rgb"], v.rgb, r["mask"]))
        train_rows.append({"view": v.name, "psnr": metrics.psnr(rgb, real),
                           "psnr_covered": metrics.psnr(rgb, real, mask=mask) if mask.any() else None,
                           "coverage": metrics.coverage(mask)})
    summary = {
        "memory": _mean([r["memory"] for r in views]),
        "nearest_photo": _mean([r["nearest_photo"] for r in views]),
        "coverage": float(np.mean([r["coverage"] for r in views])),
        "train_psnr": float(np.mean([r["psnr"] for r in train_rows])),
        "train_psnr_covered": float(np.mean([r["psnr_covered"] for r in train_rows if r["psnr_covered"] is not None])),
    }
    ordered = bool(built.layers) and settings.layers > 0
    rendering = (f"view-ordered: the {settings.layers} nearest training views' own points first, the memory over them "
                 f"where nearer by > {settings.override_rel:.0%}" + (", the nearest photo warped into what is left"
                                                                    if settings.fallback else "")
                 if ordered else "the memory alone") + f", then {settings.fill} hole filling"
    out = {"views": views, "train_views": train_rows, "mean": summary, "memory_info": built.info,
           "rendering": rendering}
    if keep_images:
        out["images"] = images
    return out




def run_capture_eval(path: str, holdout: str = "every:8", max_size: int = 640, lpips_model=None,
                     settings: BuildSettings | None = None, device: str = "cpu", rgbd_intrinsics: list | None = None,
                     depth_scale: float = 1000.0) -> dict:
    """``spatia eval --world CAPTURE``: hold out ``holdout`` views of the capture (or RGB-D folder)
    at ``path``, build the memory from the others only, evaluate (see :func:`evaluate_heldout`).
    ``rgbd_intrinsics`` / ``depth_scale``: an RGB-D folder's camera and units (``world.intrinsics`` /
    ``world.depth_scale``) where its files do not give them."""
    from pathlib import Path

    from ..captures import detect_format, parse_holdout, read_capture
    from ..captures.build import build_memory, mvs_depths
    from ..captures.views import views_from_capture, views_from_rgbd
    from ..captures.world import capture_depth_range

    fmt = detect_format(path)
    if fmt is None:  # an RGB-D folder: sensor depth
        from ..worlds import read_rgbd_folder

        views = views_from_rgbd(read_rgbd_folder(path, rgbd_intrinsics, depth_scale))
        settings = settings or BuildSettings(keep_unverified=True)  # holes: the rendering's fallback, not completion
        capture = None
    else:
        capture = read_capture(path, fmt)
        views = views_from_capture(capture, max_size)
        settings = settings or BuildSettings()
    held = parse_holdout(holdout, len(views))
    train = [v for i, v in enumerate(views) if i not in held]
    test = [v for i, v in enumerate(views) if i in held]
    if capture is None:
        depths, near_far = [v.depth for v in train], None
    else:
        train_capture = type(capture)([capture.images[i] for i in range(len(views)) if i not in held], capture.format,
                                      capture.root, capture.points, capture.metric)
        near_far = capture_depth_range(train_capture, train)
        depths = mvs_depths(train, near_far, settings, device)
    built = build_memory(train, depths, settings)
    result = evaluate_heldout(built, train, test, settings, lpips_model, keep_images=True)
    result.update(world=str(Path(path)), format=fmt or "rgbd_folder", holdout=holdout,
                  held_out=[v.name for v in test], depth_range=near_far,
                  lpips="AlexNet v0.1" if lpips_model is not None else "not computed (no weights)")
    return result


def write_capture_report(result: dict, out) -> "Path":
    """``results.json``, ``report.md`` and ``heldout.png`` (per held-out view: real | memory |
    nearest photo) into folder ``out``; returns the report's path."""
    import json
    from pathlib import Path

    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = result.pop("images", [])
    if images:
        rows = [np.concatenate([im["real"], im["memory"], im["nearest"]], 1) for im in images]
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        cv2.imwrite(str(out / "heldout.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    m, b = result["mean"]["memory"], result["mean"]["nearest_photo"]

    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    lines = [f"# Held-out views of {result['world']} ({result['format']}, holdout {result['holdout']})", "",
             f"Held out: {', '.join(result['held_out'])}. Memory built from the other views only; baseline: the "
             "nearest training photo by camera pose, unchanged. LPIPS: " + result["lpips"] + ".", "",
             "| | coverage | PSNR | PSNR covered | SSIM | SSIM covered | LPIPS | LPIPS covered |", "|---|---|---|---|---|---|---|---|"]
    for name, s in (("memory", m), ("nearest photo", b)):
        lines.append(f"| {name} | {f(result['mean']['coverage'], 2) if name == 'memory' else ''} | {f(s['psnr'], 2)} | "
                     f"{f(s.get('psnr_covered'), 2)} | {f(s['ssim'])} | {f(s.get('ssim_covered'))} | {f(s.get('lpips'))} | "
                     f"{f(s.get('lpips_covered'))} |")
    lines += ["", f"Rendering: {result.get('rendering', 'the memory alone')}.", "",
              f"Training views re-rendered at their own poses: PSNR {f(result['mean']['train_psnr'], 2)} dB "
              f"({f(result['mean']['train_psnr_covered'], 2)} dB on covered pixels).", "",
              "![held-out views: real | memory | nearest photo](heldout.png)" if images else ""]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


__all__ = ["evaluate_heldout", "run_capture_eval", "write_capture_report"]
