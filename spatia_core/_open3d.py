"""Import Open3D, preloading libusb from the `libusb-package` wheel when the system lacks it.

Open3D 0.20's Python module links against libusb-1.0, which bare Debian images do not ship;
loading the wheel's copy with RTLD_GLOBAL first satisfies the dependency without root.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from .errors import BackendUnavailableError

_o3d = None


def open3d():
    """Return the imported ``open3d`` module (imported once, lazily)."""
    global _o3d
    if _o3d is None:
        if ctypes.util.find_library("usb-1.0") is None:
            try:
                import libusb_package

                ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
            except (ImportError, OSError):
                pass
        try:
            import open3d as o3d
        except ImportError as exc:
            raise BackendUnavailableError(f"open3d is not importable: {exc}") from exc
        _o3d = o3d
    return _o3d
