"""Augmentations of ARC grids and their encoding as token sequences on a square canvas.

Numbering and semantics follow the original TRM code (DESIGN §4, TRM_NOTES):
- dihedral ids 0 identity, 1 rot90 (numpy's, counter-clockwise), 2 rot180, 3 rot270,
  4 flip left-right, 5 flip up-down, 6 transpose, 7 anti-transpose; inverses [0,3,2,1,4,5,6,7];
- a colour map keeps 0 and permutes 1..9; a variant is `dihedral(cmap[grid], t)`, named
  `task|||t{t}|||{cmap as 10 digits}`;
- tokens PAD 0, EOS 1, colour c -> c + 2 on a 30x30 canvas: the grid at offset (r, c), an EOS
  row under it and an EOS column right of it, no corner cell, clipped at the canvas edge.

The canvas side is ARC's 30 (900 tokens) unless a dataset chooses a smaller one: generated
tasks of small grids (dataset/synthetic.py) use 8x8 = 64 tokens, so a CPU learns them in
minutes. Every function takes the side from its arrays' length (side², a square).

Per-cell work over many grids (encoding, cropping) runs in numba; one-off helpers use numpy.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from trm_kaggle.arc import MAX_GRID_SIZE, VARIANT_SEPARATOR
from trm_kaggle.config import DataShape

CANVAS = MAX_GRID_SIZE
SEQ_LEN = CANVAS * CANVAS
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_CMAP = np.arange(10, dtype=np.uint8)


def arc_shape(num_puzzle_identifiers: int, canvas: int = CANVAS) -> DataShape:
    """ARC's encoding as a model sees it: canvas² tokens (30×30 = 900) of 12 values (pad, EOS,
    10 colours)."""
    return DataShape(num_puzzle_identifiers=num_puzzle_identifiers, vocab_size=VOCAB_SIZE, seq_len=canvas * canvas)


def canvas_side(seq_len: int) -> int:
    """The side of the square canvas of `seq_len` tokens; ValueError when it is not a square of
    at most 30 (ARC's largest grid)."""
    side = math.isqrt(seq_len)
    if side * side != seq_len or not 1 <= side <= CANVAS:
        raise ValueError(f"{seq_len} tokens are not an ARC canvas (a square of side 1..{CANVAS})")
    return side


# ---------------------------------------------------------------------------- dihedral group

def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Apply dihedral transform `t` (the original's numbering) to a 2-D array."""
    ops = (
        lambda a: a,
        lambda a: np.rot90(a, 1),
        lambda a: np.rot90(a, 2),
        lambda a: np.rot90(a, 3),
        np.fliplr,
        np.flipud,
        lambda a: a.T,
        lambda a: np.fliplr(np.rot90(a, 1)),
    )
    if not 0 <= t < NUM_DIHEDRAL:
        raise ValueError(f"dihedral id must be 0..7, got {t}")
    return np.ascontiguousarray(ops[t](grid))


def inverse_dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    return dihedral(grid, DIHEDRAL_INVERSE[t])


@numba.njit(cache=True, inline="always")
def dihedral_source(t, i, j, h, w):
    """The source cell (row, col) that dihedral `t` moves to (i, j) of an h x w grid."""
    if t == 0:
        return i, j
    if t == 1:
        return j, w - 1 - i
    if t == 2:
        return h - 1 - i, w - 1 - j
    if t == 3:
        return h - 1 - j, i
    if t == 4:
        return i, w - 1 - j
    if t == 5:
        return h - 1 - i, j
    if t == 6:
        return j, i
    return h - 1 - j, w - 1 - i


@numba.njit(cache=True, inline="always")
def dihedral_shape(t, h, w):
    """Shape of an h x w grid after dihedral `t` (odd rotations and transposes swap it)."""
    if t == 1 or t == 3 or t == 6 or t == 7:
        return w, h
    return h, w


# ---------------------------------------------------------------------------- colour maps

def random_cmap(rng: np.random.Generator) -> np.ndarray:
    """A colour map keeping 0 fixed and permuting 1..9 uniformly."""
    return np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)


def inverse_cmap(cmap: np.ndarray) -> np.ndarray:
    return np.argsort(cmap).astype(np.uint8)


def variant_name(task_id: str, t: int, cmap: np.ndarray) -> str:
    """`task|||t{t}|||{cmap digits}`, the original's identifier for a variant."""
    digits = "".join(str(int(c)) for c in cmap)
    return f"{task_id}{VARIANT_SEPARATOR}t{t}{VARIANT_SEPARATOR}{digits}"


def parse_variant_name(name: str) -> tuple[str, int, np.ndarray]:
    """(task id, dihedral id, colour map) of a variant name; a plain task id is the identity."""
    if VARIANT_SEPARATOR not in name:
        return name, 0, IDENTITY_CMAP.copy()
    task_id, t, digits = name.split(VARIANT_SEPARATOR)
    cmap = np.array([int(d) for d in digits], dtype=np.uint8)
    if not (t.startswith("t") and t[1:].isdigit() and int(t[1:]) < NUM_DIHEDRAL):
        raise ValueError(f"variant {name!r}: bad dihedral id {t!r}")
    if sorted(cmap.tolist()) != list(range(10)) or cmap[0] != 0:
        raise ValueError(f"variant {name!r}: colour map must permute 1..9 and keep 0")
    return task_id, int(t[1:]), cmap


def apply_variant(grid: np.ndarray, t: int, cmap: np.ndarray) -> np.ndarray:
    """The grid as variant (t, cmap) shows it."""
    return dihedral(cmap[grid], t)


def undo_variant(grid: np.ndarray, t: int, cmap: np.ndarray) -> np.ndarray:
    """Map a grid predicted for variant (t, cmap) back to the original task's frame."""
    return inverse_cmap(cmap)[inverse_dihedral(grid, t)]


# ---------------------------------------------------------------------------- encoding

@numba.njit(cache=True, inline="always")
def _paint(canvas, side, cells, h, w, t, cmap, r0, c0):
    """Paint the (t, cmap) variant of a flat h x w grid on a zeroed side x side canvas at (r0, c0)."""
    th, tw = dihedral_shape(t, h, w)
    for i in range(th):
        for j in range(tw):
            si, sj = dihedral_source(t, i, j, h, w)
            canvas[(r0 + i) * side + c0 + j] = cmap[cells[si * w + sj]] + COLOUR_OFFSET
    if r0 + th < side:
        for j in range(tw):
            canvas[(r0 + th) * side + c0 + j] = EOS
    if c0 + tw < side:
        for i in range(th):
            canvas[(r0 + i) * side + c0 + tw] = EOS


@numba.njit(cache=True, nogil=True)
def encode_grids(cells, starts, heights, widths, grid_ids, ts, cmaps, offsets, out):
    """Encode many grids: row n of `out` (zeroed, N x side² uint8) gets grid `grid_ids[n]`
    as variant (ts[n], cmaps[n]) at offsets[n]; grid id -1 leaves the row all PAD. The caller
    makes sure each grid fits the canvas at its offset.

    Grids live in one flat bank: grid g is cells[starts[g]: starts[g] + h*w], row-major.
    """
    side = int(np.sqrt(out.shape[1]) + 0.5)
    for n in range(grid_ids.shape[0]):
        g = grid_ids[n]
        if g < 0:
            continue
        s = starts[g]
        h, w = heights[g], widths[g]
        _paint(out[n], side, cells[s:s + h * w], h, w, ts[n], cmaps[n], offsets[n, 0], offsets[n, 1])


def encode_grid(grid: np.ndarray, offset: tuple[int, int] = (0, 0), canvas: int = CANVAS) -> np.ndarray:
    """One grid as a canvas²-token sequence (uint8) with its top-left corner at `offset`."""
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    h, w = grid.shape
    r, c = offset
    if not (0 <= r <= canvas - h and 0 <= c <= canvas - w):
        raise ValueError(f"a {h}x{w} grid does not fit the {canvas}x{canvas} canvas at offset {offset}")
    out = np.zeros((1, canvas * canvas), dtype=np.uint8)
    encode_grids(grid.ravel(), np.zeros(1, np.int64), np.array([h]), np.array([w]),
                 np.zeros(1, np.int64), np.zeros(1, np.int64), IDENTITY_CMAP[None],
                 np.array([[r, c]], dtype=np.int64), out)
    return out[0]


def encode_pair(inp: np.ndarray, out: np.ndarray, offset: tuple[int, int] = (0, 0),
                canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """An (input, output) pair as two sequences sharing one offset, as the original does."""
    return encode_grid(inp, offset, canvas), encode_grid(out, offset, canvas)


@numba.njit(cache=True, nogil=True)
def _crop_at(canvas, side, r0, c0):
    """(rows, cols) of the largest top-left rectangle of colour tokens starting at (r0, c0):
    the original evaluator's crop, walking rows and narrowing the width to each row's run."""
    best_area, best_h, best_w = 0, 0, 0
    width = side - c0
    for h in range(1, side - r0 + 1):
        row = (r0 + h - 1) * side + c0
        for c in range(width):
            x = canvas[row + c]
            if x < COLOUR_OFFSET or x >= VOCAB_SIZE:
                width = c
                break
        if h * width > best_area:
            best_area, best_h, best_w = h * width, h, width
    return best_h, best_w


@numba.njit(cache=True, nogil=True)
def crop_many(seqs, out_h, out_w):
    """Crop sizes for a batch of sequences (N x side²): fills out_h, out_w."""
    side = int(np.sqrt(seqs.shape[1]) + 0.5)
    for n in range(seqs.shape[0]):
        out_h[n], out_w[n] = _crop_at(seqs[n], side, 0, 0)


def crop(seq: np.ndarray) -> np.ndarray:
    """The grid a predicted sequence shows from the top-left corner, as the original evaluator
    crops it. May be 0x0 when the corner is not a colour token: callers must handle that."""
    canvas = np.ascontiguousarray(seq, dtype=np.uint8).ravel()
    side = canvas_side(canvas.size)
    h, w = _crop_at(canvas, side, 0, 0)
    return (canvas.reshape(side, side)[:h, :w] - COLOUR_OFFSET).astype(np.uint8)


def decode(seq: np.ndarray) -> np.ndarray:
    """The grid of an encoded sequence wherever it was translated to (inverse of encode_grid)."""
    flat = np.ascontiguousarray(seq, dtype=np.uint8).ravel()
    side = canvas_side(flat.size)
    canvas = flat.reshape(side, side)
    rows, cols = np.nonzero(canvas >= COLOUR_OFFSET)
    if rows.size == 0:
        raise ValueError("sequence holds no colour cell")
    r0 = int(rows.min())
    c0 = int(cols[rows == r0].min())
    h, w = _crop_at(flat, side, r0, c0)
    return (canvas[r0:r0 + h, c0:c0 + w] - COLOUR_OFFSET).astype(np.uint8)
