"""The on-disk dataset format: the original TRM layout, kept so datasets from either builder
are interchangeable (DESIGN §4).

    DIR/identifiers.json        list; row i is the embedding row of that variant, row 0 <blank>
    DIR/test_puzzles.json       {task id: task} of the test set (outputs when known)
    DIR/{train,test}/dataset.json
    DIR/{train,test}/all__{inputs,labels}.npy              (N, seq_len) uint8 (ARC: 900)
    DIR/{train,test}/all__puzzle_identifiers.npy           (P,) int32: a variant's row
    DIR/{train,test}/all__{puzzle_indices,group_indices}.npy  (P+1,), (G+1,) int32 offsets
    DIR/build.json              how it was built (ours only; the original ignores it)

Nothing here knows about ARC: `write_identifiers` and `write_split` write any dataset of this
layout, given its sequence length and vocabulary; `dataset/build.py` is the ARC builder.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from trm_kaggle.config import DataShape
from trm_kaggle.errors import UserError

SPLITS = ("train", "test")
SET_NAME = "all"  # the original's only subset name inside a split
INDEX_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")
ARRAY_FIELDS = ("inputs", "labels") + INDEX_FIELDS
BLANK_IDENTIFIER = "<blank>"
INT32_MAX = np.iinfo(np.int32).max


class DatasetMetadata(BaseModel):
    """`dataset.json` of one split; field order as the original writes it. The shape
    (`vocab_size`, `seq_len`) has no default: the original always writes it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pad_id: int = 0
    ignore_label_id: int | None = 0
    blank_identifier_id: int = 0
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str] = [SET_NAME]


def array_path(split_dir: Path, field: str) -> Path:
    return split_dir / f"{SET_NAME}__{field}.npy"


class NpyStreamWriter:
    """Writes a 2-D `.npy` file of known shape chunk by chunk: header first, then rows.

    Plain sequential writes keep the output out of this process's resident memory (a
    memory-mapped output would count every touched page towards peak RSS).
    """

    def __init__(self, path: Path, shape: tuple[int, int], dtype=np.uint8):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.rows = 0
        self._file: BinaryIO = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.shape[1:] or block.dtype != self.dtype:
            raise ValueError(f"{self.path}: block {block.shape} {block.dtype} does not fit {self.shape} {self.dtype}")
        if self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: more than the {self.shape[0]} rows declared")
        self._file.write(np.ascontiguousarray(block).data)
        self.rows += len(block)

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self.rows} rows of the {self.shape[0]} declared")

    def __enter__(self) -> "NpyStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: release the file, the row count no longer matters
            self._file.close()


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


def write_identifiers(data_dir: Path, names: Sequence[str]) -> int:
    """Write `DIR/identifiers.json`: row i names embedding row i; row 0 must be `<blank>`.
    Returns the number of rows (a split's `num_puzzle_identifiers`). Raises ValueError."""
    first = repr(names[0]) if len(names) else "no rows"
    if first != repr(BLANK_IDENTIFIER):
        raise ValueError(f"identifiers: row 0 must be {BLANK_IDENTIFIER!r}, got {first}")
    write_json(Path(data_dir) / "identifiers.json", list(names))
    return len(names)


# ---------------------------------------------------------------------------- writing a split

@dataclass(frozen=True)
class SplitIndex:
    """Which rows make each puzzle and which puzzles make each group, in one split.

    puzzle_identifiers  (P,)   identifier row of each puzzle, 0 <= id < num_puzzle_identifiers
    puzzle_indices      (P+1,) row offsets: puzzle p is rows [puzzle_indices[p], [p+1])
    group_indices       (G+1,) puzzle offsets: group g is puzzles [group_indices[g], [g+1])
    """

    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.puzzle_indices[-1])

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_identifiers)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


def checked_offsets(name: str, values, end: int | None = None) -> np.ndarray:
    """`values` as (K+1,) int32 offsets: from 0, non-decreasing, ending at `end` if given."""
    offsets = np.asarray(values)
    if offsets.ndim != 1 or len(offsets) == 0 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"{name}: expected a non-empty 1-D integer array, got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{name}: offsets must start at 0 and never decrease")
    if end is not None and offsets[-1] != end:
        raise ValueError(f"{name}: ends at {offsets[-1]}, expected {end}")
    if offsets[-1] > INT32_MAX:
        raise ValueError(f"{name}: {offsets[-1]} does not fit int32")
    return offsets.astype(np.int32, copy=False)


def checked_index(index: SplitIndex, num_puzzle_identifiers: int) -> SplitIndex:
    """`index` with int32 arrays; ValueError unless it is consistent (see SplitIndex)."""
    ids = np.asarray(index.puzzle_identifiers)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"puzzle_identifiers: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_puzzle_identifiers):
        raise ValueError(f"puzzle_identifiers: must be 0..{num_puzzle_identifiers - 1} "
                         f"(num_puzzle_identifiers), got {ids.min()}..{ids.max()}")
    puzzle_indices = checked_offsets("puzzle_indices", index.puzzle_indices)
    if len(puzzle_indices) != len(ids) + 1:
        raise ValueError(f"puzzle_indices: {len(puzzle_indices)} offsets for {len(ids)} puzzles, "
                         f"expected {len(ids) + 1}")
    return SplitIndex(puzzle_identifiers=ids.astype(np.int32, copy=False), puzzle_indices=puzzle_indices,
                      group_indices=checked_offsets("group_indices", index.group_indices, end=len(ids)))


def check_shape(seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> None:
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if not 1 <= vocab_size <= 256:
        raise ValueError(f"vocab_size must be 1..256 (tokens are stored as uint8), got {vocab_size}")
    if num_puzzle_identifiers < 1:
        raise ValueError(f"num_puzzle_identifiers must be >= 1 (row 0 is {BLANK_IDENTIFIER}), "
                         f"got {num_puzzle_identifiers}")


def checked_chunk(chunk, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """`chunk` as (inputs, labels), both (n, seq_len) uint8 with the same n; no copy."""
    inputs, labels = (np.asarray(a) for a in chunk)
    for name, array in (("inputs", inputs), ("labels", labels)):
        if array.ndim != 2 or array.shape[1] != seq_len or array.dtype != np.uint8:
            raise ValueError(f"{name} chunk: expected (n, {seq_len}) uint8, got {array.shape} {array.dtype}")
    if len(inputs) != len(labels):
        raise ValueError(f"chunk: {len(inputs)} input rows but {len(labels)} label rows")
    return inputs, labels


def write_chunk(writers: Sequence[NpyStreamWriter], arrays: Sequence[np.ndarray], vocab_size: int) -> None:
    for writer, array in zip(writers, arrays):
        if array.size and array.max() >= vocab_size:
            row = writer.rows + int(np.argmax((array >= vocab_size).any(axis=1)))
            raise ValueError(f"{writer.path}: row {row} holds token {array[row - writer.rows].max()}, "
                             f"not below vocab_size {vocab_size}")
        writer.write(array)


def write_rows(split_dir: Path, chunks: Iterable, num_rows: int, seq_len: int, vocab_size: int) -> None:
    """Stream `chunks` to all__inputs.npy and all__labels.npy of (num_rows, seq_len) uint8.

    A worker thread checks and writes each chunk while the caller's iterator makes the next
    (the ARC builder encodes it in numba, without the GIL): encoding and writing overlap, and
    no more than two chunks are held at once.
    """
    with ExitStack() as stack:
        writers = [stack.enter_context(NpyStreamWriter(array_path(split_dir, f), (num_rows, seq_len)))
                   for f in ("inputs", "labels")]
        io = stack.enter_context(ThreadPoolExecutor(max_workers=1))  # exits first: waits for the last write
        pending, rows = None, 0
        for chunk in chunks:
            arrays = checked_chunk(chunk, seq_len)
            rows += len(arrays[0])
            if rows > num_rows:
                raise ValueError(f"{split_dir}: the chunks hold more than the {num_rows} rows puzzle_indices declares")
            if pending is not None:
                pending.result()
            pending = io.submit(write_chunk, writers, arrays, vocab_size)
        if pending is not None:
            pending.result()
        if rows != num_rows:
            raise ValueError(f"{split_dir}: the chunks hold {rows} rows, puzzle_indices declares {num_rows}")


def write_split(split_dir: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray]], index: SplitIndex, *,
                seq_len: int, vocab_size: int, num_puzzle_identifiers: int, pad_id: int = 0,
                ignore_label_id: int | None = 0, blank_identifier_id: int = 0) -> DatasetMetadata:
    """Write one split of the original layout into `split_dir` (made if missing).

    chunks: (inputs, labels) pairs of (n, seq_len) uint8 arrays, in row order; consumed
        lazily, one ahead of the write (see write_rows), so a generator that encodes each
        chunk overlaps the writing of the one before.
    index: the split's puzzles and groups (SplitIndex); stored as int32. Its
        puzzle_indices[-1] is the row count the chunks must add up to.
    seq_len, vocab_size, num_puzzle_identifiers: the shape, required (no ARC defaults);
        every token must be < vocab_size and every puzzle identifier < num_puzzle_identifiers.
    Returns the metadata written to dataset.json. Raises ValueError, naming the array or
    file, on an inconsistent index, a chunk of the wrong shape or dtype, a token out of the
    vocabulary, or chunks that hold more or fewer rows than the index declares.
    """
    check_shape(seq_len, vocab_size, num_puzzle_identifiers)
    index = checked_index(index, num_puzzle_identifiers)
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in INDEX_FIELDS:
        np.save(array_path(split_dir, name), getattr(index, name))
    write_rows(split_dir, chunks, index.num_rows, seq_len, vocab_size)
    metadata = DatasetMetadata(
        pad_id=pad_id, ignore_label_id=ignore_label_id, blank_identifier_id=blank_identifier_id,
        vocab_size=vocab_size, seq_len=seq_len, num_puzzle_identifiers=num_puzzle_identifiers,
        total_groups=index.num_groups, total_puzzles=index.num_puzzles,
        mean_puzzle_examples=index.num_rows / index.num_puzzles if index.num_puzzles else 0.0)
    write_json(split_dir / "dataset.json", metadata.model_dump())
    return metadata


@dataclass(frozen=True)
class SplitArrays:
    """One split of a dataset; inputs and labels memory-mapped read-only."""

    metadata: DatasetMetadata
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    directory: Path | None = None  # the split's directory, for error messages

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    def check_tokens(self, examples: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> None:
        """UserError naming the file and example when a gathered row holds a token outside
        0..vocab_size−1 (the embedding lookup would fail with an index error, on a GPU a
        device-side assert). Cheap: a batch's min and max."""
        vocab = self.metadata.vocab_size
        for field, rows in (("inputs", inputs), ("labels", labels)):
            bad = (rows < 0) | (rows >= vocab)
            if rows.size and bad.any():
                row, col = np.argwhere(bad)[0]
                where = array_path(self.directory, field) if self.directory else f"{field} array"
                raise UserError(f"{where}: example {int(examples[row])}, position {int(col)}: token "
                                f"{int(rows[row, col])} is outside 0..{vocab - 1} (dataset.json vocab_size {vocab})")

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


def load_split(data_dir: Path, split: str) -> SplitArrays:
    """Open one split of a dataset in the original layout (ours or the original builder's)."""
    split_dir = Path(data_dir) / split
    meta_path = split_dir / "dataset.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: no such file (is {data_dir} a dataset made by trm-build-data?)")
    metadata = DatasetMetadata.model_validate_json(meta_path.read_bytes())
    arrays = {}
    for field in ARRAY_FIELDS:
        path = array_path(split_dir, field)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        arrays[field] = np.load(path, mmap_mode="r" if field in ("inputs", "labels") else None)
    ids, rows = arrays["puzzle_identifiers"], metadata.num_puzzle_identifiers
    outside = ids[(ids < 0) | (ids >= rows)]
    if outside.size:
        raise UserError(f"{array_path(split_dir, 'puzzle_identifiers')}: identifier {int(outside[0])} is outside "
                        f"0..{rows - 1} (dataset.json num_puzzle_identifiers {rows})")
    return SplitArrays(metadata=metadata, **arrays, directory=split_dir)


def load_identifiers(data_dir: Path) -> list[str]:
    path = Path(data_dir) / "identifiers.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return json.loads(path.read_text())


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())



def dataset_shape(data_dir: Path) -> DataShape:
    """The model shape a dataset asks for: rows from identifiers.json, vocabulary and sequence
    length from train/dataset.json (test/dataset.json must agree). UserError otherwise."""
    data_dir = Path(data_dir)
    train, test = (load_split(data_dir, split).metadata for split in SPLITS)
    for name in ("vocab_size", "seq_len"):
        if getattr(train, name) != getattr(test, name):
            raise UserError(f"{data_dir}: train/dataset.json has {name} {getattr(train, name)}, "
                            f"test/dataset.json {getattr(test, name)}")
    return DataShape(num_puzzle_identifiers=len(load_identifiers(data_dir)), vocab_size=train.vocab_size,
                     seq_len=train.seq_len)
