"""trm-package: from a checkpoint to the model directory of a Kaggle dataset.

The export keeps what the offline notebook needs: the trunk in float32 (EMA weights when
the checkpoint has them) and, instead of the puzzle-embedding table, the statistics new
tasks start from. The paper checkpoint's 2.3 GiB are almost all table rows of training
variants that never appear on Kaggle; `keep_embeddings=True` keeps them (and the
identifiers) for continued pretraining or a fidelity check.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import torch

from trm_kaggle import __version__
from trm_kaggle.checkpoint import (
    META_FILE, STATS_FILE, TABLE, Checkpoint, embedding_stats, load_checkpoint, save_state, sha256_file)
from trm_kaggle.errors import UserError

DEFAULT_RUNS_DIR = Path("runs")


def is_checkpoint(path: Path) -> bool:
    """Ours (a directory with meta.json) or the original's (a file beside all_config.yaml)."""
    if path.is_dir():
        return (path / META_FILE).is_file()
    return path.is_file() and (path.parent / "all_config.yaml").is_file()


def find_checkpoint(name: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """`name` as a path, else the one checkpoint called `name` under `runs_dir`."""
    path = Path(name)
    if path.exists():
        if not is_checkpoint(path):
            raise UserError(f"{path}: not a checkpoint (ours: a step_N/ directory with meta.json; "
                            "the original's: a step_N file with all_config.yaml beside it)")
        return path
    if not runs_dir.is_dir():
        raise UserError(f"{name}: no such file, and no runs directory {runs_dir} to look in")
    found = sorted(p for p in runs_dir.rglob(name) if is_checkpoint(p))
    if not found:
        raise UserError(f"{name}: no checkpoint of that name under {runs_dir}")
    if len(found) > 1:
        raise UserError(f"{name}: {len(found)} checkpoints of that name under {runs_dir}: "
                        + ", ".join(str(p) for p in found) + "; give its path")
    return found[0]


def averaged_state(ckpt: Checkpoint) -> tuple[dict[str, torch.Tensor], bool]:
    """The checkpoint's weights with its EMA averages in place when it has them (the
    original saves the EMA model itself); (state, whether EMA was applied)."""
    state = dict(ckpt.state_dict)
    train_state = ckpt.train_state()
    ema = (train_state or {}).get("train_step", {}).get("ema")
    if not ema:
        return state, False
    for name, average in ema["shadow"].items():
        state[name] = average.to(state[name].dtype)
    return state, True


@dataclass
class ModelExport:
    path: Path
    source: Path
    ema: bool
    kept_rows: int
    size_bytes: int


def export_model(ckpt_path: Path, out: Path, keep_embeddings: bool = False) -> ModelExport:
    """Write the Kaggle model directory (our checkpoint format, loadable by load_checkpoint)."""
    ckpt = load_checkpoint(ckpt_path)
    if TABLE not in ckpt.state_dict:
        raise UserError(f"{ckpt_path}: already a slim export; package the checkpoint it came from")
    state, ema = averaged_state(ckpt)
    state = {k: v.float() for k, v in state.items()}
    table = state[TABLE]
    mean, std = embedding_stats(table)
    torch_files = {STATS_FILE: {"mean": mean, "std": std, "rows": len(table) - 1}}
    if not keep_embeddings:
        del state[TABLE]
    source_file = ckpt_path if ckpt_path.is_file() else ckpt_path / "model.pt"
    meta = {"source": str(ckpt_path.resolve()), "source_sha256": sha256_file(source_file),
            "source_step": ckpt.step, "ema": ema, "package_version": __version__,
            "date": datetime.date.today().isoformat()}
    save_state(out, ckpt.config, state, ckpt.identifiers if keep_embeddings else None, ckpt.step,
               torch_files=torch_files, meta=meta)
    size = sum(f.stat().st_size for f in out.iterdir())
    return ModelExport(out, ckpt_path, ema, len(table) if keep_embeddings else 0, size)
