"""The generic dataset writer (format.write_split) on a tiny non-ARC dataset."""

from __future__ import annotations

import numpy as np
import pytest

from trm_kaggle.dataset.format import (
    BLANK_IDENTIFIER, DatasetMetadata, SplitIndex, load_identifiers, load_split, write_identifiers, write_split)

from conftest import REFERENCE_DATASET

SEQ_LEN, VOCAB = 64, 3


def tiny_index() -> SplitIndex:
    """Two groups: puzzles of 2, 3 and 1 rows (6 rows), all with the <blank> identifier."""
    return SplitIndex(puzzle_identifiers=np.zeros(3, np.int64), puzzle_indices=np.array([0, 2, 5, 6]),
                      group_indices=np.array([0, 2, 3]))


def tiny_rows(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (n, SEQ_LEN), dtype=np.uint8),
            rng.integers(0, VOCAB, (n, SEQ_LEN), dtype=np.uint8))


def write_tiny(split_dir, chunks, index=None, **shape):
    shape = {"seq_len": SEQ_LEN, "vocab_size": VOCAB, "num_puzzle_identifiers": 1} | shape
    return write_split(split_dir, chunks, tiny_index() if index is None else index, **shape)


def test_a_tiny_non_arc_split_round_trips(tmp_path):
    inputs, labels = tiny_rows()
    assert write_identifiers(tmp_path, [BLANK_IDENTIFIER]) == 1
    chunks = ((inputs[lo:hi], labels[lo:hi]) for lo, hi in ((0, 4), (4, 4), (4, 6)))  # an empty chunk too
    written = write_tiny(tmp_path / "train", chunks)

    split = load_split(tmp_path, "train")
    assert split.metadata == written == DatasetMetadata(
        vocab_size=VOCAB, seq_len=SEQ_LEN, num_puzzle_identifiers=1, total_groups=2, total_puzzles=3,
        mean_puzzle_examples=2.0)
    np.testing.assert_array_equal(split.inputs, inputs)
    np.testing.assert_array_equal(split.labels, labels)
    for field in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        array = getattr(split, field)
        assert array.dtype == np.int32, field
        np.testing.assert_array_equal(array, getattr(tiny_index(), field))
    assert load_identifiers(tmp_path) == [BLANK_IDENTIFIER]


def test_an_empty_split_is_written(tmp_path):
    index = SplitIndex(np.zeros(0, np.int32), np.array([0]), np.array([0]))
    meta = write_tiny(tmp_path / "test", [], index)
    assert (meta.total_puzzles, meta.total_groups, meta.mean_puzzle_examples) == (0, 0, 0.0)
    assert load_split(tmp_path, "test").inputs.shape == (0, SEQ_LEN)


def test_metadata_requires_the_shape_and_still_loads_the_originals():
    with pytest.raises(ValueError, match="vocab_size"):
        DatasetMetadata(seq_len=SEQ_LEN, num_puzzle_identifiers=1, total_groups=0, total_puzzles=0,
                        mean_puzzle_examples=0.0)
    for split in ("train", "test"):
        meta = load_split(REFERENCE_DATASET, split).metadata
        assert (meta.vocab_size, meta.seq_len) == (12, 900)


def test_a_token_outside_the_vocabulary_names_the_file_and_row(tmp_path):
    inputs, labels = tiny_rows()
    labels[4, 7] = VOCAB
    with pytest.raises(ValueError, match=r"all__labels\.npy: row 4 holds token 3, not below vocab_size 3"):
        write_tiny(tmp_path / "train", [(inputs[:3], labels[:3]), (inputs[3:], labels[3:])])


@pytest.mark.parametrize("rows, message", [(5, "hold 5 rows, puzzle_indices declares 6"),
                                           (7, "more than the 6 rows puzzle_indices declares")])
def test_chunks_that_disagree_with_the_index_are_refused(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        write_tiny(tmp_path / "train", [tiny_rows(rows)])


@pytest.mark.parametrize("index, message", [
    (SplitIndex(np.zeros(3), np.array([0, 2, 5, 6]), np.array([0, 2, 3])), "puzzle_identifiers: expected"),
    (SplitIndex(np.array([0, 0, 1]), np.array([0, 2, 5, 6]), np.array([0, 2, 3])), r"must be 0\.\.0"),
    (SplitIndex(np.zeros(3, int), np.array([1, 2, 5, 6]), np.array([0, 2, 3])), "start at 0"),
    (SplitIndex(np.zeros(3, int), np.array([0, 5, 2, 6]), np.array([0, 2, 3])), "never decrease"),
    (SplitIndex(np.zeros(3, int), np.array([0, 2, 6]), np.array([0, 2, 3])), "3 offsets for 3 puzzles"),
    (SplitIndex(np.zeros(3, int), np.array([0, 2, 5, 6]), np.array([0, 2])), "group_indices: ends at 2, expected 3"),
])
def test_an_inconsistent_index_is_refused_before_anything_is_written(tmp_path, index, message):
    with pytest.raises(ValueError, match=message):
        write_tiny(tmp_path / "train", [tiny_rows()], index)
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("chunk, message", [
    (tiny_rows()[0][:, :32], r"inputs chunk: expected \(n, 64\) uint8, got \(6, 32\) uint8"),
    (tiny_rows()[0].astype(np.int64), r"inputs chunk: expected \(n, 64\) uint8, got \(6, 64\) int64"),
    (tiny_rows()[0][:, :, None], r"got \(6, 64, 1\)"),
])
def test_a_chunk_of_the_wrong_shape_or_dtype_is_refused(tmp_path, chunk, message):
    with pytest.raises(ValueError, match=message):
        write_tiny(tmp_path / "train", [(chunk, tiny_rows()[1])])


def test_inputs_and_labels_of_different_lengths_are_refused(tmp_path):
    inputs, labels = tiny_rows()
    with pytest.raises(ValueError, match="6 input rows but 5 label rows"):
        write_tiny(tmp_path / "train", [(inputs, labels[:5])])


@pytest.mark.parametrize("shape, message", [({"vocab_size": 257}, "vocab_size must be 1..256"),
                                            ({"seq_len": 0}, "seq_len must be >= 1"),
                                            ({"num_puzzle_identifiers": 0}, "num_puzzle_identifiers must be >= 1")])
def test_an_impossible_shape_is_refused(tmp_path, shape, message):
    with pytest.raises(ValueError, match=message):
        write_tiny(tmp_path / "train", [tiny_rows()], **shape)


def test_identifiers_must_start_with_blank(tmp_path):
    with pytest.raises(ValueError, match="row 0 must be '<blank>'"):
        write_identifiers(tmp_path, ["task"])
    with pytest.raises(ValueError, match="got no rows"):
        write_identifiers(tmp_path, [])
    assert not (tmp_path / "identifiers.json").exists()
