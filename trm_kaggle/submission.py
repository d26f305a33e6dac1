"""The ARC Prize submission: its schema, validation, scoring, fallback and atomic write.

A submission is `{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}` with one entry per
test input in order, every task of the challenges file present and both attempts always
present; a grid is 1..30 x 1..30 integers 0..9 (DESIGN §4). Kaggle treats a malformed file as
a scoring error, not a zero, so everything here refuses one loudly: `validate_submission`
lists every problem, one line each, in the same words `arc.py` uses for grids, e.g.
`task 0934a4d8 entry 0 attempt_2: row 3 has 11 cells, row 0 has 10`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic_core import PydanticCustomError

from trm_kaggle.arc import Task, json_type, parse_grid, read_json
from trm_kaggle.errors import UserError

ATTEMPTS = ("attempt_1", "attempt_2")

# What a submission is checked against: the challenges' tasks, or task id -> test input count.
Expected = Sequence[Task] | Mapping[str, int]
# A validated submission: task id -> one (attempt_1, attempt_2) pair of grids per test input.
Parsed = dict[str, list[tuple[np.ndarray, np.ndarray]]]
Solutions = Mapping[str, Sequence[np.ndarray]]


class SubmissionError(UserError):
    """A malformed submission; `problems` holds every problem, one line each."""

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"malformed submission: {problems[0]}{more}")
        self.problems = problems


@dataclass(frozen=True)
class ScoreResult:
    """The ARC Prize metric: a test output counts when either attempt equals its solution."""

    correct: int
    total: int
    per_task: dict[str, list[bool]]   # task id -> one flag per test output, in order

    @property
    def score(self) -> float:
        return self.correct / self.total


def _parse_one(value: Any) -> tuple[np.ndarray | None, str | None]:
    """(grid, None) for a valid grid, (None, why not) otherwise, in arc.py's words."""
    try:
        return parse_grid(value), None
    except PydanticCustomError as exc:
        return None, exc.message()


def _expected_counts(expected: Expected) -> dict[str, int]:
    if isinstance(expected, Mapping):
        return dict(expected)
    return {task.id: len(task.test) for task in expected}


def _check_entry(where: str, entry: Any, problems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Both attempts of one entry, or None after appending what is wrong with it.
    Keys other than the two attempts are ignored, as Kaggle's scorer reads only those."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected an object with attempt_1 and attempt_2, got {json_type(entry)}")
        return None
    grids = []
    for attempt in ATTEMPTS:
        if attempt not in entry:
            problems.append(f"{where}: missing {attempt}")
            continue
        grid, problem = _parse_one(entry[attempt])
        if problem is not None:
            problems.append(f"{where} {attempt}: {problem}")
        grids.append(grid)
    return (grids[0], grids[1]) if len(grids) == 2 and all(g is not None for g in grids) else None


def _check_task(task_id: str, entries: Any, count: int | None, problems: list[str]) -> list | None:
    """A task's entries parsed; `count` None means any number of entries (at least one)."""
    if not isinstance(entries, list):
        problems.append(f"task {task_id}: expected an array of entries, got {json_type(entries)}")
        return None
    if count is not None and len(entries) != count:
        problems.append(f"task {task_id}: {len(entries)} entries for {count} test inputs")
    elif not entries:
        problems.append(f"task {task_id}: no entries")
    return [_check_entry(f"task {task_id} entry {i}", e, problems) for i, e in enumerate(entries)]


def check_submission(raw: Any, expected: Expected | None = None) -> tuple[Parsed, list[str]]:
    """The submission parsed and every problem with it (parsed is only usable without problems).
    Without `expected`, only the shape is checked: no task can be missing or extra."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return {}, [f"expected an object of task id -> entries, got {json_type(raw)}"]
    counts = None if expected is None else _expected_counts(expected)
    if counts is not None:
        problems += [f"task {t}: missing ({n} test inputs expected)" for t, n in counts.items() if t not in raw]
        problems += [f"task {t}: not in the challenges" for t in raw if t not in counts]
    parsed = {}
    for task_id, entries in raw.items():
        if counts is not None and task_id not in counts:
            continue
        parsed[task_id] = _check_task(task_id, entries, None if counts is None else counts[task_id], problems)
    return parsed, problems


def validate_submission(raw: Any, expected: Expected | None = None) -> list[str]:
    """Every problem of a submission (parsed JSON or built in memory), one line each; [] when
    it is valid. `expected` (tasks, or task id -> test input count) adds the completeness checks."""
    return check_submission(raw, expected)[1]


def _parsed_or_raise(raw: Any, expected: Expected | None) -> Parsed:
    parsed, problems = check_submission(raw, expected)
    if problems:
        raise SubmissionError(problems)
    return parsed


def score_submission(submission: Any, solutions: Solutions) -> ScoreResult:
    """Score against `task id -> solution grids`; a malformed submission raises SubmissionError."""
    if not any(solutions.values()):
        raise ValueError("the solutions hold no test output to score against")
    parsed = _parsed_or_raise(submission, {t: len(grids) for t, grids in solutions.items()})
    per_task = {
        task_id: [any(np.array_equal(a, np.asarray(solution)) for a in parsed[task_id][i])
                  for i, solution in enumerate(grids)]
        for task_id, grids in solutions.items()}
    correct = sum(sum(flags) for flags in per_task.values())
    total = sum(len(flags) for flags in per_task.values())
    return ScoreResult(correct=correct, total=total, per_task=per_task)


def parse_solutions(raw: Any, path: Path) -> dict[str, list[np.ndarray]]:
    """A Kaggle `*_solutions.json` (task id -> list of output grids), validated."""
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object of task id -> list of grids, got {json_type(raw)}")
    if not raw:
        raise UserError(f"{path}: no tasks")
    solutions = {}
    for task_id, grids in raw.items():
        if not isinstance(grids, list) or not grids:
            raise UserError(f"{path}: task {task_id}: expected a non-empty array of grids, got "
                            + ("an empty array" if isinstance(grids, list) else json_type(grids)))
        solutions[task_id] = []
        for i, value in enumerate(grids):
            grid, problem = _parse_one(value)
            if problem is not None:
                raise UserError(f"{path}: task {task_id} test[{i}].output: {problem}")
            solutions[task_id].append(grid)
    return solutions


def load_solutions(path: Path) -> dict[str, list[np.ndarray]]:
    return parse_solutions(read_json(path), path)


def fallback_grid(test_input: np.ndarray) -> np.ndarray:
    """The answer for a test input that got no candidate: a copy of the input itself.

    Any valid grid keeps the file well-formed; the input is the one that sometimes scores
    (tasks that change a few cells in place, or whose output is the input), and it is
    deterministic, so two runs of the same model write the same file."""
    return np.array(test_input, dtype=np.uint8, copy=True)


def to_json(parsed: Parsed) -> dict[str, list[dict[str, list]]]:
    """A validated submission in its JSON form (grids as lists, only the two attempts)."""
    return {task_id: [dict(zip(ATTEMPTS, (a.tolist() for a in pair))) for pair in pairs]
            for task_id, pairs in parsed.items()}


def submission_text(submission: Any, expected: Expected | None = None) -> str:
    """The validated submission as the JSON text written to submission.json; SubmissionError
    when it is malformed."""
    return json.dumps(to_json(_parsed_or_raise(submission, expected)), separators=(",", ":"))


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_submission(path: Path, submission: Any, expected: Expected | None = None) -> None:
    """Validate, then write atomically: a temporary file in the same directory, fsync'd, then
    renamed over `path`, so a crash or a full disk leaves the old file or none, never half a one.
    Raises SubmissionError (and writes nothing) when the submission is malformed."""
    text = submission_text(submission, expected)
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from a teammate
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
