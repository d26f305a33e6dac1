"""Datasets of puzzles other than ARC (N-Queens, Sudoku), written in the original TRM layout as
its Sudoku builder writes them: one example per puzzle, a group per original puzzle (its
augmented variants are the group's other puzzles, of which an epoch draws one), every puzzle
on the one identifier `<blank>` (so a model of them needs no puzzle embedding:
`arch.puzzle_emb_ndim=0`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from trm_kaggle import __version__
from trm_kaggle.atomic import atomic_dir, check_replaceable
from trm_kaggle.dataset import nqueens, sudoku
from trm_kaggle.dataset.format import (
    BLANK_IDENTIFIER, SPLITS, SplitIndex, directory_size, write_identifiers, write_json, write_split)
from trm_kaggle.errors import UserError



@dataclass(frozen=True)
class PuzzleOptions:
    source: str
    out: Path
    train_size: int | None = None  # None: the source's default
    test_size: int | None = None
    seed: int = 42
    num_aug: int | None = None  # Sudoku: augmented variants per training puzzle (default 1000, the TRM paper's)
    force: bool = False


def is_puzzle_source(source: str) -> bool:
    return source in SOURCES


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray         # (N, seq_len) uint8
    labels: np.ndarray         # (N, seq_len) uint8
    group_sizes: np.ndarray    # (G,) puzzles per group, summing to N

    def index(self) -> SplitIndex:
        """Each row its own puzzle on identifier 0; groups of `group_sizes` puzzles."""
        rows = len(self.inputs)
        return SplitIndex(np.zeros(rows, np.int32), np.arange(rows + 1, dtype=np.int32),
                          np.concatenate([[0], np.cumsum(self.group_sizes)]).astype(np.int32))


def nqueens_splits(train_size: int, test_size: int, options: PuzzleOptions) -> dict[str, Split]:
    if options.num_aug is not None:
        raise UserError("--num-aug: N-Queens is not augmented (seed 001)")
    return {name: Split(inputs, labels, np.ones(len(inputs), np.int64))
            for name, (inputs, labels) in nqueens.generate(train_size, test_size, options.seed).items()}


def sudoku_splits(train_size: int, test_size: int, options: PuzzleOptions) -> dict[str, Split]:
    """Test puzzles plain; each training puzzle with `num_aug` variants in its group."""
    num_aug = 1000 if options.num_aug is None else options.num_aug
    if num_aug < 0:
        raise UserError(f"--num-aug must be >= 0, got {num_aug}")
    train_puzzles, train_solutions = sudoku.generate(train_size, options.seed, stream=0)
    test_puzzles, test_solutions = sudoku.generate(test_size, options.seed, stream=1)
    rng = np.random.default_rng(np.random.SeedSequence([options.seed, 2]))
    variants = np.concatenate([sudoku.augment(np.stack([p, s]), num_aug, rng)
                               for p, s in zip(train_puzzles, train_solutions)])  # (train·(num_aug+1), 2, 81)
    return {"train": Split(sudoku.tokens(variants[:, 0]), sudoku.tokens(variants[:, 1]),
                           np.full(train_size, num_aug + 1)),
            "test": Split(sudoku.tokens(test_puzzles), sudoku.tokens(test_solutions), np.ones(test_size, np.int64))}


@dataclass(frozen=True)
class Source:
    splits: Callable[[int, int, PuzzleOptions], dict[str, Split]]
    seq_len: int
    vocab_size: int
    blank: int        # the token of an empty cell: what an input does not give
    train_size: int   # defaults
    test_size: int


SOURCES = {"nqueens": Source(nqueens_splits, nqueens.SEQ_LEN, nqueens.VOCAB_SIZE, nqueens.EMPTY, 7200, 200),  # seed 001's
           "sudoku": Source(sudoku_splits, sudoku.SEQ_LEN, sudoku.VOCAB_SIZE, sudoku.BLANK_TOKEN, 1000, 1000)}


def givens(split: Split, blank: int) -> dict[str, float]:
    """How many cells an input gives (Sudoku: the grade; N-Queens: queens placed)."""
    counts = (split.inputs != blank).sum(1)
    return {"min": int(counts.min()), "mean": round(float(counts.mean()), 2), "max": int(counts.max())}


def build_puzzles(options: PuzzleOptions) -> str:
    """Generate and write the dataset `options` describe, atomically; returns a summary line.
    UserError for a bad size or an `out` that --force may not replace."""
    source = SOURCES[options.source]
    train_size = source.train_size if options.train_size is None else options.train_size
    test_size = source.test_size if options.test_size is None else options.test_size
    if train_size < 1 or test_size < 1:
        raise UserError(f"--train-size and --test-size must be >= 1, got {train_size} and {test_size}")
    if options.out.exists():
        if not options.force:
            raise UserError(f"{options.out}: exists (--force replaces an earlier dataset)")
        check_replaceable(options.out, lambda d: (d / "build.json").is_file(), "dataset")
    start = time.perf_counter()
    splits = source.splits(train_size, test_size, options)
    blank = source.blank
    with atomic_dir(options.out) as staging:
        write_identifiers(staging, [BLANK_IDENTIFIER])
        for name in SPLITS:
            split = splits[name]
            write_split(staging / name, [(split.inputs, split.labels)], split.index(), seq_len=source.seq_len,
                        vocab_size=source.vocab_size, num_puzzle_identifiers=1)
        write_json(staging / "build.json", {
            "builder": f"trm-kaggle {__version__}", "source": options.source, "seed": options.seed,
            "num_aug": options.num_aug, "examples": {name: len(splits[name].inputs) for name in SPLITS},
            "givens": {name: givens(splits[name], blank) for name in SPLITS}})
    examples = {name: len(splits[name].inputs) for name in SPLITS}
    return (f"{options.out}: {options.source}: {examples['train']} train examples ({train_size} puzzles) + "
            f"{examples['test']} test, given cells per test puzzle {givens(splits['test'], blank)}, "
            f"built in {time.perf_counter() - start:.1f} s, {directory_size(options.out) / 1e6:.1f} MB on disk")
