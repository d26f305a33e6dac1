"""What the hardware can do: peak FLOP/s per device, the model FLOP utilisation (MFU) a
measured throughput implies, and the dtype each kind of device computes in. The FLOPs the
model needs are `model.flops_per_example`.

GPUs are recognised by name (`torch.cuda.get_device_name`, e.g. "NVIDIA H100 80GB HBM3"); a
CPU's peak is an estimate: cores × clock × FLOPs per cycle.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

# Dense bf16 tensor-core peak per GPU (no sparsity), keyed by a substring of the device name;
# the first key found in the name wins.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}
# The T4 has no bf16: a run there computes in fp16. Only the timing model's profile uses it.
PEAK_FP16_TFLOPS = {"T4": 65.0}


def gpu_model(device: torch.device) -> str | None:
    """The PEAK_BF16_TFLOPS key of a CUDA device, None for a CPU or a GPU not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((key for key in PEAK_BF16_TFLOPS if key in name), None)


def gpu_peak_tflops(device: torch.device) -> float | None:
    """bf16 peak TFLOP/s of a CUDA device, None for a CPU or a GPU not in the table."""
    key = gpu_model(device)
    return None if key is None else PEAK_BF16_TFLOPS[key]


def cpu_peak_tflops() -> float:
    """float32 peak of this CPU, estimated from /proc/cpuinfo: 32 FLOPs per cycle with AVX2 and
    FMA, 64 with AVX-512 (2.5 GHz, AVX2 if unreadable)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)] or [2500.0]
    per_cycle = 64 if "avx512f" in info else 32 if "fma" in info else 16
    return len(os.sched_getaffinity(0)) * max(mhz) * 1e6 * per_cycle / 1e12


def mfu(examples_per_s: float, flops_per_example: float, device: torch.device, world_size: int) -> float | None:
    """Model FLOP utilisation of `world_size` GPUs like `device` processing `examples_per_s`
    examples of `flops_per_example` FLOPs each; None off CUDA or on a GPU not in the table."""
    peak = gpu_peak_tflops(device)
    if peak is None:
        return None
    return examples_per_s * flops_per_example / (peak * 1e12 * world_size)


def default_dtype(device: torch.device) -> str:
    """The forward dtype a model runs in on `device` unless told otherwise: bfloat16 on a GPU,
    float32 on a CPU (whose bf16 matmuls are slow or emulated)."""
    return "bfloat16" if device.type == "cuda" else "float32"
