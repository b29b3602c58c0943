"""``spatia edit``: edit a saved map (.ply) and undo edits (a thin entry point over :mod:`.edit`).

    spatia edit room.ply --out room_edit.ply --remove-box 1,-0.5,0,2,0.5,1.5
    spatia edit room_edit.ply --out room_edit.ply --recolor-box 0,0,0,1,1,1:255,0,0
    spatia edit room.ply --out room_edit.ply --remove-mask chair.png --pose pose.txt --intrinsics 500,500,320,240
    spatia edit room.ply --out room_edit.ply --add chair.ply --at 1,0,0,0,0,1.57 --scale 0.5
    spatia edit room_edit.ply --undo

Operations run in the order given. The input map is never modified unless it is also ``--out``;
``--out`` is written atomically. Before writing, the map the edit starts from is copied into the
undo journal ``OUT.ply.edits/`` beside the output (``journal.json`` plus one numbered ``.ply``
per edit, the last ``--keep`` edits); ``spatia edit OUT.ply --undo`` puts the map the last edit
of ``OUT.ply`` started from back in place (atomically) and drops that journal entry, so repeated
``--undo`` walks back through the edits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from ..errors import FileFormatError, InputError

_JOURNAL = "journal.json"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class _Ordered(argparse.Action):
    """Appends ``(option, value)`` to ``args.edit_ops`` so operations keep their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        ops = list(getattr(namespace, "edit_ops", None) or [])
        ops.append((self.dest, values))
        setattr(namespace, "edit_ops", ops)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spatia edit``."""
    parser.description = "Edit a saved map (.ply): remove, recolour or add geometry, or undo the last edit."
    # values such as "-1,-1,0,1,1,2" are values, not options (argparse only knows "-1" or "-.5")
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\.?\d")
    parser.epilog = ("Operations (repeatable) run in the order given. Mask operations use the nearest --pose and "
                     "--intrinsics before them (else the first after them); --add uses the nearest --at and --scale "
                     "likewise. The map the edit starts from is kept in OUT.ply.edits/ so that "
                     "'spatia edit OUT.ply --undo' restores it; the input map is never modified unless it is --out.")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(edit_ops=None)
    parser.add_argument("map", help="the map to edit (.ply); with --undo, the edited map to restore")
    parser.add_argument("--out", default="", help="where to write the edited map (.ply; may be the input map)")
    op = dict(action=_Ordered, default=argparse.SUPPRESS)
    parser.add_argument("--remove-box", metavar="X0,Y0,Z0,X1,Y1,Z1", **op,
                        help="remove the voxels inside this axis-aligned box (map frame, metres)")
    parser.add_argument("--recolor-box", metavar="X0,Y0,Z0,X1,Y1,Z1:R,G,B", **op,
                        help="paint the voxels inside the box with the colour R,G,B (0-255)")
    parser.add_argument("--remove-mask", metavar="MASK.png", **op,
                        help="remove what the mask selects in the view --pose/--intrinsics (an image: pixels with any "
                             "non-zero colour channel, alpha ignored; or a .npy array: non-zero)")
    parser.add_argument("--recolor-mask", metavar="MASK.png:R,G,B", **op, help="paint what the mask selects")
    parser.add_argument("--pose", metavar="FILE|16 VALUES", **op,
                        help="camera-to-map pose of the mask's view (OpenCV axes): a text file with a 4x4 (or 3x4) "
                             "matrix, or 16 (12) comma-separated values, row major")
    parser.add_argument("--intrinsics", metavar="FX,FY,CX,CY", **op, help="pinhole intrinsics (pixels) of the mask's view")
    parser.add_argument("--add", metavar="OBJECT.ply", **op, help="add the point cloud of a PLY file as an object")
    parser.add_argument("--at", metavar="X,Y,Z[,ROLL,PITCH,YAW]", **op,
                        help="object position (m) and orientation (rad, fixed axes x-y-z) for --add (default origin)")
    parser.add_argument("--scale", metavar="S", **op, help="object scale for --add (default 1)")
    parser.add_argument("--depth-range", default="", metavar="NEAR,FAR",
                        help="mask operations select everything along the mask's rays between NEAR and FAR metres "
                             "(default: only the visible surface, so what lies behind it stays)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="metres behind the rendered surface still counted as visible (default 2 voxels + 2%% of depth)")
    parser.add_argument("--voxel-size", type=float, default=0.01, help="voxel size of the map (m, default 0.01)")
    parser.add_argument("--keep", type=int, default=5, help="edits kept in the undo journal (default 5)")
    parser.add_argument("--undo", action="store_true", help="restore MAP to the map its last edit started from")


# -- value parsing ------------------------------------------------------------------------------
def _floats(text: str, n: int | tuple[int, ...], what: str) -> list[float]:
    counts = (n,) if isinstance(n, int) else n
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{what}: expected {' or '.join(map(str, counts))} numbers, got {text!r}") from None
    if len(values) not in counts:
        raise InputError(f"{what}: expected {' or '.join(map(str, counts))} numbers, got {len(values)} in {text!r}")
    return values


def _box(text: str) -> tuple[list[float], list[float]]:
    v = _floats(text, 6, "box X0,Y0,Z0,X1,Y1,Z1")
    return v[:3], v[3:]


def _with_colour(text: str, what: str) -> tuple[str, list[float]]:
    head, sep, colour = text.rpartition(":")
    if not sep:
        raise InputError(f"{what}: expected ...:R,G,B, got {text!r}")
    rgb = _floats(colour, 3, f"{what} colour R,G,B")
    if min(rgb) < 0 or max(rgb) > 255:
        raise InputError(f"{what}: colour values must lie in 0..255, got {rgb}")
    return head, rgb


def _pose(text: str):
    import numpy as np

    from ..geometry import validate_pose

    path = Path(text)
    if path.is_file():
        values = [float(v) for v in re.findall(_NUMBER, path.read_text())]
        if len(values) not in (12, 16):
            raise InputError(f"pose file {path} holds {len(values)} numbers, expected a 4x4 or 3x4 matrix")
    else:
        values = _floats(text, (12, 16), "pose (a file or 16 values)")
    return validate_pose(np.asarray(values).reshape(-1, 4), "camera pose")


def _mask(path: str):
    """The mask image (or ``.npy``) of a mask edit, read by :func:`spatia_core.cameras.read_mask`:
    a pixel is selected where any colour channel is non-zero, alpha ignored.

    Before the one shared rule this reader used ``> 127`` (``> 0`` for 0/1 images) over every
    channel, alpha included: now a grey value of 1..127 (an anti-aliased or JPEG edge) counts as
    selected, and an RGBA file whose colour is black is empty whatever its alpha.
    """
    from ..cameras import read_mask

    return read_mask(path)


def _nearest(ops: list, i: int, kind: str):
    """Value of the nearest ``kind`` option before position ``i``, else the first after it."""
    before = [v for k, v in ops[:i] if k == kind]
    if before:
        return before[-1]
    return next((v for k, v in ops[i + 1:] if k == kind), None)


def _plan(args) -> list[tuple[str, dict]]:
    """Parse and check every operation before touching any file."""
    from ..geometry import Intrinsics
    from .edit import object_pose

    ops = args.edit_ops or []
    depth_range = _floats(args.depth_range, 2, "--depth-range NEAR,FAR") if args.depth_range else None
    plan = []
    for i, (kind, value) in enumerate(ops):
        if kind == "remove_box":
            lo, hi = _box(value)
            plan.append(("remove_box", dict(lo=lo, hi=hi)))
        elif kind == "recolor_box":
            box, rgb = _with_colour(value, "--recolor-box")
            lo, hi = _box(box)
            plan.append(("recolor_box", dict(lo=lo, hi=hi, rgb=rgb)))
        elif kind in ("remove_mask", "recolor_mask"):
            path, rgb = _with_colour(value, "--recolor-mask") if kind == "recolor_mask" else (value, None)
            pose, k = _nearest(ops, i, "pose"), _nearest(ops, i, "intrinsics")
            if pose is None or k is None:
                raise InputError(f"--{kind.replace('_', '-')} needs --pose and --intrinsics")
            mask = _mask(path)
            fx, fy, cx, cy = _floats(k, 4, "--intrinsics FX,FY,CX,CY")
            intr = Intrinsics(fx, fy, cx, cy, mask.shape[1], mask.shape[0])
            kw = dict(mask=mask, pose=_pose(pose), intrinsics=intr, depth_range=depth_range, tolerance=args.tolerance)
            if rgb is not None:
                kw["rgb"] = rgb
            plan.append((kind, kw))
        elif kind == "add":
            at, scale = _nearest(ops, i, "at"), _nearest(ops, i, "scale")
            v = _floats(at, (3, 6), "--at X,Y,Z[,ROLL,PITCH,YAW]") if at is not None else [0.0, 0.0, 0.0]
            s = _floats(scale, 1, "--scale")[0] if scale is not None else 1.0
            if not Path(value).is_file():
                raise FileFormatError(f"no such object file: {value}")
            plan.append(("add_ply", dict(path=value, pose=object_pose(v[:3], v[3:] or [0.0, 0.0, 0.0]), scale=s)))
    if not plan:
        raise InputError("no edit given (use --remove-box, --recolor-box, --remove-mask, --recolor-mask, --add or --undo)")
    return plan


# -- undo journal -------------------------------------------------------------------------------
#
# Crash consistency: an edit copies the map it starts from to a new numbered backup, appends the
# journal entry (journal.json, atomically), and only then replaces the map; pruning of old entries
# is written after that, and their files deleted last. A kill at any point leaves the map whole
# (old or new) and never loses the entry of an edit whose map was written. A kill between the
# journal write and the map write leaves an entry whose backup equals the map; ``--undo`` finds
# such an entry (also the one of an undo killed after restoring the map), drops it and says so,
# leaving the map as it is. Backup names are only ever ``NNNN.ply`` inside the journal folder:
# anything else in journal.json (``../x``, an absolute path, a symlink out) is refused.

_BACKUP = re.compile(r"\d{4,9}\.ply")


def _journal_dir(out: Path) -> Path:
    return out.with_name(out.name + ".edits")


def _read_journal(folder: Path) -> dict:
    path = folder / _JOURNAL
    if not path.is_file():
        return {"version": 1, "entries": []}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise ValueError("no list of entries")
        for entry in data["entries"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("backup"), str):
                raise ValueError("an entry without a backup name")
            if not _BACKUP.fullmatch(entry["backup"]):
                raise ValueError(f"backup name {entry['backup']!r} is not a journal file name (NNNN.ply)")
        return data
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"undo journal {path} is damaged: {exc}") from None


def _backup_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a checked ``NNNN.ply`` name that is a regular file (not a link) there."""
    if not _BACKUP.fullmatch(name):
        raise FileFormatError(f"undo journal in {folder} names a backup outside it: {name!r}")
    return folder / name


def _atomic_write(path: Path, data: bytes | None = None, copy_from: Path | None = None) -> None:
    """Write bytes (or a copy of a file) to ``path`` through a verified temporary file and a rename."""
    from ..outputs import atomic_write_bytes

    if copy_from is not None:
        try:
            data = copy_from.read_bytes()
        except OSError as exc:
            raise FileFormatError(f"could not read {copy_from}: {exc}") from None
    atomic_write_bytes(path, data)


def _write_journal(folder: Path, journal: dict) -> None:
    _atomic_write(folder / _JOURNAL, json.dumps(journal, indent=2).encode())


def _same_file_contents(a: Path, b: Path) -> bool:
    import filecmp

    try:
        return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _undo(target: Path) -> int:
    folder = _journal_dir(target)
    journal = _read_journal(folder)
    if not journal["entries"]:
        raise InputError(f"nothing to undo for {target} (no journal entries in {folder})")
    entry = journal["entries"][-1]
    backup = _backup_path(folder, entry["backup"])
    if backup.is_symlink() or not backup.is_file():
        raise FileFormatError(f"undo journal entry {entry['backup']} is missing from {folder}")
    ops = " ".join(str(o) for o in entry.get("operations", []))
    if _same_file_contents(backup, target):  # an interrupted edit (map not written) or undo (journal not written)
        journal["entries"].pop()
        _write_journal(folder, journal)
        backup.unlink(missing_ok=True)
        print(f"{target} already is the map before '{ops}' (an interrupted edit or undo): dropped that journal "
              f"entry, map unchanged ({len(journal['entries'])} more undo steps)")
        return 0
    _atomic_write(target, copy_from=backup)
    journal["entries"].pop()
    _write_journal(folder, journal)
    backup.unlink(missing_ok=True)
    print(f"restored {target} to the map before '{ops}' ({len(journal['entries'])} more undo steps)")
    return 0


def _sweep_orphans(folder: Path, journal: dict) -> None:
    """Delete backups no entry names (left by a kill after pruning was written)."""
    named = {e["backup"] for e in journal["entries"]}
    for child in folder.iterdir():
        if _BACKUP.fullmatch(child.name) and child.name not in named and not child.is_symlink():
            child.unlink(missing_ok=True)


# -- command ------------------------------------------------------------------------------------
def run(args) -> int:
    """Apply the edits (or undo the last one); returns the exit status."""
    source = Path(args.map)
    if args.undo:
        if args.edit_ops:
            raise InputError("--undo cannot be combined with edit operations")
        if args.out and Path(args.out).resolve() != source.resolve():
            raise InputError("--undo restores MAP itself: leave out --out (or give the same file)")
        return _undo(source)
    if not args.out:
        raise InputError("--out is required (it may be the input map itself)")
    out = Path(args.out)
    if out.suffix.lower() != ".ply":
        raise InputError(f"--out must end in .ply: {out}")
    if not out.parent.is_dir():
        raise FileFormatError(f"folder does not exist: {out.parent}")
    if args.keep < 1:
        raise InputError("--keep must be >= 1")
    if not (args.voxel_size > 0):
        raise InputError(f"--voxel-size must be positive, got {args.voxel_size}")
    if not source.is_file():
        raise FileFormatError(f"no such map: {source}")
    plan = _plan(args)

    from . import edit
    from .ply import load_ply, save_ply
    from .spatial_memory import SpatialMemory

    memory = load_ply(source, SpatialMemory(voxel_size=args.voxel_size))
    before = len(memory)
    done = []
    for name, kw in plan:
        n = getattr(edit, name)(memory, **kw)
        print(f"{name}: {n} voxels")
        done.append(name)

    # backup, then the journal entry, then the map; pruning last (see the journal notes above)
    folder = _journal_dir(out)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise FileFormatError(f"cannot create the undo journal folder {folder}: {exc}") from None
    if folder.is_symlink() or not folder.is_dir():
        raise FileFormatError(f"undo journal {folder} is not a folder")
    journal = _read_journal(folder)
    _sweep_orphans(folder, journal)
    numbers = [int(e["backup"][:-4]) for e in journal["entries"]]
    backup = folder / f"{max(numbers, default=0) + 1:04d}.ply"
    _atomic_write(backup, copy_from=source)
    journal["entries"].append({"backup": backup.name, "source": str(source.resolve()), "operations": done,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _write_journal(folder, journal)
    save_ply(memory, out)
    if len(journal["entries"]) > args.keep:
        pruned = journal["entries"][: len(journal["entries"]) - args.keep]
        journal["entries"] = journal["entries"][len(pruned):]
        _write_journal(folder, journal)
        for entry in pruned:
            _backup_path(folder, entry["backup"]).unlink(missing_ok=True)
    print(f"wrote {out} ({before} -> {len(memory)} voxels); undo with: spatia edit {out} --undo")
    return 0
