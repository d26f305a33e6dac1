"""The on-disk dataset format: the original TRM layout, kept so datasets from either builder
are interchangeable (DESIGN §4).

    DIR/identifiers.json        list; row i is the embedding row of that variant, row 0 <blank>
    DIR/test_puzzles.json       {task id: task} of the test set (outputs when known)
    DIR/{train,test}/dataset.json
    DIR/{train,test}/all__{inputs,labels}.npy              (N, 900) uint8
    DIR/{train,test}/all__puzzle_identifiers.npy           (P,) int32: a variant's row
    DIR/{train,test}/all__{puzzle_indices,group_indices}.npy  (P+1,), (G+1,) int32 offsets
    DIR/build.json              how it was built (ours only; the original ignores it)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict

from trm_kaggle.augment import SEQ_LEN, VOCAB_SIZE
from trm_kaggle.config import DataShape
from trm_kaggle.errors import UserError

SPLITS = ("train", "test")
SET_NAME = "all"  # the original's only subset name inside a split
ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
BLANK_IDENTIFIER = "<blank>"


class DatasetMetadata(BaseModel):
    """`dataset.json` of one split; field order as the original writes it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pad_id: int = 0
    ignore_label_id: int | None = 0
    blank_identifier_id: int = 0
    vocab_size: int = VOCAB_SIZE
    seq_len: int = SEQ_LEN
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


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


@dataclass(frozen=True)
class SplitArrays:
    """One split of a dataset; inputs and labels memory-mapped read-only."""

    metadata: DatasetMetadata
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

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
    return SplitArrays(metadata=metadata, **arrays)


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
