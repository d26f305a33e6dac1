"""Training-step and inference throughput of a TRM config on whatever device this runs.

    python benchmarks/train_step.py [--preset arc2_paper] [--batch 256] [--steps 10]
                                    [--compile] [--record FILE] [arch.key=value ...]

Training: TrainStep (one ACT step, backward through the last H cycle, AdamATan2 + sign-SGD)
on random tokens, as trm-pretrain runs it; `--compile` wraps the model in torch.compile as
trm-pretrain does on CUDA. Inference: one ACT step in inference mode. MFU uses the config's
FLOP count (model.flops_per_example: 398 / 239 GFLOP per example at the paper config).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.calibrate import random_batch, seconds_per_call
from trm_kaggle.cli.pretrain import load_config
from trm_kaggle.hardware import gpu_peak_tflops
from trm_kaggle.model import TRM, flops_per_example
from trm_kaggle.train import Schedule, TrainStep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="arc2_paper")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--record", type=Path)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. arch.forward_dtype=float32")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    run_config = load_config([f"preset={args.preset}", "data_path=-", "run_dir=-", *args.overrides])
    config = run_config.arch.to_model_config(arc_shape(1000), device.type == "cuda")
    model = TRM(config).to(device)
    batch = random_batch(args.batch, device, config)
    forward = torch.compile(model) if args.compile else None
    train = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=args.batch, forward=forward)
    train_s = seconds_per_call(lambda: train(batch), args.steps, device, warmup=2)
    train_peak_gb = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            (model if forward is None else forward)(model.initial_carry(batch), batch)

    infer_s = seconds_per_call(infer, args.steps, device, warmup=2)
    peak = gpu_peak_tflops(device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__, "preset": args.preset, "overrides": args.overrides,
        "dtype": config.forward_dtype, "compile": args.compile, "batch": args.batch,
        "train_step_s": round(train_s, 4),
        "train_examples_per_s": round(args.batch / train_s, 1),
        "infer_act_step_examples_per_s": round(args.batch / infer_s, 1),
        "train_peak_gpu_memory_gb": None if train_peak_gb is None else round(train_peak_gb, 2),
    }
    train_flops, forward_flops = flops_per_example(config)
    result["train_tflops"] = round(args.batch / train_s * train_flops / 1e12, 2)
    if peak:
        result["train_mfu"] = round(args.batch / train_s * train_flops / 1e12 / peak, 3)
        result["infer_mfu"] = round(args.batch / infer_s * forward_flops / 1e12 / peak, 3)
    print(json.dumps(result))
    if args.record:
        args.record.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
