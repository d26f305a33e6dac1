"""Evaluate a checkpoint on a dataset split: predict, undo augmentations, vote, pass@K.

The dataset and the checkpoint may number their variants differently (a checkpoint of ours
carries its own identifiers.json): predictions use the checkpoint's embedding row of each
variant *by name*, and a variant the checkpoint has no row for is an error, since its
prediction would come from an untrained embedding (the public attempt that scored 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm_kaggle.arc import Task, parse_task, read_json
from trm_kaggle.augment import parse_variant_name
from trm_kaggle.checkpoint import Checkpoint, name_rows
from trm_kaggle.dataset.format import SplitArrays, load_identifiers, load_split
from trm_kaggle.errors import UserError
from trm_kaggle.inference import Predictions, predict
from trm_kaggle.vote import PassAtK, Votes, decode_predictions, pass_at_k


@dataclass
class Evaluation:
    tasks: list[Task]
    predictions: Predictions
    ranked: dict
    pass_at: PassAtK | None  # None when the split's tasks have no known outputs


def identifier_map(dataset_ids: list[str], checkpoint_ids: list[str], where: Path) -> np.ndarray | None:
    """dataset row -> checkpoint row, or None when they are the same numbering."""
    if checkpoint_ids == dataset_ids:
        return None
    rows = {name: i for i, name in enumerate(checkpoint_ids)}
    missing = [name for name in dataset_ids[1:] if name not in rows]
    if missing:
        raise UserError(f"{where}: {len(missing)} of the dataset's variants have no embedding row in the "
                        f"checkpoint (first: {missing[0]}); was it trained on this dataset?")
    return np.array([0] + [rows[name] for name in dataset_ids[1:]], dtype=np.int64)


def select_examples(split: SplitArrays, num_aug: int | None, limit: int | None) -> np.ndarray:
    """Examples of the original plus the first `num_aug` variants of each task, then the
    first `limit` of those."""
    puzzles = np.arange(len(split.puzzle_identifiers))
    if num_aug is not None:
        group_start = np.repeat(split.group_indices[:-1], np.diff(split.group_indices))
        puzzles = puzzles[puzzles - group_start <= num_aug]
    starts, ends = split.puzzle_indices[puzzles], split.puzzle_indices[puzzles + 1]
    examples = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)] or [np.zeros(0, np.int64)])
    return examples[:limit] if limit is not None else examples


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


def evaluate(checkpoint: Checkpoint, data_dir: Path, split_name: str = "test", num_aug: int | None = None,
             limit: int | None = None, batch_size: int = 64, keep_steps: bool = False,
             progress: bool = True, dtype: str | None = None, identifiers: Path | None = None,
             rows_by_position: bool = False) -> Evaluation:
    """pass@K of `checkpoint` on a split of `data_dir`. Rows are matched to the dataset's
    variants by name; a checkpoint without row names needs `identifiers` (the identifiers.json
    it was trained with) or `rows_by_position` (UserError otherwise, see checkpoint.name_rows)."""
    split = load_split(data_dir, split_name)
    names = load_identifiers(data_dir)
    ids_file = Path(data_dir) / "identifiers.json"
    name_rows(checkpoint, identifiers, names if rows_by_position else None, against=str(ids_file))
    if dtype is not None:
        checkpoint.config = checkpoint.config.model_copy(update={"forward_dtype": dtype})
    model = checkpoint.build_model()
    remap = identifier_map(names, checkpoint.identifiers, ids_file)
    examples = select_examples(split, num_aug, limit)
    predictions = predict(model, split, batch_size, examples, remap, keep_steps, progress=progress)
    tasks = load_tasks(data_dir)
    ranked = vote(split, names, predictions) if split_name == "test" else {}
    solutions = {t.id: [p.output for p in t.test] for t in tasks if t.has_solutions}
    scored = split_name == "test" and solutions and ranked
    return Evaluation(tasks, predictions, ranked,
                      pass_at_k(ranked, solutions) if scored else None)


def write_logits(path: Path, predictions: Predictions) -> None:
    """`logits` (steps x N x 900 x vocab) and `q_halt_logits` (steps x N), atomically."""
    tmp = path.with_name(f".{path.name}.partial.npz")
    np.savez(tmp, logits=predictions.step_logits, q_halt_logits=predictions.step_q_halt,
             example_index=predictions.example_index)
    tmp.replace(path)


def summary_lines(evaluation: Evaluation) -> list[str]:
    lines = [f"{len(evaluation.predictions.example_index)} predictions, "
             f"{len(evaluation.ranked)} test inputs voted on, {len(evaluation.tasks)} tasks"]
    if evaluation.pass_at is not None:
        for label, values in (("per task (original)", evaluation.pass_at.per_task),
                              ("per output (Kaggle)", evaluation.pass_at.per_output)):
            lines.append(f"pass@K {label}: " + "  ".join(f"@{k} {v:.4f}" for k, v in values.items()))
    return lines


def to_json(evaluation: Evaluation) -> str:
    p = evaluation.pass_at
    return json.dumps(None if p is None else {"per_task": p.per_task, "per_output": p.per_output})
