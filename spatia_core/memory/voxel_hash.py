"""A vectorised open-addressing hash map from packed voxel keys to dense slot ids.

Voxel coordinates ``(i, j, k)`` (int64, each in ``[-2**20, 2**20)``) are packed into one
non-negative int64 key. The table uses linear probing; a batch of keys is inserted with a few
vectorised probe rounds (the number of rounds is bounded by the longest probe chain, short at
load factor <= 0.5), so the cost of a lookup or insert depends on the batch, not on the table.
Works on any torch device.
"""

from __future__ import annotations

import torch

from ..errors import InputError

COORD_BITS = 21
COORD_OFFSET = 1 << (COORD_BITS - 1)
_COORD_MASK = (1 << COORD_BITS) - 1
EMPTY = -1
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """int64 (N, 3) voxel coordinates -> int64 (N,) keys; raises if out of range."""
    shifted = coords + COORD_OFFSET
    if shifted.numel() and (int(shifted.min()) < 0 or int(shifted.max()) > _COORD_MASK):
        raise InputError("points lie too far from the origin for the voxel grid (|coord| >= 2^20 voxels)")
    return (shifted[:, 0] << (2 * COORD_BITS)) | (shifted[:, 1] << COORD_BITS) | shifted[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """int64 (N,) keys -> int64 (N, 3) voxel coordinates."""
    i = (keys >> (2 * COORD_BITS)) & _COORD_MASK
    j = (keys >> COORD_BITS) & _COORD_MASK
    k = keys & _COORD_MASK
    return torch.stack([i, j, k], dim=1) - COORD_OFFSET


def voxel_keys(xyz: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Keys of the voxels containing float (N, 3) points."""
    return pack_coords(torch.floor(xyz / voxel_size).to(torch.int64))


class VoxelHash:
    """Map int64 keys to dense ids ``0..size-1`` in insertion order."""

    def __init__(self, capacity: int = 1 << 16, device: str | torch.device = "cpu", max_load: float = 0.5):
        self.device = torch.device(device)
        self.max_load = max_load
        self.size = 0
        self._alloc(max(16, 1 << (int(capacity) - 1).bit_length()))

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.table_keys = torch.full((capacity,), EMPTY, dtype=torch.int64, device=self.device)
        self.table_vals = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)

    @property
    def nbytes(self) -> int:
        return self.table_keys.numel() * 16

    def _hash(self, keys: torch.Tensor) -> torch.Tensor:
        h = keys * _GOLDEN
        return (h ^ (h >> 29)) & (self.capacity - 1)

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Ids of ``keys`` (int64 (M,)), -1 where absent."""
        result = torch.full_like(keys, -1)
        pos = self._hash(keys)
        active = torch.arange(keys.numel(), device=self.device)
        while active.numel():
            cur = self.table_keys[pos[active]]
            hit = cur == keys[active]
            result[active[hit]] = self.table_vals[pos[active[hit]]]
            active = active[~hit & (cur != EMPTY)]
            pos[active] = (pos[active] + 1) & (self.capacity - 1)
        return result

    def insert(self, keys: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``keys`` (unique int64 (M,)), inserting the missing ones.

        New keys get ``values`` (if given) or the next free ids. Returns ``(ids, is_new)``.
        """
        if (self.size + keys.numel()) > self.capacity * self.max_load:
            self._grow(self.size + keys.numel())
        result = torch.full_like(keys, -1)
        is_new = torch.zeros(keys.numel(), dtype=torch.bool, device=self.device)
        pos = self._hash(keys)
        active = torch.arange(keys.numel(), device=self.device)
        while active.numel():
            p, k = pos[active], keys[active]
            cur = self.table_keys[p]
            hit = cur == k
            result[active[hit]] = self.table_vals[p[hit]]
            empty = cur == EMPTY
            pe, ae = p[empty], active[empty]
            self.table_keys[pe] = keys[ae]  # duplicates in pe: exactly one key lands
            won = self.table_keys[pe] == keys[ae]
            winners = ae[won]
            if values is None:
                new_vals = torch.arange(self.size, self.size + winners.numel(), device=self.device)
            else:
                new_vals = values[winners]
            self.table_vals[pe[won]] = new_vals
            result[winners] = new_vals
            is_new[winners] = True
            self.size += winners.numel()
            keep = ~hit
            keep[empty.nonzero(as_tuple=True)[0][won]] = False
            active = active[keep]
            pos[active] = (pos[active] + 1) & (self.capacity - 1)
        return result, is_new

    def _grow(self, needed: int) -> None:
        capacity = self.capacity
        while needed > capacity * self.max_load:
            capacity *= 2
        live = self.table_keys != EMPTY
        keys, vals = self.table_keys[live], self.table_vals[live]
        self._alloc(capacity)
        self.size = 0
        self.insert(keys, vals)

    def rebuild(self, keys: torch.Tensor) -> None:
        """Replace the contents: ``keys[i]`` gets id ``i``."""
        self._alloc(max(16, 1 << (int(keys.numel() / self.max_load) + 1).bit_length()))
        self.size = 0
        self.insert(keys, torch.arange(keys.numel(), device=self.device))
