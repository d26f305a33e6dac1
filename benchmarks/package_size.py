"""Size of trm-package's model export for a checkpoint of the paper's shape.

A synthetic checkpoint (paper architecture, hidden 512, 1,045,841 puzzle-embedding rows as
the ARC-AGI-2 ×1000 dataset gives, random table) is written in our format, then exported
slim (the default) and with --keep-embeddings. Prints both sizes against the full
state_dict's; the goal (DESIGN §6) is ≤ 60 MB against the original's 2.3 GiB model.ckpt.

    python benchmarks/package_size.py [--rows 1045841] [--record FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.config import ModelConfig
from trm_kaggle.model import TRM
from trm_kaggle.package import export_model


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_045_841)
    p.add_argument("--record", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="package_size-"))
    try:
        model = TRM(ModelConfig(**arc_shape(args.rows).model_dump()))
        with torch.no_grad():
            model.puzzle_emb.weights.normal_(0, 0.02)
        identifiers = ["<blank>"] + [f"t{i}" for i in range(1, args.rows)]
        source = save_checkpoint(work / "step_1", model, identifiers, step=1)
        full_state = (source / "model.pt").stat().st_size
        del model
        start = time.perf_counter()
        slim = export_model(source, work / "slim")
        seconds = time.perf_counter() - start
        kept = export_model(source, work / "kept", keep_embeddings=True)
        result = {"rows": args.rows, "full_state_dict_mb": round(full_state / 1e6, 1),
                  "slim_export_mb": round(slim.size_bytes / 1e6, 2), "slim_export_s": round(seconds, 1),
                  "keep_embeddings_export_mb": round(kept.size_bytes / 1e6, 1),
                  "slim_vs_full": round(slim.size_bytes / full_state, 4), "goal_mb": 60}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    if args.record:
        args.record.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
