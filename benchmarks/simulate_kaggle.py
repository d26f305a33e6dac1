"""Predicted time on Kaggle's 4×L4 for the hidden test set (DESIGN §6: ≤ 6 h for 15k steps at
batch 384 plus 512-augmentation inference), two ways:

- uncalibrated: the ARC Prize 2025 entry's implied efficiency (12% train, 35% inference);
- with trm-kaggle's own efficiency measured on an H100 (benchmarks/results/train_step_h100_*),
  compiled as trm-submit runs on CUDA, and, for comparison, with eager inference (what it
  falls back to when the compiler fails on the image); applied to the L4's peak (±50%:
  efficiency does not transfer exactly between GPUs).

    python benchmarks/simulate_kaggle.py [--challenges FILE] [--record FILE]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from trm_kaggle.simulate import PROFILES, Settings, Workload, paper_config, predict
from trm_kaggle.hardware import PEAK_BF16_TFLOPS
from trm_kaggle.model import flops_per_example

RESULTS = Path(__file__).parent / "results"


def h100_efficiency() -> tuple[float, float, float]:
    """(training compiled, inference compiled, inference eager) achieved / peak on the H100."""
    compiled = json.loads((RESULTS / "train_step_h100_b256_compile.json").read_text())
    eager = json.loads((RESULTS / "train_step_h100_b256.json").read_text())
    forward = flops_per_example(paper_config())[1]
    infer_eager = eager["infer_act_step_examples_per_s"] * forward / (PEAK_BF16_TFLOPS["H100"] * 1e12)
    return compiled["train_mfu"], compiled["infer_mfu"], infer_eager


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--challenges", type=Path)
    p.add_argument("--record", type=Path)
    args = p.parse_args()
    workload = Workload.hidden_from(args.challenges)
    settings = Settings(steps=15_000, batch_size=384, num_aug=512)
    train, infer, infer_eager = h100_efficiency()
    measured = replace(PROFILES["kaggle-4xL4"], train_efficiency=train, infer_efficiency=infer,
                       source="trm-kaggle on an H100, applied to L4", uncertainty=0.5)
    profiles = {"entry": PROFILES["kaggle-4xL4"], "h100_measured": measured,
                "h100_measured_eager_inference": replace(measured, infer_efficiency=infer_eager)}
    result = {"workload": {"tasks": workload.tasks, "test_inputs": workload.test_inputs,
                           "demo_pairs": workload.demo_pairs, "source": workload.source},
              "settings": {"steps": 15_000, "batch_size": 384, "num_aug": 512, "mode": "emb_first_quarter"}}
    for name, profile in profiles.items():
        prediction = predict(profile, workload, settings)
        result[name] = json.loads(prediction.to_json()) | {
            "train_efficiency": round(profile.train_efficiency, 3), "infer_efficiency": round(profile.infer_efficiency, 3),
            "total_h": round(prediction.total_s / 3600, 2)}
    print(json.dumps(result, indent=2))
    if args.record:
        args.record.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
