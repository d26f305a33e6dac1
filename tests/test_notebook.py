"""The Kaggle notebook itself, executed by a real Jupyter kernel against a fake /kaggle/input
tree in the 2026 layout (competition and dataset folders) holding real ARC-AGI-2 tasks and a
tiny packaged model, on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from submit_helpers import assert_complete, hidden_tasks, tiny_bundle, write_challenges

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "trm_arc_submission.ipynb"
METADATA = Path(__file__).parent.parent / "packaging" / "kernel-metadata.json"


def test_the_notebook_runs_offline_and_writes_a_complete_submission(tmp_path, monkeypatch):
    root = tmp_path / "kaggle" / "input"
    tasks = hidden_tasks(3)
    write_challenges(tasks, root / "competitions" / "arc-prize-2026-arc-agi-2")
    shutil.copytree(tiny_bundle(tmp_path / "made") / "model", root / "datasets" / "you" / "trm-arc" / "model")
    out = tmp_path / "kaggle" / "working" / "submission.json"
    monkeypatch.setenv("TRM_KAGGLE_INPUT", str(root))
    monkeypatch.setenv("TRM_KAGGLE_OUT", str(out))
    monkeypatch.setenv("TRM_SUBMIT_OPTIONS", json.dumps(dict(
        budget_hours=0.03, margin_minutes=0.1, num_aug=4, steps=4, batch_size=8, device="cpu", gpus=1,
        scratch=str(tmp_path / "temp"))))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert_complete(out, tasks)
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert f"{out}: valid" in printed
    assert "fine-tune steps: 4 done of 4 planned" in printed


def test_the_kernel_metadata_template_keeps_internet_off_and_the_gpu_on():
    metadata = json.loads(METADATA.read_text())
    assert metadata["enable_internet"] is False  # missing means on when pushing
    assert metadata["enable_gpu"] is True and metadata["competition_sources"] and metadata["dataset_sources"]
    assert metadata["code_file"] == NOTEBOOK.name
