"""One training step of the TRM, shared by pretraining and test-time fine-tuning.

As the original: each call runs ONE ACT step over the carried batch (rows that halted are
replaced by the incoming batch's rows), the loss is divided by the global batch size before
backward, trunk gradients are all-reduced across ranks, both optimizers share the LR
schedule, and the EMA follows every step. Issue 4's loop (data, checkpoints, logging,
resume) drives this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from trm_kaggle.losses import act_loss
from trm_kaggle.model import TRM, Batch, Carry
from trm_kaggle.optim import EMA, AdamATan2, SignSGDEmbedding, set_lr


@dataclass(frozen=True)
class Schedule:
    lr: float = 1e-4
    puzzle_emb_lr: float = 1e-2
    warmup_steps: int = 2000
    total_steps: int = 100_000
    min_ratio: float = 1.0
    weight_decay: float = 0.1
    puzzle_emb_weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class TrainStep:
    model: TRM
    schedule: Schedule
    global_batch_size: int
    ema: EMA | None = None
    step: int = 0
    carry: Carry | None = None
    trunk: AdamATan2 = field(init=False)
    embeddings: SignSGDEmbedding = field(init=False)

    def __post_init__(self) -> None:
        s = self.schedule
        self.trunk = AdamATan2(self.model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        self.embeddings = SignSGDEmbedding(self.model.puzzle_emb, lr=s.puzzle_emb_lr,
                                           weight_decay=s.puzzle_emb_weight_decay)

    def __call__(self, batch: Batch, train_trunk: bool = True) -> dict[str, float]:
        """One ACT step and one optimizer step; `train_trunk=False` moves only the puzzle
        embeddings (the first phase of test-time fine-tuning)."""
        self.model.train()
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        self.carry, out = self.model(self.carry, batch)
        loss, metrics = act_loss(out["logits"], out["q_halt_logits"], self.carry.data["labels"],
                                 self.carry.halted, self.carry.steps)
        (loss / self.global_batch_size).backward()
        all_reduce_gradients(self.model)
        self.step += 1
        s = self.schedule
        optimizers = [self.trunk, self.embeddings] if train_trunk else [self.embeddings]
        base_lrs = [s.lr, s.puzzle_emb_lr] if train_trunk else [s.puzzle_emb_lr]
        set_lr(optimizers, base_lrs, self.step, warmup_steps=s.warmup_steps, total_steps=s.total_steps,
               min_ratio=s.min_ratio)
        for optimizer in optimizers:
            optimizer.step()
        self.trunk.zero_grad(set_to_none=True)
        self.embeddings.zero_grad()
        if self.ema is not None and train_trunk:
            self.ema.update()
        return {k: float(v) for k, v in metrics.items()}


def all_reduce_gradients(model: TRM) -> None:
    """Sum the trunk's gradients over ranks (the loss is already divided by the global batch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
