"""A training run's directory: its checkpoints (`step_N/`), which is newest, retention (prune
and the holds a copier takes), and the JSONL metrics log."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trm_kaggle.atomic import process_tag
from trm_kaggle.checkpoint import FORMAT, META_FILE
from trm_kaggle.errors import UserError

STEP_DIR = re.compile(r"step_(\d+)")


def is_complete(path: Path) -> bool:
    """`path` is step_N/ of ours with a valid meta.json (written last, so the rest is there)."""
    if not (STEP_DIR.fullmatch(path.name) and path.is_dir() and (path / META_FILE).is_file()):
        return False
    try:
        return json.loads((path / META_FILE).read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of ours, oldest first (by step). A directory being written is a
    hidden `.step_N.partial-*` and never matches; one without a valid meta.json is ignored."""
    found = [(int(STEP_DIR.fullmatch(path.name).group(1)), path)
             for path in Path(run_dir).glob("step_*") if is_complete(path)]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- retention
# Seed 002 lost fresh checkpoints to a prune job while a sync was copying them. Here the newest
# complete checkpoint (by step, never by name or mtime) is never pruned, a checkpoint being
# written is a hidden partial that nothing lists, and a copier holds what it copies.

HOLDS_DIR = ".holds"
HOLD_TTL_SECONDS = 6 * 3600  # a hold not refreshed for this long is a dead copier's


def hold_file(checkpoint: Path, who: str) -> Path:
    return checkpoint.parent / HOLDS_DIR / f"{checkpoint.name}.{who}-{process_tag()}"


def holders(checkpoint: Path, ttl_seconds: float = HOLD_TTL_SECONDS) -> list[Path]:
    """The live hold files on `checkpoint` (refreshed within `ttl_seconds`)."""
    now = time.time()
    live = []
    for path in (checkpoint.parent / HOLDS_DIR).glob(f"{checkpoint.name}.*"):
        try:
            if now - path.stat().st_mtime < ttl_seconds:
                live.append(path)
        except FileNotFoundError:
            continue  # released meanwhile
    return live


@contextmanager
def hold(checkpoint: Path, who: str, refresh_seconds: float = 60.0) -> Iterator[Path]:
    """Keep `prune` (in the trainer, a CronJob or `trm-checkpoints prune`) off `checkpoint`
    while the block runs, e.g. while a sync sidecar copies it. The hold is a file under
    RUN_DIR/.holds/, refreshed every `refresh_seconds` and removed at the end.

    Raises UserError when `checkpoint` is not a complete checkpoint, or was pruned before the
    hold was taken (prune renames, then looks for holds; this writes, then looks for the
    directory: one of the two always sees the other)."""
    checkpoint = Path(checkpoint)
    if not is_complete(checkpoint):
        raise UserError(f"{checkpoint}: not a complete checkpoint (step_N/ with a {META_FILE} of format {FORMAT})")
    path = hold_file(checkpoint, who)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{who}\n")
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(refresh_seconds):
            path.touch()

    refresher = threading.Thread(target=refresh, daemon=True)
    try:
        if not checkpoint.is_dir():
            raise UserError(f"{checkpoint}: pruned before it could be held")
        refresher.start()
        yield checkpoint
    finally:
        stop.set()
        path.unlink(missing_ok=True)


def prune(run_dir: Path, keep_last: int | None, ttl_seconds: float = HOLD_TTL_SECONDS,
          dry_run: bool = False) -> list[Path]:
    """Delete all but the newest `keep_last` (>= 1) complete checkpoints, skipping held ones;
    returns what went (or, with `dry_run`, what would go). Partial directories, other files
    and checkpoints of another format are never touched."""
    if keep_last is None:
        return []
    if keep_last < 1:
        raise UserError(f"keep_last must be >= 1 (the newest checkpoint is always kept), got {keep_last}")
    removed = []
    for _, path in checkpoints(run_dir)[:-keep_last]:
        if holders(path, ttl_seconds):
            continue
        if dry_run:
            removed.append(path)
            continue
        doomed = path.with_name(f".{path.name}.pruning-{process_tag()}")
        try:
            path.rename(doomed)
        except FileNotFoundError:
            continue  # another pruner took it
        if holders(path, ttl_seconds):  # held between the look and the rename: give it back
            doomed.rename(path)
            continue
        shutil.rmtree(doomed)
        removed.append(path)
    return removed


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
