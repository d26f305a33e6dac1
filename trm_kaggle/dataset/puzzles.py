"""Datasets of puzzles other than ARC (N-Queens; Sudoku to come), written in the original TRM
layout as its Sudoku builder writes them: one example per puzzle and per group, every puzzle
on the one identifier `<blank>` (so a model of them needs no puzzle embedding:
`arch.puzzle_emb_ndim=0`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_kaggle import __version__
from trm_kaggle.atomic import atomic_dir, check_replaceable
from trm_kaggle.dataset import nqueens
from trm_kaggle.dataset.format import (
    BLANK_IDENTIFIER, SPLITS, SplitIndex, directory_size, write_identifiers, write_json, write_split)
from trm_kaggle.errors import UserError

SOURCES = ("nqueens",)
DEFAULT_SIZES = {"nqueens": (7200, 200)}  # train, test: seed 001's split


@dataclass(frozen=True)
class PuzzleOptions:
    source: str
    out: Path
    train_size: int | None = None  # None: the source's default
    test_size: int | None = None
    seed: int = 42
    force: bool = False


def is_puzzle_source(source: str) -> bool:
    return source in SOURCES


def one_per_puzzle(rows: int) -> SplitIndex:
    """Each row its own puzzle and its own group, all on identifier 0."""
    offsets = np.arange(rows + 1, dtype=np.int32)
    return SplitIndex(np.zeros(rows, np.int32), offsets, offsets)


def build_puzzles(options: PuzzleOptions) -> str:
    """Generate and write the dataset `options` describe, atomically; returns a summary line.
    UserError for a bad size or an `out` that --force may not replace."""
    default_train, default_test = DEFAULT_SIZES[options.source]
    train_size = default_train if options.train_size is None else options.train_size
    test_size = default_test if options.test_size is None else options.test_size
    if train_size < 1 or test_size < 1:
        raise UserError(f"--train-size and --test-size must be >= 1, got {train_size} and {test_size}")
    if options.out.exists():
        if not options.force:
            raise UserError(f"{options.out}: exists (--force replaces an earlier dataset)")
        check_replaceable(options.out, lambda d: (d / "build.json").is_file(), "dataset")
    start = time.perf_counter()
    splits = nqueens.generate(train_size, test_size, options.seed)
    with atomic_dir(options.out) as staging:
        write_identifiers(staging, [BLANK_IDENTIFIER])
        for name in SPLITS:
            inputs, labels = splits[name]
            write_split(staging / name, [(inputs, labels)], one_per_puzzle(len(inputs)), seq_len=nqueens.SEQ_LEN,
                        vocab_size=nqueens.VOCAB_SIZE, num_puzzle_identifiers=1)
        write_json(staging / "build.json", {
            "builder": f"trm-kaggle {__version__}", "source": options.source, "seed": options.seed,
            "examples": {name: len(splits[name][0]) for name in SPLITS},
            "queens_given": {name: np.bincount((splits[name][0] == nqueens.QUEEN).sum(1),
                                               minlength=nqueens.SIZE).tolist() for name in SPLITS}})
    return (f"{options.out}: {options.source}: {train_size} train + {test_size} test examples, "
            f"{time.perf_counter() - start:.1f} s, {directory_size(options.out) / 1e6:.1f} MB")
