"""A vectorised open-addressing hash map from packed voxel keys to dense slot ids.

Voxel coordinates ``(i, j, k)`` (int64, each in ``[-2**20, 2**20)``) are packed into one
non-negative int64 key. The table uses linear probing; a batch of keys is inserted with a few
vectorised probe rounds (the number of rounds is bounded by the longest probe chain, short at
load factor <= 0.5), so the cost of a lookup or insert depends on the batch, not on the table.
Works on any torch device; on CPU the same probing runs as numba loops when numba is installed
(compiled once, cached on disk, GIL released), several times faster than the vectorised rounds.

Growth is amortised (incremental rehash): the next, twice bigger table is written a slice per
:meth:`VoxelHash.insert` while the current one still has room (so its page faults and zeroing,
~60 ms for 8M slots and far more on a busy VM, are spread out), then it becomes the table and
the old entries are moved over, again a slice per insert, sized so that the move ends well
before the new table fills. Every insert pays a bounded share of the growth, and none pays for
the whole table (a full re-insert took ~0.5-1 s at 2M voxels). While a move is in progress a
lookup probes the new table, then the old one for what it missed.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

try:
    import numba
except ImportError:  # the vectorised torch rounds serve instead
    numba = None

COORD_BITS = 21
COORD_OFFSET = 1 << (COORD_BITS - 1)
_COORD_MASK = (1 << COORD_BITS) - 1
EMPTY = -1  # the one key value a table cannot hold (it stores key + 1, and 0 marks a hole)
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
#: Growth phases (see :class:`VoxelHash`), as fractions of the load limit: start preparing the
#: next table at _PREPARE_AT, be done by _READY_BY. Each insert prepares or moves at least
#: _MIN_STEP of a table, so a phase (and the double lookups of a move) ends within 1/_MIN_STEP inserts.
_PREPARE_AT = 0.5
_READY_BY = 0.95
_MIN_STEP = 1 / 32


def _jit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


@_jit
def _nb_find(tkeys, tvals, keys, out):
    """Numba twin of :meth:`_Table.find`: ``out[i]`` = value of ``keys[i]`` or -1."""
    mask = tkeys.shape[0] - 1
    for i in range(keys.shape[0]):
        k = keys[i]
        h = k * _GOLDEN
        p = (h ^ (h >> 29)) & mask
        while True:
            c = tkeys[p]
            if c == k + 1:
                out[i] = tvals[p]
                break
            if c == 0:
                out[i] = -1
                break
            p = (p + 1) & mask


@_jit
def _nb_insert(tkeys, tvals, keys, values, use_values, next_id, out, is_new):
    """Numba twin of :meth:`_Table.insert`; returns the number of keys inserted."""
    mask = tkeys.shape[0] - 1
    added = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        h = k * _GOLDEN
        p = (h ^ (h >> 29)) & mask
        while True:
            c = tkeys[p]
            if c == k + 1 and tvals[p] >= 0:
                out[i] = tvals[p]
                break
            if c == 0 or c == k + 1:  # a hole, or this key's own tombstone: (re)insert
                v = values[i] if use_values else next_id + added
                tkeys[p] = k + 1
                tvals[p] = v
                out[i] = v
                is_new[i] = True
                added += 1
                break
            p = (p + 1) & mask
    return added


@_jit
def _nb_set(tkeys, tvals, keys, values):
    """Give the present ``keys`` the ``values`` (-1: a tombstone); returns how many were live before."""
    mask = tkeys.shape[0] - 1
    live = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        h = k * _GOLDEN
        p = (h ^ (h >> 29)) & mask
        while True:
            c = tkeys[p]
            if c == k + 1:
                if tvals[p] >= 0:
                    live += 1
                tvals[p] = values[i]
                break
            if c == 0:
                break
            p = (p + 1) & mask
    return live


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


class _Table:
    """One linear-probing table: ``keys`` int64 (capacity,) holds key + 1, 0 in a hole, ``vals``
    int64 the values, meaningful where ``keys`` is not 0.

    With ``ready=False`` (CPU) the arrays are only reserved: :meth:`prepare` writes them a slice
    at a time, so the page faults and zeroing of a big new table (~60 ms for 8M slots, far more on
    a busy machine) are spread over many inserts instead of landing on one.
    """

    def __init__(self, capacity: int, device: torch.device, ready: bool = True):
        self.capacity = capacity  # a power of two
        if device.type == "cpu":
            self.keys = torch.from_numpy(np.empty(capacity, np.int64))  # not touched yet: no pages
            self.vals = torch.from_numpy(np.empty(capacity, np.int64))
        else:  # device memory is not faulted in lazily
            self.keys = torch.zeros(capacity, dtype=torch.int64, device=device)
            self.vals = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.prepared = 0 if device.type == "cpu" else capacity  # slots written so far
        self.numba = numba is not None and device.type == "cpu"
        if ready:
            self.prepare(capacity)

    @property
    def ready(self) -> bool:
        return self.prepared == self.capacity

    def prepare(self, slots: int) -> None:
        """Write the next ``slots`` slots (holes)."""
        start, stop = self.prepared, min(self.prepared + max(int(slots), 0), self.capacity)
        self.keys[start:stop] = 0
        self.vals[start:stop] = 0
        self.prepared = stop

    def slots(self, keys: torch.Tensor) -> torch.Tensor:
        h = keys * _GOLDEN
        return (h ^ (h >> 29)) & (self.capacity - 1)

    def _slots_of(self, keys: torch.Tensor) -> torch.Tensor:
        """Vectorised probing (the torch path): the slot holding each key, -1 where absent."""
        found = torch.full_like(keys, -1)
        pos = self.slots(keys)
        active = torch.arange(keys.numel(), device=keys.device)
        mask = self.capacity - 1
        stored = keys + 1
        while active.numel():
            p = pos[active]
            cur = self.keys[p]
            hit = cur == stored[active]
            if hit.any():
                found[active[hit]] = p[hit]
            go_on = ~hit & (cur != 0)
            active = active[go_on]
            pos[active] = (p[go_on] + 1) & mask
        return found

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Values of ``keys``, -1 where absent."""
        if self.numba:
            out = np.empty(keys.numel(), np.int64)
            _nb_find(self.keys.numpy(), self.vals.numpy(), _np(keys), out)
            return torch.from_numpy(out)
        slot = self._slots_of(keys)
        return torch.where(slot >= 0, self.vals[slot.clamp(min=0)], slot)

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> int:
        """Give the present ``keys`` new ``values`` (-1 leaves a tombstone: the key reads as
        absent, its slot keeps probe chains intact); returns how many of them were live."""
        if self.numba:
            return int(_nb_set(self.keys.numpy(), self.vals.numpy(), _np(keys), _np(values)))
        slot = self._slots_of(keys)
        hit = slot >= 0
        live = int((self.vals[slot[hit]] >= 0).sum())
        self.vals[slot[hit]] = values[hit]
        return live

    def insert(self, keys: torch.Tensor, values: torch.Tensor | None, next_id: int):
        """Find-or-insert unique ``keys``; new ones get ``values`` (or ids from ``next_id`` on,
        in the order they land). Returns ``(ids, is_new, number inserted)``."""
        if self.numba:
            out, is_new = np.empty(keys.numel(), np.int64), np.zeros(keys.numel(), np.bool_)
            vals = _np(values) if values is not None else out
            added = _nb_insert(self.keys.numpy(), self.vals.numpy(), _np(keys), vals, values is not None, next_id,
                               out, is_new)
            return torch.from_numpy(out), torch.from_numpy(is_new), int(added)
        result = torch.full_like(keys, -1)
        is_new = torch.zeros(keys.numel(), dtype=torch.bool, device=keys.device)
        pos = self.slots(keys)
        active = torch.arange(keys.numel(), device=keys.device)
        mask = self.capacity - 1
        added = 0
        stored = keys + 1
        while active.numel():
            p = pos[active]
            cur = self.keys[p]
            hit = cur == stored[active]
            dead = hit & (self.vals[p] < 0)  # the key's own tombstone: it is inserted there again
            hit &= ~dead
            if hit.any():
                result[active[hit]] = self.vals[p[hit]]
            empty = (cur == 0) | dead
            pe, ae = p[empty], active[empty]
            self.keys[pe] = stored[ae]  # duplicates in pe: exactly one key lands
            won = self.keys[pe] == stored[ae]
            winners = ae[won]
            if values is None:
                new_vals = torch.arange(next_id + added, next_id + added + winners.numel(), device=keys.device)
            else:
                new_vals = values[winners]
            self.vals[pe[won]] = new_vals
            result[winners] = new_vals
            is_new[winners] = True
            added += winners.numel()
            keep = ~hit
            keep[empty.nonzero(as_tuple=True)[0][won]] = False
            active = active[keep]
            pos[active] = (p[keep] + 1) & mask
        return result, is_new, added


class VoxelHash:
    """Map int64 keys to dense ids ``0..size-1`` in insertion order (see the module docstring).

    ``capacity`` is a hint: the table starts with room for ``capacity * max_load`` keys without
    growing (pre-size it from the expected number of voxels to avoid growth altogether). Keys may
    be any int64 but -1 (:data:`EMPTY`); the packed voxel keys are all >= 0.

    Growth in three phases, all amortised over the inserts that add keys:
      1. at ``_PREPARE_AT`` of the load limit (once the previous move is done), a table twice as
         big is reserved and written a slice per insert (:meth:`_Table.prepare`), done by ~85 %
         of the limit;
      2. at the limit it becomes the table and the old one is moved into it a slice per insert
         (:meth:`_move`), done within a quarter of the room it gained;
      3. then the old table is dropped.
    A single batch bigger than the room left completes the phases at once (that one insert pays).
    """

    def __init__(self, capacity: int = 1 << 16, device: str | torch.device = "cpu", max_load: float = 0.5):
        if not 0 < max_load <= 0.75:
            raise InputError(f"max_load must be in (0, 0.75], got {max_load}")
        self.device = torch.device(device)
        self.max_load = max_load
        self.size = 0
        self.tombstones = 0  # removed keys still holding slots (counted as load until the next growth)
        self._table = _Table(_pow2(capacity), self.device)
        self._next: _Table | None = None  # being prepared (phase 1)
        self._old: _Table | None = None  # being moved into self._table (phase 2)
        self._cursor = 0  # old slots below this have been moved
        self._rate = 0.0  # slots to prepare or move per key added

    # -- introspection ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Slots of the current table."""
        return self._table.capacity

    @property
    def moving(self) -> bool:
        """True while old entries are still being moved into the grown table."""
        return self._old is not None

    @property
    def growing(self) -> bool:
        """True while a bigger table is being prepared or filled (phases 1 and 2)."""
        return self._next is not None or self._old is not None

    @property
    def nbytes(self) -> int:
        slots = sum(t.capacity for t in (self._table, self._next, self._old) if t is not None)
        return slots * 16

    # -- lookups and inserts ---------------------------------------------------------------
    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Ids of ``keys`` (int64 (M,)), -1 where absent."""
        result = self._table.find(keys)
        if self._old is not None:
            miss = (result < 0).nonzero(as_tuple=True)[0]
            if miss.numel():
                result[miss] = self._old.find(keys[miss])
        return result

    def insert(self, keys: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Look up ``keys`` (unique int64 (M,)), inserting the missing ones.

        New keys get ``values`` (if given) or the next free ids. Returns ``(ids, is_new)``.
        """
        m = keys.numel()
        limit = self.capacity * self.max_load
        load = self.size + self.tombstones + m
        if load > limit:
            self._grow(self.size + m)
        elif self._next is None and self._old is None and load > _PREPARE_AT * limit:
            self._start_prepare(self.size + m)
        if self._old is None:
            ids, is_new, added = self._table.insert(keys, values, self.size)
        else:
            # A key is in the old table (moved or not) or in the new one, never inserted twice:
            # keys the old table holds are answered by it; only the others go into the new one.
            ids = self._old.find(keys)
            rest = (ids < 0).nonzero(as_tuple=True)[0]
            is_new = torch.zeros(m, dtype=torch.bool, device=keys.device)
            added = 0
            if rest.numel():
                sub_ids, sub_new, added = self._table.insert(keys[rest], None if values is None else values[rest],
                                                             self.size)
                ids[rest] = sub_ids
                is_new[rest] = sub_new
        self.size += added
        self._step(added)
        return ids, is_new

    def remove(self, keys: torch.Tensor) -> int:
        """Remove present ``keys`` (unique int64); returns how many were there. The caller keeps
        ids dense (``0..size-1``), e.g. by giving the last ids' keys the freed ids (:meth:`set_ids`).
        O(keys): a removed key leaves a tombstone, dropped at the next growth or rebuild."""
        keys = keys.reshape(-1)
        if keys.numel() == 0:
            return 0
        keys = keys[self.find(keys) >= 0]
        dead = torch.full_like(keys, -1)
        self._table.set(keys, dead)
        if self._old is not None:  # not moved yet, or moved and still in the old table
            self._old.set(keys, dead)
        self.size -= keys.numel()
        self.tombstones += keys.numel()
        return int(keys.numel())

    def set_ids(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Give present ``keys`` the ids ``ids`` (ids move with their voxels)."""
        keys, ids = keys.reshape(-1), ids.reshape(-1).to(torch.int64)
        if keys.numel():
            self._table.set(keys, ids)
            if self._old is not None:
                self._old.set(keys, ids)

    def rebuild(self, keys: torch.Tensor) -> None:
        """Replace the contents: ``keys[i]`` gets id ``i``."""
        self._next = self._old = None
        self._cursor = 0
        self.tombstones = 0
        self._table = _Table(_pow2(int(keys.numel() / self.max_load) + 1), self.device)
        self.size = 0
        self.insert(keys, torch.arange(keys.numel(), device=self.device))

    # -- growth ----------------------------------------------------------------------------
    def _bigger(self, needed: int) -> int:
        capacity = 2 * self.capacity
        while needed > capacity * self.max_load:
            capacity *= 2
        return capacity

    def _start_prepare(self, needed: int) -> None:
        """Phase 1: reserve the next table; prepare it within the room left before the limit."""
        self._next = _Table(self._bigger(needed), self.device, ready=False)
        room = max(self.capacity * self.max_load * _READY_BY - needed, 1.0)
        self._rate = 1.25 * self._next.capacity / room  # done within 80 % of the room

    def _grow(self, needed: int) -> None:
        """The current table is at its limit: switch to a bigger one (phase 2). Whatever of the
        phases is still unfinished is completed first."""
        self._finish_move()
        nxt = self._next
        self._next = None
        if nxt is None or needed > nxt.capacity * self.max_load:
            nxt = _Table(self._bigger(needed), self.device)
        nxt.prepare(nxt.capacity)
        self.tombstones = 0  # the move carries live keys only
        if self.size == 0:
            self._table = nxt
            return
        self._old, self._cursor, self._table = self._table, 0, nxt
        # Move all old slots within the first quarter of the room gained (a move is cheap per
        # slot), leaving the rest of the room to prepare the next table.
        room = max(nxt.capacity * self.max_load - needed, 1.0)
        self._rate = 4.0 * self._old.capacity / room

    def _step(self, added: int) -> None:
        """After an insert that added ``added`` keys: prepare or move this insert's share."""
        if self._next is not None:
            self._next.prepare(max(int(added * self._rate) + 1, int(self._next.capacity * _MIN_STEP)))
        elif self._old is not None:
            self._move(max(int(added * self._rate) + 1, int(self._old.capacity * _MIN_STEP)))

    def _move(self, slots: int) -> None:
        """Move the next ``slots`` slots of the old table into the new one."""
        old = self._old
        start, stop = self._cursor, min(self._cursor + slots, old.capacity)
        stored = old.keys[start:stop]
        live = (stored != 0) & (old.vals[start:stop] >= 0)
        if live.any():
            self._table.insert(stored[live] - 1, old.vals[start:stop][live], 0)
        self._cursor = stop
        if stop == old.capacity:
            self._old, self._cursor = None, 0

    def _finish_move(self) -> None:
        if self._old is not None:
            self._move(self._old.capacity)


def _np(t: torch.Tensor) -> np.ndarray:
    """A contiguous int64 numpy view (or copy) of a CPU tensor."""
    return np.ascontiguousarray(t.detach().to(torch.int64).numpy())


def _pow2(capacity: int) -> int:
    return max(16, 1 << (max(int(capacity), 1) - 1).bit_length())
