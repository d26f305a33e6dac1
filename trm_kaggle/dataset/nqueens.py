"""N-Queens boards, the small benchmark of Deep Improvement Supervision (seed 001, §5.1 of
METHODS.md): an 8×8 board with 1..7 queens already placed such that exactly one of the 92
8-queens solutions contains them; the label is that solution.

Encoding (64 tokens, vocabulary 3, the original layout's pad 0 unused): 1 an empty cell,
2 a queen. Every cell is labelled (1 or 2), so a prediction is exact when it places all 8
queens where the unique completion has them.
"""

from __future__ import annotations

import itertools

import numpy as np

from trm_kaggle.errors import UserError

SIZE = 8
SEQ_LEN, VOCAB_SIZE = SIZE * SIZE, 3
EMPTY, QUEEN = 1, 2


def solutions(size: int = SIZE) -> np.ndarray:
    """Every placement of `size` non-attacking queens, (S, size·size) bool in row-major order
    (92 for 8), in lexicographic order of their columns."""
    found = []
    for columns in itertools.permutations(range(size)):
        rows = range(size)
        if len({r + c for r, c in zip(rows, columns)}) == size == len({r - c for r, c in zip(rows, columns)}):
            board = np.zeros((size, size), dtype=bool)
            board[list(rows), list(columns)] = True
            found.append(board.ravel())
    return np.array(found)


def unique_completions(boards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every set of 1..size−1 queens of a solution that no other solution contains:
    (givens (N, cells) bool, index of the solution each completes to (N,) int64), ordered by
    solution, then by subset."""
    givens, completes = [], []
    for index, board in enumerate(boards):
        cells = np.flatnonzero(board)
        for count in range(1, len(cells)):
            for subset in itertools.combinations(cells, count):
                if np.count_nonzero(boards[:, list(subset)].all(1)) == 1:
                    given = np.zeros(boards.shape[1], dtype=bool)
                    given[list(subset)] = True
                    givens.append(given)
                    completes.append(index)
    return np.array(givens), np.array(completes, dtype=np.int64)


def generate(train_size: int, test_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "test"}: (inputs, labels), each (n, 64) uint8, drawn without replacement from
    every uniquely completing input (`seed` decides which and their order), so the two splits
    share no input. UserError when more are asked for than exist."""
    boards = solutions()
    givens, completes = unique_completions(boards)
    if train_size + test_size > len(givens):
        raise UserError(f"--train-size {train_size} + --test-size {test_size}: only {len(givens)} distinct "
                        f"N-Queens inputs with a unique completion exist")
    order = np.random.default_rng(np.random.SeedSequence([seed, SIZE])).permutation(len(givens))
    picked = {"test": order[:test_size], "train": order[test_size:test_size + train_size]}
    return {split: (np.where(givens[rows], QUEEN, EMPTY).astype(np.uint8),
                    np.where(boards[completes[rows]], QUEEN, EMPTY).astype(np.uint8))
            for split, rows in picked.items()}
