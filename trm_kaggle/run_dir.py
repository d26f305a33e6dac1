"""A training run's directory: its checkpoints (`step_N/`), which is newest, pruning, and the
JSONL metrics log."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from trm_kaggle.checkpoint import FORMAT, META_FILE

STEP_DIR = re.compile(r"step_(\d+)")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of ours, oldest first. A directory being written is a hidden
    `.step_N.partial-*` and never matches; one without a valid meta.json is ignored."""
    found = []
    for path in Path(run_dir).glob("step_*"):
        match = STEP_DIR.fullmatch(path.name)
        if not (match and path.is_dir() and (path / META_FILE).is_file()):
            continue
        try:
            if json.loads((path / META_FILE).read_text()).get("format") != FORMAT:
                continue
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def prune(run_dir: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns what went."""
    if keep_last is None:
        return []
    old = [path for _, path in checkpoints(run_dir)[:-keep_last]]
    for path in old:
        shutil.rmtree(path)
    return old


class MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl (and to W&B when enabled)."""

    def __init__(self, run_dir: Path, wandb_run: Any = None):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_run = wandb_run

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3)} | record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))
