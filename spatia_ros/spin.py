"""Spinning until shutdown, without the shutdown race turning a clean Ctrl-C into exit code 1.

On SIGINT / SIGTERM rclpy's own handler shuts the context down. If that lands between the
executor's "context ok?" check and its wait, ``spin`` raises ``RCLError: failed to initialize
wait set: the given context is not valid`` instead of ``ExternalShutdownException`` (seen under
load: ``ros2 launch`` then reported "process has died ... exit code 1" after a Ctrl-C).
:func:`spin_until_shutdown` treats any error raised once the context is down as that shutdown.
"""

from __future__ import annotations

from rclpy.executors import ExternalShutdownException


def spin_until_shutdown(executor) -> None:
    """``executor.spin()`` until the context is shut down (Ctrl-C, SIGTERM, ``rclpy.shutdown``);
    errors raised while the context is still up propagate."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if executor.context.ok():
            raise


__all__ = ["spin_until_shutdown"]
