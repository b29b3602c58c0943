"""Service replies that survive Fast DDS's response-discovery race.

A service reply travels on its own topic. When a client is new, the server may take its request
before it has discovered the client's reply reader; ``rmw_fastrtps`` then waits 100 ms for it and
gives up with ``failed to send response (timeout)``, and rclpy only *warns* (the reply is lost
and the client waits forever). On a busy machine discovery takes longer than 100 ms. The rmw
maintainers' advice is to send again once matching has completed (ros2/rmw_fastrtps#467), which
is what :func:`retry_replies` does: each try waits the rmw's 100 ms, up to ``attempts`` tries.

A client that has already gone is not a timeout (the rmw answers OK), so nothing is retried then.
"""

from __future__ import annotations

import threading
import warnings

#: what rclpy warns when the rmw timed out waiting for the client's reply reader
TIMEOUT_TEXT = "failed to send response (timeout)"
#: warnings are process-global: replies are sent one at a time while their warnings are caught
_SEND_LOCK = threading.Lock()


def retry_replies(service, logger=None, attempts: int = 30):
    """Make ``service`` (an rclpy Service) resend a reply the rmw timed out on; returns it."""
    send_once = service.send_response
    name = getattr(service, "srv_name", "service")

    def send_response(response, header) -> None:
        for attempt in range(1, attempts + 1):
            with _SEND_LOCK, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                send_once(response, header)
            lost = False
            for w in caught:
                if TIMEOUT_TEXT in str(w.message):
                    lost = True
                else:  # not ours: let it through as it was
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if not lost:
                if attempt > 1 and logger is not None:
                    logger.info(f"reply to {name} sent on try {attempt} (the client was still being discovered)")
                return
        if logger is not None:
            logger.error(f"reply to {name} lost: the client's reply reader was not discovered "
                         f"after {attempts} tries of 100 ms")

    service.send_response = send_response
    return service
