"""VoxelHash: correctness while the table grows (incremental rehash), against a Python dict."""
import numpy as np
import pytest

import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core.errors import InputError
from spatia_core.memory import voxel_hash
from spatia_core.memory.voxel_hash import VoxelHash, pack_coords, unpack_keys


@pytest.fixture(params=["numba", "torch"])
def kernel(request, monkeypatch):
    """Both probing paths on CPU: the numba loops (when installed) and the vectorised torch rounds."""
    _prereq.require(request.param != "numba" or voxel_hash.numba is not None, "numba is not installed (requirements.txt)")
    if request.param == "torch":
        monkeypatch.setattr(voxel_hash, "numba", None)
    return request.param


def _random_keys(rng, n):
    coords = torch.as_tensor(rng.integers(-(1 << 20), 1 << 20, size=(n, 3)), dtype=torch.int64)
    return torch.unique(pack_coords(coords))


def test_growth_keeps_every_key_and_value(kernel):
    """Insert batches that keep adding keys (new ones mixed with seen ones) from an empty 16-slot
    table to 200k keys: after every batch each key ever inserted is found with its id, new keys
    got the next ids (dense), seen keys their old id, and absent keys are not found, through the
    preparing and the moving phases of every growth."""
    total = 200_000 if kernel == "numba" else 60_000
    rng = np.random.default_rng(0)
    pool = _random_keys(rng, total + 20_000)
    pool = pool[torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(1))]
    table = VoxelHash(capacity=16)
    ids_of = torch.full((pool.numel(),), -1, dtype=torch.int64)  # expected id per pool position
    inserted, batch, moves_seen, grew = 0, 64, 0, 0
    while inserted < total:
        fresh = torch.arange(inserted, min(inserted + batch, total))
        seen = torch.unique(torch.randint(0, inserted, (min(inserted, batch),))) if inserted else fresh[:0]
        pos = torch.cat([fresh, seen])
        pos = pos[torch.randperm(pos.numel())]
        ids, is_new = table.insert(pool[pos])
        assert torch.equal(is_new, pos >= inserted)
        assert torch.equal(ids[~is_new], ids_of[pos[~is_new]])
        assert torch.equal(torch.sort(ids[is_new]).values, torch.arange(inserted, inserted + fresh.numel()))
        ids_of[pos[is_new]] = ids[is_new]
        inserted += fresh.numel()
        moves_seen += table.moving
        grew += table.growing
        assert table.size == inserted
        assert torch.equal(table.find(pool[:inserted]), ids_of[:inserted])
        assert (table.find(pool[inserted:inserted + 1000]) == -1).all()
        batch = min(batch * 2, 4096)
    assert moves_seen > 0 and grew > moves_seen  # both the preparing and the moving phases ran
    assert table.capacity >= table.size / table.max_load


def test_insert_with_values_and_rebuild(kernel):
    rng = np.random.default_rng(2)
    keys = _random_keys(rng, 50_000)
    table = VoxelHash(capacity=16)
    vals = torch.arange(keys.numel()) * 3 + 7
    half = keys.numel() // 2
    table.insert(keys[:half], vals[:half])
    ids, is_new = table.insert(keys, vals)  # grows mid-way; the first half is found, not new
    assert torch.equal(ids, vals) and not is_new[:half].any() and is_new[half:].all()
    assert torch.equal(table.find(keys), vals)
    table.rebuild(keys.flip(0))
    assert not table.moving and table.size == keys.numel()
    assert torch.equal(table.find(keys.flip(0)), torch.arange(keys.numel()))


def test_grow_during_a_move_finishes_it_first(kernel):
    """Batches bigger than the room left while a table is being prepared or moved: nothing is
    lost (those inserts finish the growth phases at once)."""
    rng = np.random.default_rng(3)
    keys = _random_keys(rng, 120_000 if kernel == "numba" else 40_000)
    table = VoxelHash(capacity=16)
    ids = [table.insert(part)[0] for part in (keys[:1000], keys[1000:1100], keys[1100:20_000], keys[20_000:])]
    assert torch.equal(torch.sort(torch.cat(ids)).values, torch.arange(keys.numel()))
    assert torch.equal(table.find(keys), torch.cat(ids))


def test_empty_and_bad_arguments():
    table = VoxelHash()
    empty = torch.zeros(0, dtype=torch.int64)
    ids, is_new = table.insert(empty)
    assert ids.numel() == 0 and is_new.numel() == 0 and table.size == 0
    assert table.find(empty).numel() == 0
    with pytest.raises(InputError):
        VoxelHash(max_load=0.9)
    with pytest.raises(InputError):
        pack_coords(torch.tensor([[1 << 20, 0, 0]]))
    coords = torch.tensor([[-(1 << 20), 0, (1 << 20) - 1], [3, -4, 5]])
    assert torch.equal(unpack_keys(pack_coords(coords)), coords)


def test_remove_and_reinsert_through_growth(kernel):
    """Removing keys (tombstones) mixed with inserts and id moves, as SpatialMemory.remove_ids
    does (the last ids move into the freed ones), through every growth phase: each live key is
    found with its id, removed keys are absent until inserted again (then new, with the next id)."""
    rng = np.random.default_rng(4)
    pool = _random_keys(rng, 60_000 if kernel == "numba" else 20_000)
    table = VoxelHash(capacity=16)
    by_id: list[int] = []  # key of each dense id
    live: set[int] = set()
    moving_removals = 0
    for step in range(300):
        cand = pool[torch.as_tensor(rng.integers(0, pool.numel(), 300))].unique()
        ids, is_new = table.insert(cand)
        assert is_new.tolist() == [k not in live for k in cand.tolist()]
        assert torch.equal(torch.sort(ids[is_new]).values, torch.arange(len(by_id), len(by_id) + int(is_new.sum())))
        assert all(by_id[i] == k for k, i in zip(cand[~is_new].tolist(), ids[~is_new].tolist()))
        by_id.extend([0] * int(is_new.sum()))
        for k, i in zip(cand[is_new].tolist(), ids[is_new].tolist()):
            by_id[i] = k
            live.add(k)
        if by_id and step % 2:
            gone_ids = sorted(set(rng.integers(0, len(by_id), max(1, len(by_id) // 20)).tolist()))
            gone_keys = torch.as_tensor([by_id[i] for i in gone_ids])
            moving_removals += table.moving
            assert table.remove(gone_keys) == len(gone_ids)
            assert table.remove(gone_keys) == 0  # twice: nothing left to remove
            m = len(by_id) - len(gone_ids)
            holes = [i for i in gone_ids if i < m]
            movers = [i for i in range(m, len(by_id)) if i not in set(gone_ids)]
            for h, mv in zip(holes, movers):
                by_id[h] = by_id[mv]
            table.set_ids(torch.as_tensor([by_id[h] for h in holes], dtype=torch.int64),
                          torch.as_tensor(holes, dtype=torch.int64))
            live -= set(gone_keys.tolist())
            del by_id[m:]
        assert table.size == len(by_id) == len(live)
        if by_id:
            assert table.find(torch.as_tensor(by_id)).tolist() == list(range(len(by_id)))
        dead = [k for k in pool[:2000].tolist() if k not in live]
        assert (table.find(torch.as_tensor(dead, dtype=torch.int64)) == -1).all()
    assert moving_removals > 0  # removals also ran while a grown table was being filled
    assert table.size + table.tombstones <= table.capacity * table.max_load
