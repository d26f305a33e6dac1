"""From predicted token sequences to ranked answers: crop, undo the augmentation, vote, pass@K.

The original evaluator's logic (TRM_NOTES, "Evaluator") on numpy arrays, without a model,
and without its faults: votes live in one `Votes` per evaluation (the original kept adding
to them across evaluations of a run), an empty crop is dropped instead of becoming a 0x0
"grid", and every test input gets an answer in the submission, a fallback when nothing was
voted for.

    grids = decode_predictions(tokens, names)              # None where the crop is empty
    votes = Votes()
    votes.add_many(task_ids, test_indices, grids, q_halt_logits)
    ranked = votes.ranked()                                # (task, test index) -> grids, best first
    pass_at_k(ranked, solutions); build_submission(tasks, ranked)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from trm_kaggle.arc import Task
from trm_kaggle.augment import (COLOUR_OFFSET, VOCAB_SIZE, canvas_side, crop_many, parse_variant_name,
                                undo_variant)
from trm_kaggle.errors import UserError
from trm_kaggle.submission import Solutions, fallback_grid

DEFAULT_KS = (1, 2, 5, 10, 100, 1000)
# (task id, test index) -> candidate grids, best first.
Ranked = Mapping[tuple[str, int], Sequence[np.ndarray]]


def decode_predictions(tokens: np.ndarray, variant_names: Sequence[str]) -> list[np.ndarray | None]:
    """Each prediction (N x side² tokens, ARC's 900 or a smaller dataset's canvas) as a grid in
    its original task's frame: cropped from the top-left corner as the original evaluator
    crops, then the variant undone.
    None where the crop is empty: no ARC grid is 0x0, so it must never become an answer."""
    tokens = np.asarray(tokens)
    try:
        side = canvas_side(tokens.shape[1]) if tokens.ndim == 2 else 0
    except ValueError as exc:
        raise ValueError(f"expected predictions of shape (N, side²), got {tokens.shape}: {exc}") from None
    if not side:
        raise ValueError(f"expected predictions of shape (N, side²), got {tokens.shape}")
    if len(variant_names) != len(tokens):
        raise ValueError(f"{len(tokens)} predictions but {len(variant_names)} variant names")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB_SIZE):
        raise ValueError(f"prediction tokens must be 0..{VOCAB_SIZE - 1}")
    tokens = np.ascontiguousarray(tokens, dtype=np.uint8)
    heights = np.zeros(len(tokens), np.int64)
    widths = np.zeros(len(tokens), np.int64)
    crop_many(tokens, heights, widths)
    grids: list[np.ndarray | None] = []
    for canvas, h, w, name in zip(tokens.reshape(-1, side, side), heights, widths, variant_names):
        if h == 0 or w == 0:
            grids.append(None)
            continue
        _, t, cmap = _parse_variant(name)
        grids.append(undo_variant(canvas[:h, :w] - COLOUR_OFFSET, t, cmap))
    return grids


def _parse_variant(name: str) -> tuple[str, int, np.ndarray]:
    """parse_variant_name, with a bad name (from a user's identifiers file) as a UserError."""
    try:
        return parse_variant_name(name)
    except ValueError as exc:
        raise UserError(f"variant name {name!r} cannot be parsed: {exc}") from None


def sigmoid(x: float) -> float:
    """The halting head's confidence; the tanh form cannot overflow for large |x|."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))


@dataclass
class Candidate:
    """One distinct grid predicted for a test input, with its votes."""

    grid: np.ndarray
    first_seen: int           # order of the first vote over the whole Votes: the last tie-break
    count: int = 0
    confidence_sum: float = 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.count

    def rank_key(self) -> tuple[int, float, int]:
        """More votes first, then higher mean sigmoid(q_halt), then the earlier first vote."""
        return -self.count, -self.mean_confidence, self.first_seen


class Votes:
    """Votes of one evaluation, per (task id, test input index). Start a fresh one for each
    evaluation: carrying votes over would mix the answers of different checkpoints."""

    def __init__(self) -> None:
        self._candidates: dict[tuple[str, int], dict[tuple, Candidate]] = {}
        self._votes = 0

    def add(self, task_id: str, test_index: int, grid: np.ndarray | None, q_halt_logit: float) -> None:
        """One prediction's vote; a None grid (an empty crop) is no vote."""
        if grid is None:
            return
        if math.isnan(q_halt_logit):
            raise ValueError(f"task {task_id} test[{test_index}]: q_halt logit is NaN")
        grid = np.ascontiguousarray(grid, dtype=np.uint8)
        by_grid = self._candidates.setdefault((task_id, int(test_index)), {})
        key = (grid.shape, grid.tobytes())
        candidate = by_grid.setdefault(key, Candidate(grid=grid, first_seen=self._votes))
        candidate.count += 1
        candidate.confidence_sum += sigmoid(float(q_halt_logit))
        self._votes += 1

    def add_many(self, task_ids: Iterable[str], test_indices: Iterable[int],
                 grids: Iterable[np.ndarray | None], q_halt_logits: Iterable[float]) -> None:
        for task_id, test_index, grid, q in zip(task_ids, test_indices, grids, q_halt_logits, strict=True):
            self.add(task_id, test_index, grid, q)

    def candidates(self, task_id: str, test_index: int) -> list[Candidate]:
        """The distinct grids voted for one test input, best first."""
        return sorted(self._candidates.get((task_id, test_index), {}).values(), key=Candidate.rank_key)

    def ranked(self) -> dict[tuple[str, int], list[np.ndarray]]:
        """(task id, test index) -> candidate grids, best first, for every test input voted on."""
        return {key: [c.grid for c in self.candidates(*key)] for key in self._candidates}


@dataclass(frozen=True)
class PassAtK:
    """pass@K two ways: `per_task` is the original's (per task, the fraction of its test inputs
    whose solution is in the top K, averaged over tasks); `per_output` is Kaggle's (test
    outputs solved in the top K over all test outputs). They differ when tasks have different
    numbers of test inputs."""

    per_task: dict[int, float]
    per_output: dict[int, float]


def _check_keys(ranked: Ranked, counts: Mapping[str, int]) -> None:
    """Votes for a test input the tasks do not have mean identifiers were mismatched upstream:
    a bug to report, not to drop silently."""
    unknown = [key for key in ranked if not (key[0] in counts and 0 <= key[1] < counts[key[0]])]
    if unknown:
        raise ValueError(f"candidates for {unknown[0]}, not a test input of the tasks given "
                         f"({len(unknown)} such keys)")


def solution_rank(candidates: Sequence[np.ndarray], solution: np.ndarray) -> int | None:
    """Position of the solution among the candidates (0 = best), None when absent."""
    return next((i for i, c in enumerate(candidates) if np.array_equal(c, solution)), None)


def pass_at_k(ranked: Ranked, solutions: Solutions, ks: Sequence[int] = DEFAULT_KS) -> PassAtK:
    """pass@K for each K of the ranked candidates against `task id -> solution grids`."""
    if not any(solutions.values()):
        raise ValueError("the solutions hold no test output to score against")
    _check_keys(ranked, {t: len(grids) for t, grids in solutions.items()})
    ranks = {task_id: [solution_rank(ranked.get((task_id, i), ()), np.asarray(s)) for i, s in enumerate(grids)]
             for task_id, grids in solutions.items() if grids}
    total = sum(len(r) for r in ranks.values())
    per_task, per_output = {}, {}
    for k in ks:
        hits = {task_id: sum(r is not None and r < k for r in rs) for task_id, rs in ranks.items()}
        per_task[k] = sum(hits[t] / len(ranks[t]) for t in ranks) / len(ranks)
        per_output[k] = sum(hits.values()) / total
    return PassAtK(per_task=per_task, per_output=per_output)


def build_submission(tasks: Sequence[Task], ranked: Ranked) -> dict[str, list[dict[str, list]]]:
    """A complete submission (JSON-ready lists): every task and test input in order; the top
    two candidates as the attempts, the first repeated when there is only one, the fallback
    when there is none (a missing entry would make the whole file a scoring error)."""
    _check_keys(ranked, {task.id: len(task.test) for task in tasks})
    submission = {}
    for task in tasks:
        entries = []
        for i, pair in enumerate(task.test):
            candidates = list(ranked.get((task.id, i), ())) or [fallback_grid(pair.input)]
            first, second = candidates[0], candidates[min(1, len(candidates) - 1)]
            entries.append({"attempt_1": np.asarray(first).tolist(), "attempt_2": np.asarray(second).tolist()})
        submission[task.id] = entries
    return submission
