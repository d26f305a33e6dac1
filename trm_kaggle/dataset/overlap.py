"""Test answers that leak into training: the same pair under another name, orientation or palette.

ARC sets overlap. ARC-AGI-1 training task 40853293 is evaluation task 070dd51e (public report
fchollet/ARC-AGI#162); six ARC-AGI-2 evaluation tasks are ARC-AGI-1 tasks. Because the builder
then augments every pair with the 8 dihedral transforms and colour permutations, an exact
comparison is not enough: a pair is compared by its *canonical key*, the same for every
dihedral transform and every colour relabelling of it (of input and output together).

- `pair_key(input, output)`: the canonical key of one pair.
- `find_leaks(subsets, test_tasks)`: every pair that goes to the train split and equals a test
  pair (input and output) of another task.
- `without_pairs(task, drop)`: the task with some pairs removed (None when nothing is left).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from trm_kaggle.arc import Pair, Query, Task
from trm_kaggle.augment import dihedral


def relabel_colours(input: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours renumbered 0, 1, 2... by first appearance (input then output, row-major): the
    result is the same for every colour permutation of the pair."""
    cells = np.concatenate([input.ravel(), output.ravel()])
    colours, first = np.unique(cells, return_index=True)
    mapping = np.zeros(10, dtype=np.uint8)
    mapping[colours[np.argsort(first)]] = np.arange(len(colours), dtype=np.uint8)
    return mapping[input], mapping[output]


def pair_key(input: np.ndarray, output: np.ndarray) -> bytes:
    """A 16-byte key equal for two (input, output) pairs iff one is a dihedral transform plus a
    colour permutation of the other (up to BLAKE2 collisions). Both grids take the same
    transform and the same permutation, as the builder's augmentations do."""
    digests = []
    for t in range(8):
        a, b = relabel_colours(dihedral(input, t), dihedral(output, t))
        data = np.array([*a.shape, *b.shape], dtype=np.uint8).tobytes() + a.tobytes() + b.tobytes()
        digests.append(hashlib.blake2b(data, digest_size=16).digest())
    return min(digests)


@dataclass(frozen=True)
class PairRef:
    """Where a pair sits: subset, task, and `train[i]` or `test[i]`."""

    subset: str
    task: str
    part: str
    index: int

    def __str__(self) -> str:
        return f"{self.subset} task {self.task} {self.part}[{self.index}]"


@dataclass(frozen=True)
class Leak:
    """A training pair (`pair`) equal to a test pair of another task (`test_pair`)."""

    pair: PairRef
    test_pair: PairRef

    def text(self, kept: bool) -> str:
        what = "kept (--allow-overlap)" if kept else "dropped from training"
        return (f"{self.pair} equals the test pair {self.test_pair} (up to rotation, reflection "
                f"and colours): {what}")


def training_pairs(subset: str, task: Task, in_test_set: bool) -> Iterator[tuple[PairRef, Pair | Query]]:
    """The pairs a task puts in the train split: its demonstrations, and its test pairs with
    known outputs unless it belongs to the test set (as dataset.build does)."""
    for i, pair in enumerate(task.train):
        yield PairRef(subset, task.id, "train", i), pair
    if not in_test_set:
        for i, pair in enumerate(task.test):
            if pair.output is not None:
                yield PairRef(subset, task.id, "test", i), pair


def answer_keys(subset: str, tasks: Iterable[Task]) -> dict[bytes, PairRef]:
    """Canonical key -> the test pair it came from, for test pairs with known outputs."""
    keys = {}
    for task in tasks:
        for i, pair in enumerate(task.test):
            if pair.output is not None:
                keys.setdefault(pair_key(pair.input, pair.output), PairRef(subset, task.id, "test", i))
    return keys


def all_pair_keys(subsets: dict[str, Sequence[Task]]) -> dict[bytes, PairRef]:
    """Canonical key -> a pair with that content, over every pair with an output."""
    keys = {}
    for subset, tasks in subsets.items():
        for task in tasks:
            for ref, pair in training_pairs(subset, task, in_test_set=False):
                keys.setdefault(pair_key(pair.input, pair.output), ref)
    return keys


def find_leaks(subsets: dict[str, Sequence[Task]], test_set: str, test_keys: dict[bytes, PairRef],
               held_out_keys: dict[bytes, PairRef] | None = None) -> list[Leak]:
    """Every train-split pair whose content equals a test answer of another task.

    `test_keys` are the test set's answers, `held_out_keys` those of tasks held out entirely
    (both from `answer_keys`). A task's own demonstrations are never a leak of its own
    answer: at test time they are given. Nor are the test set's demonstrations a leak of another
    test-set task's answer: on Kaggle every hidden task's demonstrations are trained on too, so
    the dataset reproduces that, and the test set is never edited for it. Held-out answers
    are checked against every pair, the test set's demonstrations included."""
    held_out_keys = held_out_keys or {}
    leaks = []
    if not test_keys and not held_out_keys:  # e.g. hidden tasks, whose test outputs nobody knows
        return leaks
    for subset, tasks in subsets.items():
        keys = held_out_keys if subset == test_set else test_keys | held_out_keys
        for task in tasks:
            for ref, pair in training_pairs(subset, task, subset == test_set):
                found = keys.get(pair_key(pair.input, pair.output))
                if found is not None and found.task != task.id:
                    leaks.append(Leak(ref, found))
    return leaks


def without_pairs(task: Task, drop: set[tuple[str, int]], in_test_set: bool) -> Task | None:
    """`task` without the pairs named in `drop` ((part, index)); None when nothing of it is
    left to train on. (`model_copy` skips validation: a task outside the test set may be left
    with only demonstrations or only test pairs, which all go to the train split.)"""
    train = [p for i, p in enumerate(task.train) if ("train", i) not in drop]
    test = [p for i, p in enumerate(task.test) if ("test", i) not in drop]
    trains_on = train if in_test_set else train + [p for p in test if p.output is not None]
    if not trains_on:
        return None
    return task.model_copy(update={"train": train, "test": test})
