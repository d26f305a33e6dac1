"""Evaluate a checkpoint on a dataset split, by the dataset's kind: ARC (predict, undo
augmentations, vote, pass@K) or any other puzzle (exact match, per ACT step).

The dataset and the checkpoint may number their variants differently (a checkpoint of ours
carries its own identifiers.json): predictions use the checkpoint's embedding row of each
variant *by name*, and a variant the checkpoint has no row for is an error, since its
prediction would come from an untrained embedding (the public attempt that scored 0).
"""

from __future__ import annotations

import json
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_kaggle.arc import Task, parse_task, read_json
from trm_kaggle.augment import parse_variant_name
from trm_kaggle.checkpoint import Checkpoint, averaged_state, name_rows
from trm_kaggle.dataset.format import SplitArrays, dataset_shape, load_identifiers, load_split
from trm_kaggle.errors import UserError
from trm_kaggle.inference import Predictions, predict
from trm_kaggle.submission import submission_text
from trm_kaggle.vote import PassAtK, Votes, build_submission, decode_predictions, pass_at_k


def identifier_map(dataset_ids: list[str], checkpoint_ids: list[str], where: Path,
                   used: np.ndarray | None = None) -> np.ndarray | None:
    """dataset row -> checkpoint row, or None when they are the same numbering. Only the
    dataset rows in `used` (all when None) must have a row in the checkpoint: the others are
    never predicted (--num-aug 0, --tasks) and map to the blank row 0. UserError otherwise."""
    if checkpoint_ids == dataset_ids:
        return None
    rows = {name: i for i, name in enumerate(checkpoint_ids)}
    needed = set(range(1, len(dataset_ids)) if used is None else np.unique(used).tolist()) - {0}
    missing = [dataset_ids[i] for i in sorted(needed) if dataset_ids[i] not in rows]
    if missing:
        raise UserError(f"{where}: {len(missing)} of the {len(needed)} dataset variants evaluated have no embedding "
                        f"row in the checkpoint (first: {missing[0]}); was it trained on this dataset?")
    return np.array([0] + [rows.get(name, 0) for name in dataset_ids[1:]], dtype=np.int64)


def select_examples(split: SplitArrays, num_aug: int | None, limit: int | None,
                    task_ids: set[str] | None = None, names: list[str] | None = None) -> np.ndarray:
    """Example indices (int64) of the original plus the first `num_aug` variants of each task,
    of the tasks in `task_ids` only (when given: `names` are the dataset's identifiers), then
    the first `limit` of those."""
    puzzles = np.arange(len(split.puzzle_identifiers))
    if num_aug is not None:
        group_start = np.repeat(split.group_indices[:-1], np.diff(split.group_indices))
        puzzles = puzzles[puzzles - group_start <= num_aug]
    if task_ids is not None:
        of_task = np.array([parse_variant_name(names[i])[0] in task_ids for i in split.puzzle_identifiers[puzzles]],
                           dtype=bool)
        puzzles = puzzles[of_task]
    starts, ends = split.puzzle_indices[puzzles], split.puzzle_indices[puzzles + 1]
    examples = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)] or [np.zeros(0, np.int64)])
    return examples[:limit] if limit is not None else examples


def example_variants(split: SplitArrays, examples: np.ndarray) -> np.ndarray:
    """The dataset's identifier row of each example (int32), as predict feeds it."""
    return split.puzzle_identifiers[np.searchsorted(split.puzzle_indices, examples, side="right") - 1]


def parse_task_ids(given: list[str], data_dir: Path) -> set[str]:
    """--tasks ID,...: the ids, each a task of data_dir's test_puzzles.json (ARC datasets only).
    UserError naming the first unknown id, or for a dataset without task ids."""
    ids = set(given)
    path = Path(data_dir) / "test_puzzles.json"
    if not ids:
        raise UserError("--tasks: name at least one task id")
    if dataset_kind(data_dir) != "arc":
        raise UserError(f"--tasks: {data_dir} is not an ARC dataset (no test_puzzles.json): its puzzles have no ids")
    known = {t.id for t in load_tasks(data_dir)}
    unknown = sorted(ids - known)
    if unknown:
        raise UserError(f"--tasks: {path}: no task {unknown[0]}" + (f" (and {len(unknown) - 1} more)"
                                                                    if len(unknown) > 1 else ""))
    return ids


def load_tasks(data_dir: Path) -> list[Task]:
    path = Path(data_dir) / "test_puzzles.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected an object of task id -> task")
    return [parse_task(task_id, task, path) for task_id, task in raw.items()]


def add_votes(votes: Votes, split: SplitArrays, names: list[str], predictions: Predictions) -> None:
    """Each prediction of a split, decoded into its task's frame, as a vote for its test input."""
    puzzle = np.searchsorted(split.puzzle_indices, predictions.example_index, side="right") - 1
    variant_names = [names[i] for i in split.puzzle_identifiers[puzzle]]
    test_index = predictions.example_index - split.puzzle_indices[puzzle]
    grids = decode_predictions(predictions.tokens, variant_names)
    votes.add_many([parse_variant_name(n)[0] for n in variant_names], test_index.tolist(), grids,
                   predictions.q_halt_logits.tolist())


def vote(split: SplitArrays, names: list[str], predictions: Predictions) -> dict:
    """Ranked candidates per (task id, test index) from a split's predictions."""
    votes = Votes()
    add_votes(votes, split, names, predictions)
    return votes.ranked()


# ---------------------------------------------------------------------------- scores by kind

@dataclass
class ExactMatch:
    """Exact-match scores of a split (any puzzle: Sudoku, N-Queens, ARC rows): per ACT step,
    the share of examples whose every labelled token is right, and the mean share of
    labelled tokens right. The last step is what eval mode predicts (every example runs
    all `halt_max_steps` steps, as the original's evaluation)."""

    examples: int
    exact_accuracy: list[float]  # per ACT step, 1..halt_max_steps
    token_accuracy: list[float]

    @classmethod
    def of(cls, predictions: Predictions) -> "ExactMatch":
        exact, tokens = predictions.step_exact, predictions.step_token_accuracy
        if exact is None or tokens is None:
            raise ValueError("ExactMatch needs predictions made with score_steps=True")
        empty = exact.shape[1] == 0
        return cls(exact.shape[1], [0.0 if empty else float(v) for v in exact.mean(1)],
                   [0.0 if empty else float(v) for v in tokens.mean(1)])

    def metrics(self) -> dict[str, float]:
        """The last step's, named apart from training's exact_accuracy (over halted sequences)."""
        return {"eval_exact_accuracy": self.exact_accuracy[-1], "eval_token_accuracy": self.token_accuracy[-1]}

    def lines(self) -> list[str]:
        per_step = "  ".join(f"{i}:{v:.4f}" for i, v in enumerate(self.exact_accuracy, start=1))
        return [f"exact accuracy {self.exact_accuracy[-1]:.4f}, token accuracy {self.token_accuracy[-1]:.4f} "
                f"({self.examples} examples)", f"exact accuracy by ACT step: {per_step}"]

    def files(self, about: dict) -> dict[str, bytes]:
        """exact_match.json: `about` (step, examples, ...) and the scores."""
        return {"exact_match.json": json.dumps(about | dataclasses.asdict(self), indent=2).encode()}


@dataclass
class ARCVote:
    """ARC's scores: every prediction decoded into its task's frame, voted over the
    augmentations, pass@K against the known test outputs (None without them)."""

    tasks: list[Task]
    ranked: dict
    pass_at: PassAtK | None

    def metrics(self) -> dict[str, float]:
        if self.pass_at is None:
            return {}
        return ({f"pass@{k}": v for k, v in self.pass_at.per_task.items()}
                | {f"kaggle_pass@{k}": v for k, v in self.pass_at.per_output.items()})

    def lines(self) -> list[str]:
        """What was voted on, which test inputs got fallback answers, and pass@K up to the most
        candidates any test input has (a larger K could only repeat that value)."""
        inputs = [(t.id, i) for t in self.tasks for i in range(len(t.test))]
        fallbacks = [f"{t}[{i}]" for t, i in inputs if not self.ranked.get((t, i))]
        lines = [f"{len(inputs) - len(fallbacks)} of {len(inputs)} test inputs voted on, {len(self.tasks)} tasks"]
        if fallbacks:
            lines.append(f"{len(fallbacks)} test input(s) without a decoded prediction get fallback answers: "
                         + ", ".join(fallbacks[:5]) + (" ..." if len(fallbacks) > 5 else ""))
        if self.pass_at is not None:
            most = max((len(c) for c in self.ranked.values()), default=0)
            shown = [k for k in self.pass_at.per_task if k <= max(most, 1)]
            for label, values in (("per task (original)", self.pass_at.per_task),
                                  ("per output (Kaggle)", self.pass_at.per_output)):
                lines.append(f"pass@K {label}: " + "  ".join(f"@{k} {values[k]:.4f}" for k in shown))
            if len(shown) < len(self.pass_at.per_task):
                lines.append(f"(no pass@{list(self.pass_at.per_task)[len(shown)]} and above: no test input has more "
                             f"than {most} distinct candidates)")
        return lines

    def files(self, about: dict) -> dict[str, bytes]:
        """The complete, valid submission the votes imply, and `about` (step, examples, ...)
        with its pass@K (seed 002: an evaluation's predictions can be inspected or scored
        later without re-running)."""
        p = self.pass_at
        scores = about | {"per_task": p.per_task if p else None, "per_output": p.per_output if p else None}
        return {"submission.json": submission_text(build_submission(self.tasks, self.ranked), self.tasks).encode(),
                "pass_at_k.json": json.dumps(scores, indent=2).encode()}


Scores = ExactMatch | ARCVote


def dataset_kind(data_dir: Path) -> str:
    """'arc' for a dataset with test_puzzles.json (the ARC builders': grids to decode, vote on
    and score by pass@K), 'exact_match' for any other (the original's Sudoku or Maze
    builders, N-Queens): a prediction is right when every labelled token is."""
    return "arc" if (Path(data_dir) / "test_puzzles.json").is_file() else "exact_match"


def score(kind: str, data_dir: Path, split: SplitArrays, split_name: str, names: list[str],
          predictions: Predictions, reached_only: bool = False, task_ids: set[str] | None = None) -> Scores:
    """The scores of `predictions` by the dataset's kind (see `dataset_kind`); an ARC train
    split is scored by exact match, as there is nothing to vote on. `reached_only` (--limit):
    pass@K over the tasks some evaluated example belongs to, not over every task; `task_ids`
    (--tasks): the tasks voted on, scored and written (all when None)."""
    if scores_step_by_step(kind, split_name):
        return ExactMatch.of(predictions)
    tasks = [t for t in load_tasks(data_dir) if task_ids is None or t.id in task_ids]
    ranked = vote(split, names, predictions)
    reached = {task_id for task_id, _ in ranked}
    solutions = {t.id: [p.output for p in t.test] for t in tasks
                 if t.has_solutions and (t.id in reached or not reached_only)}
    return ARCVote(tasks, ranked, pass_at_k(ranked, solutions) if solutions and ranked else None)


def scores_step_by_step(kind: str, split_name: str) -> bool:
    """Whether `score` needs per-step exact match (predict(score_steps=True))."""
    return kind == "exact_match" or split_name != "test"


@dataclass
class Evaluation:
    predictions: Predictions
    scores: Scores
    ema: bool  # predicted with the EMA averages (else the live weights)
    notes: list[str] = dataclasses.field(default_factory=list)  # what --num-aug / --limit left out


def evaluate(checkpoint: Checkpoint, data_dir: Path, split_name: str = "test", num_aug: int | None = None,
             limit: int | None = None, batch_size: int = 64, keep_steps: bool = False,
             progress: bool = True, dtype: str | None = None, identifiers: Path | None = None,
             rows_by_position: bool = False, live_weights: bool = False,
             task_ids: set[str] | None = None) -> Evaluation:
    """The scores of `checkpoint` on a split of `data_dir`, by the dataset's kind (pass@K for
    ARC, exact match per ACT step otherwise). Rows are matched to the dataset's variants by
    name; a checkpoint without row names needs `identifiers` (the identifiers.json it was
    trained with) or `rows_by_position` (UserError otherwise, see checkpoint.name_rows).
    Predicts with the EMA averages when the checkpoint has them (what trm-pretrain's own
    evaluations and trm-package use), unless `live_weights`. `task_ids` (see parse_task_ids)
    evaluates those ARC tasks only. Only the variants evaluated need an embedding row.
    `checkpoint` itself is left as it was. UserError when its data shape is not the dataset's."""
    checkpoint = dataclasses.replace(checkpoint)  # name_rows names the copy's rows
    ema = False
    if not live_weights:
        checkpoint.state_dict, ema = averaged_state(checkpoint)
    split = load_split(data_dir, split_name)
    names = load_identifiers(data_dir)
    ids_file = Path(data_dir) / "identifiers.json"
    mismatch = dataset_shape(data_dir).mismatch(checkpoint.config)
    if mismatch:
        raise UserError(f"{checkpoint.source}: {mismatch} ({data_dir}): not a model for this dataset")
    name_rows(checkpoint, identifiers, names if rows_by_position else None, against=str(ids_file))
    model = checkpoint.build_model(dtype)
    examples = select_examples(split, num_aug, limit, task_ids, names)
    remap = identifier_map(names, checkpoint.identifiers, ids_file, example_variants(split, examples))
    notes = selection_notes(split, num_aug, limit, len(examples), task_ids)
    kind = dataset_kind(data_dir)
    predictions = predict(model, split, batch_size, examples, remap, keep_steps, progress=progress,
                          score_steps=scores_step_by_step(kind, split_name))
    scores = score(kind, data_dir, split, split_name, names, predictions, reached_only=limit is not None,
                   task_ids=task_ids)
    return Evaluation(predictions, scores, ema, notes)


def selection_notes(split: SplitArrays, num_aug: int | None, limit: int | None, selected: int,
                    task_ids: set[str] | None = None) -> list[str]:
    """What --num-aug, --tasks and --limit left out, in words (an evaluation never silently
    shrinks)."""
    notes = []
    if task_ids is not None:
        total = len(split.group_indices) - 1  # one group per task of the split
        notes.append(f"--tasks: {len(task_ids)} of {total} tasks evaluated; scores and the submission hold only those")
    most = int(np.diff(split.group_indices).max()) - 1 if len(split.group_indices) > 1 else 0
    if num_aug is not None and num_aug > most:
        notes.append(f"--num-aug {num_aug}: the dataset holds at most {most} augmentations per task "
                     f"(its build's --num-aug): voted over those {most}")
    if limit is not None and selected < split.num_examples:
        notes.append(f"--limit {limit}: {selected} of {split.num_examples} examples evaluated; scores count only "
                     "the test outputs of the tasks they reach")
    return notes


def write_logits(path: Path, predictions: Predictions) -> None:
    """`logits` (steps x N x seq_len x vocab) and `q_halt_logits` (steps x N), atomically."""
    tmp = path.with_name(f".{path.name}.partial.npz")
    np.savez(tmp, logits=predictions.step_logits, q_halt_logits=predictions.step_q_halt,
             example_index=predictions.example_index)
    tmp.replace(path)


def summary_lines(evaluation: Evaluation) -> list[str]:
    weights = "EMA averages" if evaluation.ema else "live weights"
    return [f"{len(evaluation.predictions.example_index)} predictions ({weights})", *evaluation.notes,
            *evaluation.scores.lines()]

