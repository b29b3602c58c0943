"""Snapshot: the full state of some voxels, copied out of a :class:`SpatialMemory`.

Made by :meth:`SpatialMemory.capture` / :meth:`SpatialMemory.capture_region` and put back by
:meth:`SpatialMemory.restore` (undo, and the static voxels an entity covered).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Snapshot:
    """Voxels as they were: everything a voxel holds, plus where it sat in the memory's arrays."""

    keys: torch.Tensor  # int64 (M,)
    xyz: torch.Tensor  # float32 (M, 3)
    rgb: torch.Tensor  # float32 (M, 3)
    count: torch.Tensor  # int32 (M,)
    last_seen: torch.Tensor  # int32 (M,)
    index: torch.Tensor  # int64 (M,) positions in the memory's arrays when captured
    entity: torch.Tensor | None = None  # int32 (M,) entity id (0: static scene); None = all static
    placement: torch.Tensor | None = None  # int64 (M,) the entity's placement when captured (see restore)

    def __post_init__(self):
        m = self.keys.numel()
        if self.entity is None:
            self.entity = torch.zeros(m, dtype=torch.int32, device=self.keys.device)
        if self.placement is None:
            self.placement = torch.zeros(m, dtype=torch.int64, device=self.keys.device)

    def __len__(self) -> int:
        return int(self.keys.numel())

    def subset(self, sel: torch.Tensor) -> "Snapshot":
        return Snapshot(self.keys[sel], self.xyz[sel], self.rgb[sel], self.count[sel], self.last_seen[sel],
                        self.index[sel], self.entity[sel], self.placement[sel])

    def merged(self, other: "Snapshot") -> "Snapshot":
        """These voxels and ``other``'s; ``other`` wins where both hold a key."""
        mine = self.subset(~torch.isin(self.keys, other.keys))
        return Snapshot(*(torch.cat([getattr(mine, f), getattr(other, f)]) for f in
                          ("keys", "xyz", "rgb", "count", "last_seen", "index", "entity", "placement")))

    @property
    def nbytes(self) -> int:
        return len(self) * (8 + 12 + 12 + 4 + 4 + 8 + 4 + 8)
