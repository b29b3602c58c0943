"""Photos without poses: incremental structure from motion with ``pycolmap``, on the CPU.

A folder of photos (``images/`` or the folder itself, at least 2 and at most
:data:`MAX_PHOTOS`) becomes a COLMAP model: SIFT features (at most :data:`FEATURE_SIZE` px on
the long side), exhaustive matching up to :data:`EXHAUSTIVE_MAX` photos (sequential matching of
the photos in name order beyond), incremental mapping, and the model with the most registered
photos. One shared camera (``SIMPLE_RADIAL``) when every photo has the same size, else one per
photo; the radial distortion is removed when the photos are decoded, by the COLMAP reader
(:func:`~spatia_core.captures.colmap.read_colmap`), which the model is handed to.

The model is written into ``.spatia_sfm/`` in the folder (or under ``~/.cache/spatia/sfm/`` when
the folder is read-only) with the list of photos it was made from; a later run on the same photos
reads it instead of running SfM again.

SfM recovers the scene up to an unknown similarity: the units are arbitrary (the capture is not
metric) and ``world.metric_scale`` (metres per model unit) scales it. Photos SfM cannot register
are reported (``Capture.notes`` and a warning), never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import BackendUnavailableError, FileFormatError, InputError
from .base import Capture

log = logging.getLogger(__name__)

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MAX_PHOTOS = 100  # CPU SfM is for small sets; run COLMAP yourself beyond and pass the model
EXHAUSTIVE_MAX = 40  # exhaustive matching up to this many photos, sequential beyond
FEATURE_SIZE = 1600  # long side the features are extracted at, px
WORKSPACE = ".spatia_sfm"


def photo_dir(root: Path) -> Path:
    """Where the photos of ``root`` are: ``root/images`` when it holds photos, else ``root``."""
    sub = root / "images"
    return sub if sub.is_dir() and _photos(sub) else root


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def is_photo_folder(root: Path) -> bool:
    """True when ``root`` is a folder holding at least two photos (directly or in ``images/``)."""
    return root.is_dir() and len(_photos(photo_dir(root))) >= 2


def _fingerprint(photos: list[Path]) -> list:
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in photos]


def _workspace(root: Path) -> Path:
    own = root / WORKSPACE
    if (own.is_dir() and os.access(own, os.W_OK)) or os.access(root, os.W_OK):
        return own
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spatia" / "sfm" / key


def _image_sizes(photos: list[Path]) -> set:
    """The distinct ``(width, height)`` of ``photos`` (read from the file headers)."""
    from PIL import Image, UnidentifiedImageError

    sizes = set()
    for p in photos:
        try:
            with Image.open(p) as img:
                sizes.add(img.size)
        except (OSError, UnidentifiedImageError) as exc:
            raise FileFormatError(f"cannot read image {p}: {exc}") from None
    return sizes


def run_sfm(root: str | Path, workspace: str | Path | None = None, num_threads: int = -1) -> Path:
    """Run SfM on the photos of ``root`` (module docstring); returns the model folder (``sparse/0``
    of the workspace, the largest model). Reuses a model made from the same photos."""
    try:
        import pycolmap
    except ImportError as exc:
        raise BackendUnavailableError("structure from motion needs pycolmap (pip install pycolmap)") from exc
    root = Path(root)
    images = photo_dir(root)
    photos = _photos(images) if root.is_dir() else []
    if len(photos) < 2:
        raise InputError(f"{root}: structure from motion needs at least 2 photos, found {len(photos)}")
    if len(photos) > MAX_PHOTOS:
        raise InputError(f"{root}: {len(photos)} photos; SfM on the CPU is for at most {MAX_PHOTOS}: run COLMAP on "
                         "them and pass the model folder (sparse/0 beside images/) as the world")
    ws = Path(workspace) if workspace else _workspace(root)
    model = ws / "sparse" / "0"
    stamp = ws / "photos.json"
    fingerprint = {"images": str(images.resolve()), "photos": _fingerprint(photos)}
    if stamp.is_file() and (model / "cameras.bin").is_file():
        try:
            if json.loads(stamp.read_text()) == fingerprint:
                log.info("SfM: reusing the model in %s", model)
                return model
        except (OSError, ValueError):
            pass
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True, exist_ok=True)
    db = ws / "database.db"
    single = len(_image_sizes(photos)) == 1
    extract = pycolmap.FeatureExtractionOptions()
    extract.num_threads = num_threads
    extract.max_image_size = FEATURE_SIZE
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_RADIAL"
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = num_threads
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = num_threads
    cpu = pycolmap.Device.cpu
    if not log.isEnabledFor(logging.DEBUG):
        pycolmap.logging.minloglevel = pycolmap.logging.Level.WARNING.value  # COLMAP's own progress: with -v only
    log.info("SfM on %d photos of %s (features, %s matching, incremental mapping) into %s", len(photos), images,
             "exhaustive" if len(photos) <= EXHAUSTIVE_MAX else "sequential", ws)
    try:
        pycolmap.extract_features(db, images, image_names=[p.name for p in photos],
                                  camera_mode=pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE,
                                  reader_options=reader, extraction_options=extract, device=cpu)
        if len(photos) <= EXHAUSTIVE_MAX:
            pycolmap.match_exhaustive(db, matching_options=match, device=cpu)
        else:
            pycolmap.match_sequential(db, matching_options=match, device=cpu)
        models = pycolmap.incremental_mapping(db, images, ws / "mapped", mapping)
    except Exception as exc:  # pycolmap raises RuntimeError/ValueError with COLMAP's message
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise FileFormatError(f"{root}: structure from motion failed: {first}") from exc
    if not models:
        raise FileFormatError(f"{root}: structure from motion registered no photos (too little overlap or texture "
                              f"among the {len(photos)} photos)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    model.mkdir(parents=True, exist_ok=True)
    best.write(str(model))
    shutil.rmtree(ws / "mapped", ignore_errors=True)
    stamp.write_text(json.dumps(fingerprint))
    return model


def read_photos(root: str | Path, workspace: str | Path | None = None) -> Capture:
    """The photos of ``root`` posed by :func:`run_sfm`, as a (non-metric) capture."""
    from .colmap import read_colmap

    root = Path(root)
    if not root.is_dir():
        raise FileFormatError(f"{root}: not a folder of photos")
    images = photo_dir(root)
    model = run_sfm(root, workspace)
    cap = read_colmap(model.parents[1], images_dir=str(images.resolve()))
    photos = [p.stem for p in _photos(images)]
    registered = {img.name for img in cap.images}
    missing = [n for n in photos if n not in registered]
    cap = Capture(cap.images, "sfm", root, points=cap.points, metric=False, notes=list(cap.notes))
    cap.notes.append(f"SfM registered {len(registered)} of {len(photos)} photos; the scale is unknown (SfM units): "
                     "set world.metric_scale to metres per unit")
    if missing:
        cap.notes.append(f"not registered (left out): {', '.join(missing)}")
        log.warning("SfM could not register %d of %d photos of %s: %s", len(missing), len(photos), root,
                    ", ".join(missing))
    return cap
