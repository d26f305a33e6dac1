"""The training step: what moves in each phase of fine-tuning."""

from __future__ import annotations

import torch

from trm_kaggle.config import ModelConfig
from trm_kaggle.model import TRM
from trm_kaggle.optim import EMA
from trm_kaggle.train import Schedule, TrainStep


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"inputs": torch.randint(0, 12, (size, 900), generator=g, dtype=torch.int32),
            "labels": torch.randint(2, 12, (size, 900), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.tensor([1, 2, 2, 3], dtype=torch.int32)}


def tiny_model() -> TRM:
    torch.manual_seed(0)
    return TRM(ModelConfig(num_puzzle_identifiers=6, hidden_size=32, num_heads=2, L_layers=1, puzzle_emb_ndim=32,
                           puzzle_emb_len=1, H_cycles=1, L_cycles=1, halt_max_steps=2, forward_dtype="float32"))


def test_embeddings_only_phase_leaves_the_trunk_and_unused_rows_alone():
    model = tiny_model()
    trunk = {k: v.clone() for k, v in model.named_parameters()}
    table = model.puzzle_emb.weights.clone()
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4)
    step(batch(), train_trunk=False)
    assert all(torch.equal(p, trunk[k]) for k, p in model.named_parameters())
    changed = (model.puzzle_emb.weights != table).any(-1).tolist()
    assert changed == [False, True, True, True, False, False]
    step(batch())
    assert not torch.equal(model.lm_head.weight, trunk["lm_head.weight"])
    assert step.step == 2 and step.trunk.param_groups[0]["lr"] == 1e-4


def test_the_ema_follows_trunk_steps():
    model = tiny_model()
    ema = EMA(model, decay=0.5)
    start = model.lm_head.weight.detach().clone()
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4, ema=ema)
    step(batch())
    live = model.lm_head.weight.detach().clone()
    with ema.swapped_in() as averaged:
        torch.testing.assert_close(averaged.lm_head.weight.detach(), (start + live) / 2)
    assert torch.equal(model.lm_head.weight, live)
