"""Write an evaluation's results: ``results.json`` and ``report.md`` with PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _fmt(v, digits=3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _save(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if "held_out" in results:
        fig, ax = plt.subplots(figsize=(6, 3))
        for seq in results["held_out"]:
            views = seq["views"]
            ax.plot([v["frame"] for v in views], [v["psnr"] for v in views], "o-", label=Path(seq["folder"]).name)
        ax.set_xlabel("held-out frame")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("Held-out real views")
        ax.legend(fontsize=7)
        made.append(_save(fig, out, "held_out_psnr.png"))
    if "closed_loop" in results or "long_horizon" in results:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3))
        if "closed_loop" in results:
            cl = results["closed_loop"]
            axes[0].plot(range(1, len(cl["memory_voxels"]) + 1), cl["memory_voxels"], "o-", label="closed loop")
            axes[1].plot(cl["coverage"], label="closed loop")
        if "long_horizon" in results:
            lh = results["long_horizon"]["loops"]
            axes[0].plot([r["clips"] for r in lh], [r["memory_voxels"] for r in lh], "s--", label="long horizon")
        axes[0].set_xlabel("clip")
        axes[0].set_ylabel("memory voxels")
        axes[0].set_title("Memory growth")
        axes[1].set_xlabel("frame")
        axes[1].set_ylabel("coverage")
        axes[1].set_ylim(0.0, 1.05)
        axes[1].set_title("Share of pixels the memory explains")
        axes[0].legend(fontsize=7)
        made.append(_save(fig, out, "memory.png"))
    if "closed_loop" in results:
        timings = results["closed_loop"]["timings"]
        stages = sorted({k for t in timings for k in t})
        fig, ax = plt.subplots(figsize=(6, 3))
        bottom = [0.0] * len(timings)
        for stage in stages:
            vals = [t.get(stage, 0.0) for t in timings]
            ax.bar(range(1, len(timings) + 1), vals, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xlabel("clip")
        ax.set_ylabel("seconds")
        ax.set_title("Time per clip by stage")
        ax.legend(fontsize=7)
        made.append(_save(fig, out, "timings.png"))
    if "long_horizon" in results:
        lh = results["long_horizon"]["loops"]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([r["loop"] for r in lh], [min(r["psnr_c"], 60) for r in lh], "o-", label="PSNR_C (capped at 60)")
        ax.plot([r["loop"] for r in lh], [min(r["drift_psnr"], 60) for r in lh], "s--", label="PSNR vs loop 1")
        ax.set_xlabel("loops driven")
        ax.set_ylabel("dB")
        ax.set_title("Long horizon")
        ax.legend(fontsize=7)
        made.append(_save(fig, out, "long_horizon.png"))
    return made


def write_report(results: dict, out) -> Path:
    """Write ``results.json``, the plots and ``report.md`` into folder ``out``; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plots = _plots(results, out)
    meta = results["meta"]
    lines = ["# spatia_ros evaluation", "",
             f"- generator backend: **{meta['backend']}** (weights: {meta['weights']})",
             f"- LPIPS: {meta['lpips']}; match accuracy: {meta['match_method']}",
             f"- resolution {meta['resolution'][0]}x{meta['resolution'][1]}, voxel {meta['voxel_size']} m, "
             f"device {meta['device']}, {meta['seconds']:.1f} s in all", ""]
    if "closed_loop" in results:
        cl = results["closed_loop"]
        cc = cl["camera_control"]
        lines += ["## Closed loop (last frame vs the start image; paper Table 3)", "",
                  "| frames | PSNR_C | SSIM_C | LPIPS_C | match accuracy | rot. err (deg) | transl. dir. err (deg) | s/frame |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {cl['frames']} | {_fmt(cl['psnr_c'], 2)} | {_fmt(cl['ssim_c'])} | {_fmt(cl['lpips_c'])} | "
                  f"{_fmt(cl['match']['accuracy'])} | {_fmt(cc.get('rotation_error_median'), 2)} | "
                  f"{_fmt(cc.get('translation_error_median'), 2)} | {_fmt(cl['seconds_per_frame'], 4)} |", ""]
    if "held_out" in results:
        lines += ["## Held-out real views (leave one out)", "", "| sequence | PSNR | PSNR (covered) | SSIM | LPIPS | coverage |",
                  "|---|---|---|---|---|---|"]
        for seq in results["held_out"]:
            m = seq["mean"]
            lines.append(f"| {Path(seq['folder']).name} | {_fmt(m['psnr'], 2)} | {_fmt(m['psnr_covered'], 2)} | "
                         f"{_fmt(m['ssim'])} | {_fmt(m['lpips'])} | {_fmt(m['coverage'])} |")
        lines.append("")
    if "long_horizon" in results:
        lines += ["## Long horizon (paper Table 6 style)", "", "| loops | clips | PSNR_C | SSIM_C | PSNR vs loop 1 | memory voxels |",
                  "|---|---|---|---|---|---|"]
        for r in results["long_horizon"]["loops"]:
            lines.append(f"| {r['loop']} | {r['clips']} | {_fmt(r['psnr_c'], 2)} | {_fmt(r['ssim_c'])} | "
                         f"{_fmt(r['drift_psnr'], 2)} | {r['memory_voxels']} |")
        lines.append("")
    if "ablations" in results:
        lines += ["## Ablations (closed loop, same run)", "",
                  "| variant | PSNR_C | SSIM_C | LPIPS_C | match accuracy | s/frame | memory voxels |", "|---|---|---|---|---|---|---|"]
        for r in results["ablations"]["rows"]:
            lines.append(f"| {r['variant']} | {_fmt(r['psnr_c'], 2)} | {_fmt(r['ssim_c'])} | {_fmt(r['lpips_c'])} | "
                         f"{_fmt(r['match_accuracy'])} | {_fmt(r['seconds_per_frame'], 4)} | {r['final_memory_voxels']} |")
        lines.append("")
        if meta["backend"] == "projection":
            lines += ["The projection backend ignores reference frames, so the K rows can only differ in timing; "
                      "K matters with the diffusion backend.", ""]
    lines += [f"![{p}]({p})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
