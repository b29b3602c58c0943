"""Missing prerequisites: a skip on a developer's machine, a failure in CI (``CI=true``).

A prerequisite is something the set-up should have provided: the reference data
(``../shared/data``), the official release or the DiffSynth reference, LPIPS weights, a pinned
package (numba, pycolmap, sam2, gymnasium, lightglue), rclpy, the ROS 2 tools, the
simulation_interfaces build. With ``CI=true`` a half-failed set-up must not pass by skipping, so
every such check in ``test/`` goes through here:

* ``require(ok, reason)`` inside a test or fixture;
* ``missing(reason)`` where the check already failed;
* ``require_module(name, reason)`` instead of ``pytest.importorskip`` (module level too: in CI
  the module then fails to collect, which fails the run);
* ``mark(cond, reason)`` instead of ``pytest.mark.skipif(cond, reason=...)`` for ``pytestmark``
  and parameters (in CI the marked tests fail in set-up, see ``test/conftest.py``).

Skips that are not about the set-up (a platform without ``RENAME_EXCHANGE``, a machine that has
a ``cuda:7``) stay plain ``pytest.skip``.
"""

from __future__ import annotations

import os

import pytest

MARK = "missing_prerequisite"


def in_ci() -> bool:
    """True when ``CI`` is ``true`` (any case) or ``1``."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(reason: str):
    """Fail (CI) or skip (elsewhere) because a prerequisite is missing; does not return."""
    if in_ci():
        pytest.fail(f"missing prerequisite (CI=true makes this a failure): {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(ok, reason: str) -> None:
    """:func:`missing` unless ``ok``."""
    if not ok:
        missing(reason)


def require_module(name: str, reason: str | None = None, minversion: str | None = None):
    """The imported module ``name``, else :func:`missing` (like ``pytest.importorskip``)."""
    import importlib

    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        missing(reason or f"could not import {name!r}: {exc}")
    if minversion is not None:
        from packaging.version import Version

        version = getattr(module, "__version__", None)
        if version is None or Version(version) < Version(minversion):
            missing(reason or f"{name} {version} is older than {minversion}")
    return module


def mark(condition, reason: str):
    """``pytest.mark.skipif(condition, reason=reason)``, except that in CI the tests it marks fail."""
    if in_ci():
        return pytest.mark.missing_prerequisite(reason=reason) if condition else pytest.mark.missing_prerequisite(reason=None)
    return pytest.mark.skipif(bool(condition), reason=reason)


def check_item(item) -> None:
    """Called by ``test/conftest.py`` before each test: fail the ones :func:`mark` marked in CI."""
    for m in item.iter_markers(name=MARK):
        if m.kwargs.get("reason"):
            pytest.fail(f"missing prerequisite (CI=true makes this a failure): {m.kwargs['reason']}", pytrace=False)
