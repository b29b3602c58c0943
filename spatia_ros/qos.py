"""rclpy profiles of the one topic/QoS table, :mod:`spatia_core.qos`."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from spatia_core.qos import TOPICS, Qos


def profile(q: Qos) -> QoSProfile:
    """The rclpy ``QoSProfile`` of a table entry."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=q.depth,
                      reliability=ReliabilityPolicy.RELIABLE if q.reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if q.latched else DurabilityPolicy.VOLATILE)


def publisher_profile(name: str, reliable_images: bool = True) -> QoSProfile:
    """What world_sim publishes ``name`` with."""
    return profile(TOPICS[name].offered(reliable_images))


def reader_profile(name: str, reliable_images: bool = True) -> QoSProfile:
    """A compatible subscription to ``name`` that keeps a burst (recorder, tests)."""
    return profile(TOPICS[name].reader(reliable_images))


def from_profile(p) -> Qos:
    """A table entry from an rclpy profile (e.g. of a discovered publisher)."""
    return Qos(reliable=p.reliability == ReliabilityPolicy.RELIABLE, depth=int(p.depth),
               latched=p.durability == DurabilityPolicy.TRANSIENT_LOCAL)


__all__ = ["profile", "publisher_profile", "reader_profile", "from_profile"]
