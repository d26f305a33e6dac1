"""trm-simulate --calibrate: time the real training step and inference step on this machine's
device, and turn the times into achieved efficiency (FLOP/s achieved over the device's peak).

The peaks are hardware.py's: a GPU's from its name, the CPU's an estimate from its cores,
clock and vector width.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trm_kaggle.config import ModelConfig
from trm_kaggle.hardware import PEAK_BF16_TFLOPS, cpu_peak_tflops, default_dtype, gpu_model
from trm_kaggle.model import TRM
from trm_kaggle.simulate import calibration_record
from trm_kaggle.train import Schedule, TrainStep


def device_peak(device: torch.device) -> tuple[str, float]:
    """(profile-like name, peak TFLOP/s in the dtype the device trains in)."""
    if device.type != "cuda":
        return "cpu", cpu_peak_tflops()
    key = gpu_model(device)
    if key is None:
        raise RuntimeError(f"no peak FLOP/s known for {torch.cuda.get_device_name(device)}")
    return {"L4": "kaggle-4xL4", "H100": "h100"}.get(key, key.lower()), PEAK_BF16_TFLOPS[key]


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
    dtype = default_dtype(device)
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
