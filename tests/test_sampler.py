"""The training stream and the evaluation batches, on the original builder's dataset_mini."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from trm_kaggle.dataset.format import SplitArrays, load_split
from trm_kaggle.dataset.sampler import IGNORE_LABEL, Batch, TrainSampler, iter_eval_batches
from trm_kaggle.errors import UserError

from conftest import REFERENCE_DATASET


@pytest.fixture(scope="module")
def train() -> SplitArrays:
    return load_split(REFERENCE_DATASET, "train")


@pytest.fixture(scope="module")
def eval_split() -> SplitArrays:
    return load_split(REFERENCE_DATASET, "test")


def puzzle_of(split: SplitArrays, examples: np.ndarray) -> np.ndarray:
    return np.searchsorted(split.puzzle_indices, examples, side="right") - 1


def groups_in_order(split: SplitArrays, examples: np.ndarray) -> list[int]:
    """The groups a stream of examples visits, one entry per uninterrupted run."""
    groups = np.searchsorted(split.group_indices, puzzle_of(split, examples), side="right") - 1
    return groups[np.flatnonzero(np.diff(groups, prepend=-1))].tolist()


def expected(split: SplitArrays, examples: np.ndarray) -> dict[str, np.ndarray]:
    """What a batch of these examples must hold, computed straight from the split's arrays."""
    labels = np.asarray(split.labels)[examples].astype(np.int32)
    return {"inputs": np.asarray(split.inputs)[examples].astype(np.int32),
            "labels": np.where(labels == split.metadata.ignore_label_id, IGNORE_LABEL, labels),
            "puzzle_identifiers": split.puzzle_identifiers[puzzle_of(split, examples)]}


def assert_batch_holds(batch: Batch, split: SplitArrays, examples: np.ndarray) -> None:
    for key, want in expected(split, examples).items():
        assert batch[key].dtype == torch.int32, key
        np.testing.assert_array_equal(batch[key].numpy(), want, err_msg=key)
    assert batch["example_index"].dtype == torch.int64  # what per-example extras are keyed by
    np.testing.assert_array_equal(batch["example_index"].numpy(), examples)


def take(sampler: TrainSampler, count: int) -> list[Batch]:
    return [sampler.next_batch() for _ in range(count)]


def assert_same_batches(got: list[Batch], want: list[Batch]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def cat_ranks(per_rank: list[list[Batch]]) -> list[Batch]:
    """Each global batch put back together from the ranks' slices, rank 0 first."""
    return [{key: torch.cat([batch[key] for batch in slices]) for key in slices[0]}
            for slices in zip(*per_rank)]


def test_an_epoch_takes_each_group_once_with_all_examples_of_one_of_its_puzzles(train):
    sampler = TrainSampler(train, global_batch_size=7, seed=3)
    assert sampler.examples_per_epoch == 119  # 32 groups; their 4 puzzles share a count
    for epoch in range(4):
        examples = sampler.epoch_examples(epoch)
        assert len(examples) == sampler.examples_per_epoch
        puzzles = puzzle_of(train, examples)
        assert sorted(groups_in_order(train, examples)) == list(range(train.num_groups))
        run_starts = np.flatnonzero(np.diff(puzzles, prepend=-1))
        run_puzzles = puzzles[run_starts]
        assert len(run_puzzles) == train.num_groups  # one puzzle per group
        for run, p in zip(np.split(examples, run_starts[1:]), run_puzzles):
            assert sorted(run) == list(range(train.puzzle_indices[p], train.puzzle_indices[p + 1]))


def test_epochs_differ_in_group_order_variant_and_example_order(train):
    """Every choice an epoch makes is random, not just the first one."""
    sampler = TrainSampler(train, global_batch_size=7, seed=0)
    epochs = [sampler.epoch_examples(e) for e in range(8)]
    puzzles = [puzzle_of(train, ex) for ex in epochs]
    assert len({tuple(groups_in_order(train, ex)) for ex in epochs}) == 8
    assert len({int(p) for ps in puzzles for p in ps if p < 4}) > 1  # variants of group 0
    first = puzzles[0][0]
    assert any(np.any(np.diff(ex[p == first]) < 0) for ex, p in zip(epochs, puzzles))


def test_stream_depends_on_the_seed_only(train):
    first, again, other = (TrainSampler(train, 12, seed=s) for s in (5, 5, 6))
    assert_same_batches(take(first, 20), take(again, 20))
    assert not torch.equal(first.next_batch()["inputs"], other.next_batch()["inputs"])
    np.testing.assert_array_equal(first.epoch_examples(9), TrainSampler(train, 4, seed=5).epoch_examples(9))


def test_batches_cut_the_concatenated_epochs_without_losing_examples(train):
    """A batch size that divides neither an epoch nor a puzzle: puzzles and epochs continue
    into the next batch."""
    sampler = TrainSampler(train, global_batch_size=10, seed=1)
    stream = np.concatenate([sampler.epoch_examples(e) for e in range(3)])
    for i, batch in enumerate(take(sampler, 30)):
        assert_batch_holds(batch, train, stream[i * 10:(i + 1) * 10])
    assert sampler.epoch_progress == pytest.approx(300 / 119)
    assert sampler.state_dict() == {"seed": 1, "epoch": 2, "position": 300 - 238, "examples_per_epoch": 119}


def test_batch_larger_than_an_epoch_spans_several(train):
    sampler = TrainSampler(train, global_batch_size=300, seed=2)
    stream = np.concatenate([sampler.epoch_examples(e) for e in range(6)])
    assert_batch_holds(next(sampler), train, stream[:300])
    assert_batch_holds(next(sampler), train, stream[300:600])


def test_pad_labels_become_ignored_and_the_rest_stay(train):
    sampler = TrainSampler(train, 119, seed=0)
    raw = np.asarray(train.labels)[sampler.epoch_examples(0)]
    batch = sampler.next_batch()
    labels = batch["labels"].numpy()
    assert np.array_equal(labels == IGNORE_LABEL, raw == 0) and (raw == 0).any()
    np.testing.assert_array_equal(labels[raw != 0], raw[raw != 0])


def test_labels_kept_as_they_are_without_an_ignore_label(train):
    split = replace(train, metadata=train.metadata.model_copy(update={"ignore_label_id": None}))
    sampler = TrainSampler(split, 20, seed=0)
    want = np.asarray(train.labels)[sampler.epoch_examples(0)[:20]]
    np.testing.assert_array_equal(sampler.next_batch()["labels"].numpy(), want)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_slices_partition_the_global_batch(train, world_size):
    ranks = [TrainSampler(train, 12, seed=4, rank=r, world_size=world_size) for r in range(world_size)]
    assert {s.local_batch_size for s in ranks} == {12 // world_size}
    assert_same_batches(cat_ranks([take(s, 25) for s in ranks]), take(TrainSampler(train, 12, seed=4), 25))


@pytest.mark.parametrize("world_size", [1, 2, 4])
@pytest.mark.parametrize("done", [3, 10, 21])  # mid-epoch, just past an epoch's end, later on
def test_resume_continues_the_uninterrupted_stream(train, done, world_size):
    uninterrupted = TrainSampler(train, 12, seed=7)
    take(uninterrupted, done)
    state = json.loads(json.dumps(uninterrupted.state_dict()))
    assert state["epoch"] == done * 12 // 119
    resumed = [TrainSampler(train, 12, seed=7, rank=r, world_size=world_size) for r in range(world_size)]
    for sampler in resumed:
        sampler.load_state_dict(state)
        assert sampler.epoch_progress == uninterrupted.epoch_progress
    assert_same_batches(cat_ranks([take(s, 15) for s in resumed]), take(uninterrupted, 15))


def test_state_of_another_stream_is_refused(train):
    state = TrainSampler(train, 12, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed 1.*seed 2"):
        TrainSampler(train, 12, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="examples per epoch"):
        TrainSampler(train, 12, seed=1).load_state_dict(state | {"examples_per_epoch": 120})
    with pytest.raises(ValueError, match="position"):
        TrainSampler(train, 12, seed=1).load_state_dict(state | {"position": 119})


@pytest.mark.parametrize("batch, rank, world_size", [(10, 0, 4), (0, 0, 1), (8, 2, 2), (8, -1, 2)])
def test_bad_batch_arguments_are_refused(train, eval_split, batch, rank, world_size):
    with pytest.raises(ValueError):
        TrainSampler(train, batch, seed=0, rank=rank, world_size=world_size)
    with pytest.raises(ValueError):
        next(iter_eval_batches(eval_split, batch, rank=rank, world_size=world_size))


def test_groups_whose_puzzles_differ_in_size_are_refused(train):
    indices = train.puzzle_indices.copy()
    indices[1] += 1  # puzzle 0 of group 0 takes an example of puzzle 1
    with pytest.raises(UserError, match="differ"):
        TrainSampler(replace(train, puzzle_indices=indices), 12, seed=0)


@pytest.mark.parametrize("batch", [24, 40])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_eval_covers_every_example_once_in_order_and_pads_the_end(eval_split, batch, world_size):
    per_rank = [list(iter_eval_batches(eval_split, batch, rank=r, world_size=world_size))
                for r in range(world_size)]
    assert {len(batches) for batches in per_rank} == {-(-80 // batch)}
    batches = cat_ranks(per_rank)
    index = torch.cat([b["example_index"] for b in batches]).numpy()
    padding = len(batches) * batch - 80
    np.testing.assert_array_equal(index, np.r_[np.arange(80), np.full(padding, -1)])
    merged = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
    assert_batch_holds({key: value[:80] for key, value in merged.items()}, eval_split, np.arange(80))
    meta = eval_split.metadata
    assert (merged["inputs"][80:] == meta.pad_id).all()
    assert (merged["labels"][80:] == IGNORE_LABEL).all()
    assert (merged["puzzle_identifiers"][80:] == meta.blank_identifier_id).all()
