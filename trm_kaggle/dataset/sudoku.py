"""9×9 Sudoku puzzles with a unique solution, generated and verified by a bitmask
backtracking solver (numba), the TRM paper's Sudoku benchmark in the original builder's
encoding: 81 tokens, vocabulary 11 (0 pad, 1 blank, 2..10 the digits 1..9).

A puzzle starts from a random solved grid (a randomised fill) and drops its cells in a random
order, each only if the solution stays unique, down to `target_givens` or until no cell can
go (a minimal puzzle). Greedy removal yields puzzles of about 22–28 givens that a solver
settles with little search: far easier than Sudoku-Extreme (the TRM paper's set, hard puzzles
chosen because simple solvers need deep search on them), so the two accuracies are not
comparable; the givens are recorded per split.

Training puzzles are augmented as the TRM paper does, preserving the solution's validity: a
digit permutation, row permutations within each band, band permutations, the same for
columns, and a transpose.
"""

from __future__ import annotations

import numba
import numpy as np

SIZE, BOX = 9, 3
SEQ_LEN, VOCAB_SIZE = SIZE * SIZE, 11
BLANK_TOKEN = 1  # token = digit + 1 for digits 1..9; a blank is 1, pad 0 is unused


@numba.njit(cache=True)
def _candidates(grid: np.ndarray, cell: int) -> int:
    row, col = cell // SIZE, cell % SIZE
    used = 0
    for k in range(SIZE):
        used |= 1 << grid[row * SIZE + k]
        used |= 1 << grid[k * SIZE + col]
    top, left = row - row % BOX, col - col % BOX
    for r in range(top, top + BOX):
        for c in range(left, left + BOX):
            used |= 1 << grid[r * SIZE + c]
    return ~used & 0b1111111110  # bits 1..9: the digits still allowed


@numba.njit(cache=True)
def _search(grid: np.ndarray, limit: int, order: np.ndarray) -> int:
    """Solutions of `grid` (0 = blank), counted up to `limit`; fills `grid` with the first one
    found when limit is 1. Picks the blank with the fewest candidates; tries digits in `order`."""
    best, best_count, best_mask = -1, 10, 0
    for cell in range(SEQ_LEN):
        if grid[cell] == 0:
            mask = _candidates(grid, cell)
            count = 0
            for d in range(1, 10):
                count += (mask >> d) & 1
            if count < best_count:
                best, best_count, best_mask = cell, count, mask
                if count <= 1:
                    break
    if best < 0:
        return 1
    found = 0
    for i in range(SIZE):
        digit = order[i]
        if (best_mask >> digit) & 1:
            grid[best] = digit
            found += _search(grid, limit - found, order)
            if found >= limit:
                if limit > 1:
                    grid[best] = 0
                return found
            grid[best] = 0
    return found


def count_solutions(grid: np.ndarray, limit: int = 2) -> int:
    """Solutions of a (81,) grid of digits 0..9 (0 blank), counted up to `limit`."""
    return _search(grid.astype(np.int64).copy(), limit, np.arange(1, 10))


def solved_grid(rng: np.random.Generator) -> np.ndarray:
    """A random complete grid, (81,) int64 digits 1..9."""
    grid = np.zeros(SEQ_LEN, dtype=np.int64)
    _search(grid, 1, rng.permutation(np.arange(1, 10)))
    return shuffle_grid(grid[None], rng)[0]  # the fill follows one digit order: shuffle for variety


def make_puzzle(rng: np.random.Generator, target_givens: int) -> tuple[np.ndarray, np.ndarray]:
    """(puzzle, solution), (81,) int64 each, the puzzle's solution unique."""
    solution = solved_grid(rng)
    puzzle = solution.copy()
    givens = SEQ_LEN
    for cell in rng.permutation(SEQ_LEN):
        if givens <= target_givens:
            break
        puzzle[cell] = 0
        if count_solutions(puzzle) != 1:
            puzzle[cell] = solution[cell]
        else:
            givens -= 1
    return puzzle, solution


def shuffle_grid(grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random solution-preserving transform applied alike to (k, 81) grids of digits
    (0 blank): digits permuted, rows within bands and bands permuted, columns within stacks
    and stacks permuted, transposed half the time."""
    digits = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    rows = np.concatenate([band * BOX + rng.permutation(BOX) for band in rng.permutation(BOX)])
    cols = np.concatenate([stack * BOX + rng.permutation(BOX) for stack in rng.permutation(BOX)])
    boards = digits[grids].reshape(-1, SIZE, SIZE)[:, rows][:, :, cols]
    if rng.random() < 0.5:
        boards = boards.transpose(0, 2, 1)
    return boards.reshape(len(grids), SEQ_LEN)


def generate(count: int, seed: int, stream: int, min_givens: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """`count` (puzzles, solutions), (count, 81) int64 digits, from (seed, stream) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    pairs = [make_puzzle(rng, min_givens) for _ in range(count)]
    return np.array([p for p, _ in pairs]).reshape(count, SEQ_LEN), np.array([s for _, s in pairs]).reshape(count, SEQ_LEN)


def tokens(grids: np.ndarray) -> np.ndarray:
    """Digits 0..9 (0 blank) -> tokens 1..10, uint8."""
    return (grids + BLANK_TOKEN).astype(np.uint8)


def augment(grids: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(k, 81) grids (a puzzle and its solution) and `count` random variants of them, each one
    transform (see shuffle_grid) applied alike to the k grids: (count + 1, k, 81), variant 0
    the grids themselves. Vectorised over the variants."""
    variants = np.empty((count + 1, *grids.shape), dtype=grids.dtype)
    variants[0] = grids
    if count == 0:
        return variants
    digits = np.concatenate([np.zeros((count, 1), np.int64),
                             rng.permuted(np.tile(np.arange(1, 10), (count, 1)), axis=1)], axis=1)

    def line_order() -> np.ndarray:  # (count, 9): bands (or stacks) permuted, lines within each
        within = rng.permuted(np.tile(np.arange(BOX), (count * BOX, 1)), axis=1).reshape(count, BOX, BOX)
        return (rng.permuted(np.tile(np.arange(BOX), (count, 1)), axis=1)[:, :, None] * BOX + within).reshape(count, SIZE)

    rows, cols = line_order(), line_order()
    mapped = np.take_along_axis(digits, np.tile(grids.reshape(1, -1), (count, 1)), axis=1)  # digits relabelled
    boards = mapped.reshape(count, len(grids), SIZE, SIZE)
    picks = np.arange(count)[:, None, None]
    boards = boards[picks, np.arange(len(grids))[None, :, None], rows[:, None, :]]  # rows reordered
    boards = boards[picks[..., None], np.arange(len(grids))[None, :, None, None],
                    np.arange(SIZE)[None, None, :, None], cols[:, None, None, :]]   # columns reordered
    flip = rng.random(count) < 0.5
    boards[flip] = boards[flip].transpose(0, 1, 3, 2)
    variants[1:] = boards.reshape(count, len(grids), SEQ_LEN)
    return variants
