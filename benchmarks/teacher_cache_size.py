"""The teacher cache's size on ARC grids, per logits mode, against the paper's 602 GB.

    python benchmarks/teacher_cache_size.py [--data DIR] [--rollouts 8] [--beam 4]
        [--search-steps 4] [--keep 2] [--out benchmarks/results]

Builds a trm-kaggle dataset from the ARC fixture tasks (tests/fixtures/arc_mini, 900-position
canvas) unless --data names one, a small untrained teacher of the ARC shape, and a
trm-teacher-cache for each `--logits` mode (none, supervised-bf16, topk:2). Bytes on disk per
training example do not depend on the teacher's skill, only on the canvas, K entries and what
is stored, so this measures what the ARC-AGI-2 ×1000 dataset's cache (4,340,808 training
examples) would weigh at the paper's K = 2. Writes OUT/teacher_cache_size_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.cli.build_data import main as build_main
from trm_kaggle.cli.teacher_cache import ARC2_AUG1000_TRAIN_EXAMPLES, PAPER_CACHE_GB
from trm_kaggle.config import tiny_model_config
from trm_kaggle.dataset.format import dataset_shape, load_identifiers
from trm_kaggle.distributed import Dist
from trm_kaggle.model import TRM
from trm_kaggle.planner.cache import CacheSettings, build_cache

from learning import RESULTS, device_name

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "arc_mini" / "arc"
MODES = ("none", "supervised-bf16", "topk:2")


def arc_dataset(where: Path) -> Path:
    """The fixture's ARC tasks on the 30×30 canvas, 3 augmentations per task."""
    argv = ["--source", str(FIXTURE), "--subsets", "mini_train,mini_eval", "--test-set", "mini_eval",
            "--num-aug", "3", "--out", str(where)]
    if build_main(argv) != 0:
        raise SystemExit("could not build the fixture dataset")
    return where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="an ARC-canvas dataset (default: built from the fixture tasks)")
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--search-steps", type=int, default=4, help="T_max: does not change the bytes, only the time")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = args.data or arc_dataset(scratch / "data")
        torch.manual_seed(0)
        model = TRM(tiny_model_config(dataset_shape(data), halt_max_steps=args.search_steps))
        teacher = save_checkpoint(scratch / "teacher" / "step_1", model, load_identifiers(data), step=1)
        rows = {}
        for mode in MODES:
            settings = CacheSettings(rollouts=args.rollouts, beam=args.beam, max_steps=args.search_steps,
                                     keep=args.keep, logits=mode)
            s = build_cache(teacher, data, scratch / f"cache-{mode.replace(':', '')}", settings,
                            Dist(0, 1, 0, device), progress=False)
            arc2_gb = s.bytes_per_example * ARC2_AUG1000_TRAIN_EXAMPLES / 1e9
            rows[mode] = {"examples": s.examples, "entries": s.entries, "seq_len": s.seq_len, "bytes": s.bytes,
                          "bytes_per_example": round(s.bytes_per_example, 1), "seconds": round(s.seconds, 1),
                          "arc2_aug1000_gb": round(arc2_gb, 1), "ratio_to_paper": round(PAPER_CACHE_GB / arc2_gb, 1)}
            print(f"logits {mode}: {s.bytes_per_example:.0f} bytes per example (seq {s.seq_len}, K {args.keep}) -> "
                  f"ARC-AGI-2 ×1000 ~{arc2_gb:.1f} GB, {PAPER_CACHE_GB / arc2_gb:.0f}× smaller than the paper's "
                  f"{PAPER_CACHE_GB} GB")
    record = {"device": device_name(device), "torch": torch.__version__, "keep": args.keep,
              "rollouts": args.rollouts, "beam": args.beam, "search_steps": args.search_steps,
              "arc2_aug1000_train_examples": ARC2_AUG1000_TRAIN_EXAMPLES, "paper_cache_gb": PAPER_CACHE_GB,
              "modes": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "teacher_cache_size_" + ("cpu" if device.type == "cpu" else device_name(device).replace(" ", "_"))
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / (stem + '.json')}")


if __name__ == "__main__":
    main()
