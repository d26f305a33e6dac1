"""Training-step and inference throughput of the paper-size TRM (DESIGN §5), eager PyTorch.

    python benchmarks/model_throughput.py [--batch 256] [--steps 10] [--dtype bfloat16] [--record FILE]

Training: TrainStep (one ACT step, backward through the last H cycle, AdamATan2 + sign-SGD)
on random tokens. Inference: one ACT step in inference mode. Model FLOPs utilisation uses
DESIGN §5's counts: 398 GFLOP per example per training step, 239 GFLOP per ACT step forward.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from trm_kaggle.config import ModelConfig
from trm_kaggle.model import TRM
from trm_kaggle.train import Schedule, TrainStep

TRAIN_GFLOP, FORWARD_GFLOP = 398.0, 239.0
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "L4": 121.0}  # dense bf16


def random_batch(size: int, ids: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {"inputs": torch.randint(0, 12, (size, 900), device=device, dtype=torch.int32),
            "labels": torch.randint(2, 12, (size, 900), device=device, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(1, ids, (size,), device=device, dtype=torch.int32)}


def timed(fn, steps: int, device: torch.device) -> float:
    """Seconds per call, after two warm-up calls."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--record", type=Path)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = ModelConfig(num_puzzle_identifiers=1000, forward_dtype=args.dtype)
    model = TRM(config).to(device)
    batch = random_batch(args.batch, config.num_puzzle_identifiers, device)
    train = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=args.batch)
    train_s = timed(lambda: train(batch), args.steps, device)
    train_peak_gb = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            model(model.initial_carry(batch), batch)

    infer_s = timed(infer, args.steps, device)
    peak = peak_tflops(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "dtype": args.dtype, "batch": args.batch,
        "train_examples_per_s": round(args.batch / train_s, 1),
        "infer_act_step_examples_per_s": round(args.batch / infer_s, 1),
        "train_peak_gpu_memory_gb": None if train_peak_gb is None else round(train_peak_gb, 2),
    }
    if peak:
        result["train_mfu"] = round(args.batch / train_s * TRAIN_GFLOP / 1e3 / peak, 3)
        result["infer_mfu"] = round(args.batch / infer_s * FORWARD_GFLOP / 1e3 / peak, 3)
    print(json.dumps(result))
    if args.record:
        args.record.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
