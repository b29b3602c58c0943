"""Exceptions raised for bad input.

Every error a user can cause (a NaN pose, a corrupt file, a missing checkpoint) is raised as a
:class:`SpatiaError` subclass with a one-line message; the CLI prints that line and the ROS node
logs it, neither shows a traceback.
"""


class SpatiaError(Exception):
    """Base class of all errors that are the caller's to fix."""


class InputError(SpatiaError, ValueError):
    """An argument (pose, image, depth, intrinsics, config value) is invalid."""


class FileFormatError(SpatiaError, OSError):
    """A file is missing, unreadable or not in the expected format."""


class BackendUnavailableError(SpatiaError, RuntimeError):
    """A backend's optional dependency, weights or device is missing."""


class EntityError(InputError):
    """An entity operation was refused; ``reason`` says why: ``unknown`` (no entity of that name),
    ``exists`` (the name is taken), ``bad_pose`` (pose or scale invalid), ``bad_name`` or ``empty``
    (no points to make it from)."""

    REASONS = ("unknown", "exists", "bad_pose", "bad_name", "empty")

    def __init__(self, reason: str, message: str):
        if reason not in self.REASONS:
            raise ValueError(f"unknown EntityError reason {reason!r}")
        super().__init__(f"{message} ({reason})")
        self.reason = reason
