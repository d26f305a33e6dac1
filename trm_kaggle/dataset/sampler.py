"""Batches for training and evaluation from a split in the original TRM layout.

Training follows the original TRM sampler: an epoch visits every group (ARC task) once, in
a random order, and for each group takes one random puzzle (augmented variant) with all of
its examples in a random order. Epoch `e` draws only from `SeedSequence([seed, e])`, so any
epoch can be rebuilt from the seed alone, which is what makes resuming exact and cheap.

One deliberate difference: the original cuts the puzzle that straddles the end of a batch
and drops each epoch's last partial batch. Here the epochs are concatenated into one
endless stream of examples cut into consecutive global batches, so nothing is lost: a
straddling puzzle continues in the next batch, and a batch may span two epochs.

Every rank takes its contiguous slice of each global batch, and the resume state counts
examples of the global stream, so a run may resume on a different number of ranks.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from trm_kaggle.dataset.format import SplitArrays
from trm_kaggle.errors import UserError
from trm_kaggle.losses import IGNORE_LABEL  # what the loss skips

Batch = dict[str, torch.Tensor]


def local_batch_size(global_batch_size: int, rank: int, world_size: int) -> int:
    """Each rank's share of a global batch; the arguments checked, since a wrong split of
    the batch would silently train on a different stream than the one configured."""
    if global_batch_size < 1 or world_size < 1:
        raise ValueError(f"global_batch_size ({global_batch_size}) and world_size ({world_size}) "
                         "must be positive")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if global_batch_size % world_size:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
    return global_batch_size // world_size


def example_puzzles(split: SplitArrays) -> np.ndarray:
    """The puzzle of every example, (N,) int64."""
    return np.repeat(np.arange(len(split.puzzle_identifiers)), np.diff(split.puzzle_indices))


def gather(split: SplitArrays, puzzles: np.ndarray, examples: np.ndarray) -> Batch:
    """The rows of `examples`, in that order, as a batch: inputs and labels (B, seq_len) int32,
    puzzle_identifiers (B,) int32 and example_index (B,) int64, each row's example in the
    split (what per-example extras are keyed by); labels equal to the split's ignore label
    become IGNORE_LABEL. Reads the memory map in ascending order, which is what keeps random
    access to a large file on disk fast."""
    order = np.argsort(examples, kind="stable")
    inputs = np.empty((len(examples), split.inputs.shape[1]), dtype=np.int32)
    labels = np.empty_like(inputs)
    inputs[order] = split.inputs[examples[order]]
    labels[order] = split.labels[examples[order]]
    split.check_tokens(examples, inputs, labels)
    ignore = split.metadata.ignore_label_id
    if ignore is not None:
        labels[labels == ignore] = IGNORE_LABEL
    identifiers = split.puzzle_identifiers[puzzles[examples]].astype(np.int32)
    return {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(identifiers),
            "example_index": torch.from_numpy(np.asarray(examples, dtype=np.int64))}


def group_example_counts(split: SplitArrays) -> np.ndarray:
    """Examples per puzzle of every group, (G,); an epoch's length depends on every puzzle
    of a group having the same count, so a dataset where they differ is refused."""
    per_puzzle = np.diff(split.puzzle_indices)
    first = split.group_indices[:-1]
    if np.any(np.diff(split.group_indices) < 1):
        raise UserError("dataset has a group without puzzles")
    group_of_puzzle = np.repeat(np.arange(split.num_groups), np.diff(split.group_indices))
    if np.any(per_puzzle != per_puzzle[first][group_of_puzzle]):
        raise UserError("dataset has a group whose puzzles differ in their number of examples")
    return per_puzzle[first]


class TrainSampler:
    """The endless, resumable training stream of one rank; iterate it or call next_batch()."""

    def __init__(self, split: SplitArrays, global_batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if seed < 0:
            raise ValueError(f"seed {seed} is negative")  # SeedSequence takes none
        self.split, self.seed, self.global_batch_size = split, seed, global_batch_size
        self.local_batch_size = local_batch_size(global_batch_size, rank, world_size)
        self._rank_offset = rank * self.local_batch_size
        self._puzzles = example_puzzles(split)
        self._group_counts = group_example_counts(split)
        self.examples_per_epoch = int(self._group_counts.sum())
        if self.examples_per_epoch == 0:
            raise UserError("dataset split has no examples to train on")
        self._consumed = 0  # examples of the global stream already handed out, all ranks
        self._cached: tuple[int, np.ndarray] | None = None

    def epoch_examples(self, epoch: int) -> np.ndarray:
        """The example indices of one epoch in stream order, (examples_per_epoch,) int64."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        groups = rng.permutation(self.split.num_groups)
        low, high = self.split.group_indices[groups], self.split.group_indices[groups + 1]
        puzzles = rng.integers(low, high)
        counts = self._group_counts[groups]
        segment = np.repeat(np.arange(len(groups)), counts)
        offset = np.arange(self.examples_per_epoch) - np.repeat(np.cumsum(counts) - counts, counts)
        examples = np.repeat(self.split.puzzle_indices[puzzles], counts) + offset
        return examples[np.lexsort((rng.random(len(examples)), segment))]

    def _epoch(self, epoch: int) -> np.ndarray:
        """epoch_examples, remembering the last one: the stream only moves forward, and an
        epoch spans many batches."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.epoch_examples(epoch))
        return self._cached[1]

    def _stream(self, start: int, stop: int) -> np.ndarray:
        """Example indices at positions [start, stop) of the concatenated epochs."""
        size = self.examples_per_epoch
        parts = [self._epoch(epoch)[max(start - epoch * size, 0):min(stop - epoch * size, size)]
                 for epoch in range(start // size, (stop - 1) // size + 1)]
        return np.concatenate(parts)

    def next_batch(self) -> Batch:
        """This rank's slice of the next global batch."""
        start = self._consumed + self._rank_offset
        examples = self._stream(start, start + self.local_batch_size)
        self._consumed += self.global_batch_size
        return gather(self.split, self._puzzles, examples)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    @property
    def epoch_progress(self) -> float:
        """Epochs of the global stream consumed so far, fractional, for logging."""
        return self._consumed / self.examples_per_epoch

    def state_dict(self) -> dict[str, Any]:
        epoch, position = divmod(self._consumed, self.examples_per_epoch)
        return {"seed": self.seed, "epoch": epoch, "position": position,
                "examples_per_epoch": self.examples_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` was taken; refuses a state of another stream (another seed
        or dataset), whose position would point into different examples."""
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler has seed {self.seed}")
        if state["examples_per_epoch"] != self.examples_per_epoch:
            raise ValueError(f"sampler state is of a dataset with {state['examples_per_epoch']} examples per "
                             f"epoch, this one has {self.examples_per_epoch}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.examples_per_epoch:
            raise ValueError(f"sampler state has an invalid epoch {epoch} or position {position}")
        self._consumed = epoch * self.examples_per_epoch + position


def iter_eval_batches(split: SplitArrays, global_batch_size: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[Batch]:
    """Every example once, in order, in global batches; the last one padded to full size
    (inputs PAD, labels ignored, blank puzzle, `example_index` -1) so that every rank runs
    the same number of batches, as collective operations across ranks require."""
    size = local_batch_size(global_batch_size, rank, world_size)
    puzzles, meta = example_puzzles(split), split.metadata
    for batch_start in range(0, split.num_examples, global_batch_size):
        start = batch_start + rank * size
        examples = np.arange(start, min(start + size, split.num_examples))
        batch = gather(split, puzzles, examples)
        padding = size - len(examples)
        batch["inputs"] = _pad(batch["inputs"], padding, meta.pad_id)
        batch["labels"] = _pad(batch["labels"], padding, IGNORE_LABEL)
        batch["puzzle_identifiers"] = _pad(batch["puzzle_identifiers"], padding, meta.blank_identifier_id)
        batch["example_index"] = _pad(batch["example_index"], padding, -1)
        yield batch


def _pad(rows: torch.Tensor, count: int, value: int) -> torch.Tensor:
    """`rows` with `count` rows of `value` appended."""
    return torch.cat([rows, torch.full((count, *rows.shape[1:]), value, dtype=rows.dtype)])
