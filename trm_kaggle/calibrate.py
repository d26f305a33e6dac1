"""trm-simulate --calibrate: time the real training step and inference step on this machine's
device, and turn the times into achieved efficiency (FLOP/s achieved over the device's peak).

The CPU's peak is an estimate: cores × clock × FLOPs per cycle (32 in float32 with AVX2 and
FMA, 64 with AVX-512); a GPU's comes from its name (the H100/H200/A100/L4 table).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch

from trm_kaggle.config import ModelConfig
from trm_kaggle.model import TRM
from trm_kaggle.pretrain import PEAK_BF16_TFLOPS
from trm_kaggle.simulate import calibration_record
from trm_kaggle.train import Schedule, TrainStep


def cpu_peak_tflops() -> float:
    """float32 peak of this CPU, estimated from /proc/cpuinfo (2.5 GHz, AVX2 if unreadable)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)] or [2500.0]
    per_cycle = 64 if "avx512f" in info else 32 if "fma" in info else 16
    return len(os.sched_getaffinity(0)) * max(mhz) * 1e6 * per_cycle / 1e12


def device_peak(device: torch.device) -> tuple[str, float]:
    """(profile-like name, peak TFLOP/s in the dtype the device trains in)."""
    if device.type != "cuda":
        return "cpu", cpu_peak_tflops()
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key in name:
            return {"L4": "kaggle-4xL4", "H100": "h100"}.get(key, key.lower()), peak
    raise RuntimeError(f"no peak FLOP/s known for {name}")


def random_batch(size: int, device: torch.device, config: ModelConfig) -> dict[str, torch.Tensor]:
    """`size` rows of random tokens and labels of `config`'s shape ((size, seq_len) int32) with
    puzzle identifiers in [1, rows): the cost of a step does not depend on the values."""
    shape = (size, config.seq_len)
    return {"inputs": torch.randint(0, config.vocab_size, shape, device=device, dtype=torch.int32),
            "labels": torch.randint(0, config.vocab_size, shape, device=device, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(min(1, config.num_puzzle_identifiers - 1),
                                                config.num_puzzle_identifiers, (size,), device=device,
                                                dtype=torch.int32)}


def seconds_per_call(fn, calls: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per call of `fn` over `calls` calls, after `warmup` untimed ones (allocations,
    kernels, compilation, caches)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def calibrate(config: ModelConfig, batch: int, calls: int, device: torch.device) -> dict:
    """Time `calls` training steps and ACT steps of `config` at `batch` on `device`."""
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    config = config.model_copy(update={"forward_dtype": dtype, "num_puzzle_identifiers": 2})
    model = TRM(config).to(device)
    step = TrainStep(model, Schedule(warmup_steps=1), batch)
    data = random_batch(batch, device, config)
    train_s = seconds_per_call(lambda: step(data), calls, device)

    @torch.inference_mode()
    def infer() -> None:
        model.eval()
        model(model.initial_carry(data), data)
    infer_s = seconds_per_call(infer, calls, device)
    name, peak = device_peak(device)
    return calibration_record(name, peak, train_s, infer_s, batch, config)


def save_calibration(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
