"""Which augmented variants of a task go into the dataset.

As the original builder: draw (dihedral, colour map) candidates, keep a candidate when its
content (the multiset of its transformed (input, output) pairs, over both splits) is new,
stop at `num_aug` kept or after 5 x num_aug draws. Unlike the original, the draws come from
a generator seeded by (seed, task id) so a task's variants do not depend on which other
tasks are built with it, and tasks can be processed in any order.

Content identity is checked with Zobrist hashing: a grid's hash is the sum of random 64-bit
keys of its (position, colour) cells plus a key for its shape, in two independent lanes. For
each grid, dihedral t, source colour k and target colour m we precompute the sum of the keys
of colour-k cells at their t-transformed positions, so the hash of any variant of a grid is
10 table look-ups instead of a pass over its cells. Two different variants collide with
probability about 2^-128.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numba
import numpy as np

from trm_kaggle.arc import Task
from trm_kaggle.augment import CANVAS, NUM_DIHEDRAL, dihedral_shape, dihedral_source

RETRIES_FACTOR = 5  # the original's ARCAugmentRetriesFactor
LANES = 2

_zobrist_rng = np.random.default_rng(0x7E41_2025)
_ZPOS = _zobrist_rng.integers(0, 2**64, size=(LANES, CANVAS * CANVAS, 10), dtype=np.uint64)
_ZSHAPE = _zobrist_rng.integers(0, 2**64, size=(LANES, CANVAS + 1, CANVAS + 1), dtype=np.uint64)
_ZNONE = _zobrist_rng.integers(0, 2**64, size=LANES, dtype=np.uint64)  # an unknown output


@dataclass(frozen=True)
class GridBank:
    """A task's grids in one flat uint8 array, and its examples as grid ids.

    Examples are the demonstration pairs then the test pairs; `outputs[e]` is -1 for a test
    input whose output is unknown.
    """

    cells: np.ndarray    # (sum of h*w,) uint8
    starts: np.ndarray   # (G,) int64
    heights: np.ndarray  # (G,) int64
    widths: np.ndarray   # (G,) int64
    inputs: np.ndarray   # (E,) int64 grid id of each example's input
    outputs: np.ndarray  # (E,) int64 grid id of each example's output, or -1
    num_train: int       # examples [0, num_train) are demonstration pairs

    @classmethod
    def from_task(cls, task: Task) -> "GridBank":
        grids: list[np.ndarray] = []

        def add(grid) -> int:
            if grid is None:
                return -1
            grids.append(grid)
            return len(grids) - 1

        pairs = [(p.input, p.output) for p in task.train] + [(p.input, p.output) for p in task.test]
        inputs = [add(i) for i, _ in pairs]
        outputs = [add(o) for _, o in pairs]
        sizes = np.array([g.size for g in grids], dtype=np.int64)
        return cls(
            cells=np.concatenate([g.ravel() for g in grids]).astype(np.uint8),
            starts=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
            heights=np.array([g.shape[0] for g in grids], dtype=np.int64),
            widths=np.array([g.shape[1] for g in grids], dtype=np.int64),
            inputs=np.array(inputs, dtype=np.int64),
            outputs=np.array(outputs, dtype=np.int64),
            num_train=len(task.train),
        )


@numba.njit(cache=True, nogil=True)
def _colour_tables(cells, starts, heights, widths, zpos, zshape):
    """Per grid: table[g, t, k, m, lane] = sum of the keys of colour-k cells moved by t and
    recoloured m; shape[g, t, lane] = key of the t-transformed shape."""
    num_grids = starts.shape[0]
    table = np.zeros((num_grids, NUM_DIHEDRAL, 10, 10, zpos.shape[0]), dtype=np.uint64)
    shape = np.zeros((num_grids, NUM_DIHEDRAL, zpos.shape[0]), dtype=np.uint64)
    for g in range(num_grids):
        h, w, s = heights[g], widths[g], starts[g]
        for t in range(NUM_DIHEDRAL):
            th, tw = dihedral_shape(t, h, w)
            for lane in range(zpos.shape[0]):
                shape[g, t, lane] = zshape[lane, th, tw]
            for i in range(th):
                for j in range(tw):
                    si, sj = dihedral_source(t, i, j, h, w)
                    k = cells[s + si * w + sj]
                    pos = i * CANVAS + j
                    for m in range(10):
                        for lane in range(zpos.shape[0]):
                            table[g, t, k, m, lane] += zpos[lane, pos, m]
    return table, shape


@numba.njit(cache=True, inline="always")
def _mix(x):
    """splitmix64's finaliser: a bijective scramble of a 64-bit word."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@numba.njit(cache=True, inline="always")
def _grid_hash(table, shape, g, t, cmap, lane):
    acc = shape[g, t, lane]
    for k in range(10):
        acc += table[g, t, k, cmap[k], lane]
    return acc


@numba.njit(cache=True, nogil=True)
def _variant_hashes(table, shape, inputs, outputs, znone, ts, cmaps):
    """Content hash (LANES words) of each candidate (ts[n], cmaps[n]): an order-free sum over
    examples of a mix of (input hash, output hash), so it equals iff the pair multisets do."""
    lanes = table.shape[4]
    out = np.zeros((ts.shape[0], lanes), dtype=np.uint64)
    for n in range(ts.shape[0]):
        for e in range(inputs.shape[0]):
            for lane in range(lanes):
                h_in = _grid_hash(table, shape, inputs[e], ts[n], cmaps[n], lane)
                h_out = znone[lane] if outputs[e] < 0 else _grid_hash(table, shape, outputs[e], ts[n], cmaps[n], lane)
                out[n, lane] += _mix(_mix(h_in) ^ h_out)
    return out


def task_rng(seed: int, task_id: str, stream: int) -> np.random.Generator:
    """A generator for one task and purpose (0: variants, 1: translations), from the seed."""
    task_key = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:16], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, task_key, stream]))


def draw_candidates(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (dihedral id, colour map keeping 0) candidates."""
    ts = rng.integers(0, NUM_DIHEDRAL, size=count, dtype=np.int64)
    perms = rng.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (count, 1)), axis=1)
    cmaps = np.concatenate([np.zeros((count, 1), dtype=np.uint8), perms], axis=1)
    return ts, cmaps


def first_unique(keys: np.ndarray, exclude: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of `keys`, in draw order, skipping
    rows equal to `exclude`, at most `limit` of them: the original's sequential dedup."""
    _, first = np.unique(keys, axis=0, return_index=True)
    first = np.sort(first)
    first = first[~np.all(keys[first] == exclude, axis=1)]
    return first[:limit]


def choose_variants(bank: GridBank, num_aug: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ts, cmaps) of the variants to build: row 0 is the original, then up to `num_aug`
    augmented variants whose content differs from each other and from the original."""
    identity_t = np.zeros(1, dtype=np.int64)
    identity_cmap = np.arange(10, dtype=np.uint8)[None]
    if num_aug <= 0:
        return identity_t, identity_cmap
    ts, cmaps = draw_candidates(rng, RETRIES_FACTOR * num_aug)
    table, shape = _colour_tables(bank.cells, bank.starts, bank.heights, bank.widths, _ZPOS, _ZSHAPE)
    identity_key = _variant_hashes(table, shape, bank.inputs, bank.outputs, _ZNONE, identity_t, identity_cmap)[0]
    keys = _variant_hashes(table, shape, bank.inputs, bank.outputs, _ZNONE, ts, cmaps)
    keep = first_unique(keys, identity_key, num_aug)
    return np.concatenate([identity_t, ts[keep]]), np.concatenate([identity_cmap, cmaps[keep]])
