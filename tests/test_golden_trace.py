"""The golden trace: 20 training steps of the tiny TRM on real ARC rows, recorded once and
asserted at a tight tolerance, so that a refactor of the model, the loss, the optimizers or the
training step cannot change a number unnoticed.

The other training tests compare the code with itself (resume against straight, two ranks
against one), and both optimizers are blind to a global gradient scale (atan2(c·m, c·√v) =
atan2(m, √v); sign-SGD likewise), so a normalisation slip would move no weight. Here the losses,
the accuracy, the trunk's gradient norm and a checksum of every tensor (weights, puzzle table,
EMA) are pinned step by step, through an embeddings-only phase, warm-up, halting exploration
and EMA.

Record again only for an intended, explained change of numbers:
    TRM_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_trace.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.config import tiny_model_config
from trm_kaggle.dataset.format import load_split
from trm_kaggle.dataset.sampler import TrainSampler
from trm_kaggle.model import TRM
from trm_kaggle.optim import EMA
from trm_kaggle.train import Schedule, TrainStep

from conftest import FIXTURES

GOLDEN = FIXTURES / "golden_trace.json"
STEPS, EMBEDDINGS_ONLY, BATCH = 20, 5, 8
PER_STEP = ("lm_loss", "q_halt_loss", "exact_accuracy", "count", "grad_norm", "lr_trunk", "lr_puzzle_emb")
RTOL, ATOL = 1e-5, 1e-6  # float32 on one thread: only a changed computation moves these


def checksums(tensors: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """(sum, sum of |x|) in float64 of each tensor: a change anywhere in it shows."""
    return {name: [float(t.double().sum()), float(t.double().abs().sum())] for name, t in tensors.items()}


def record_trace(data: Path) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order, whatever the machine's core count
    try:
        torch.manual_seed(0)
        split = load_split(data, "train")
        model = TRM(tiny_model_config(arc_shape(split.metadata.num_puzzle_identifiers), halt_exploration_prob=0.5))
        ema = EMA(model, decay=0.9)
        step = TrainStep(model, Schedule(lr=1e-3, puzzle_emb_lr=1e-2, warmup_steps=4, total_steps=STEPS, min_ratio=0.1,
                                         embeddings_only_steps=EMBEDDINGS_ONLY), global_batch_size=BATCH, ema=ema)
        sampler = TrainSampler(split, BATCH, seed=0)
        rows = [step(sampler.next_batch()) for _ in range(STEPS)]
    finally:
        torch.set_num_threads(threads)
    return {"steps": {key: [row[key] for row in rows] for key in PER_STEP},
            "weights": checksums(model.state_dict()), "ema": checksums(ema.shadow)}


@pytest.fixture(scope="module")
def trace(mini_dataset) -> dict:
    trace = record_trace(mini_dataset)
    if os.environ.get("TRM_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(trace, indent=1) + "\n")
    return trace


def test_every_step_reproduces_the_golden_losses_accuracy_and_gradient_norm(trace):
    golden = json.loads(GOLDEN.read_text())["steps"]
    for key in PER_STEP:
        np.testing.assert_allclose(trace["steps"][key], golden[key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert golden["grad_norm"][EMBEDDINGS_ONLY] > 0 and min(golden["lm_loss"][10:]) < golden["lm_loss"][0]  # it trains


def test_every_tensor_and_its_ema_end_where_the_golden_run_ended(trace):
    golden = json.loads(GOLDEN.read_text())
    for part in ("weights", "ema"):
        assert trace[part].keys() == golden[part].keys(), part
        for name, values in golden[part].items():
            np.testing.assert_allclose(trace[part][name], values, rtol=RTOL, atol=ATOL, err_msg=f"{part} {name}")


def test_the_trace_sees_a_loss_normalisation_slip(mini_dataset, monkeypatch):
    """The negative control: the gradient divided by twice the batch, which neither optimizer's
    update sees, still moves the trace (through the reported gradient norm)."""
    import trm_kaggle.train as train_module

    original = train_module.TrainStep.accumulate

    def halved(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(0.5)
        return out

    monkeypatch.setattr(train_module.TrainStep, "accumulate", halved)
    slipped = record_trace(mini_dataset)["steps"]["grad_norm"]
    golden = json.loads(GOLDEN.read_text())["steps"]["grad_norm"]
    assert not np.allclose(slipped, golden, rtol=RTOL, atol=ATOL)
