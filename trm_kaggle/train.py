"""One training step of the TRM, shared by pretraining and test-time fine-tuning.

As the original: each call runs ONE ACT step over the carried batch (rows that halted are
replaced by the incoming batch's rows), the loss is divided by the global batch size before
backward, trunk gradients are all-reduced across ranks, both optimizers share the LR
schedule, and the EMA follows every step.

Unlike the original, the halting-exploration draws come from (seed, step, global row), not
from each rank's RNG, so a run gives the same weights on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from trm_kaggle.config import ModelConfig
from trm_kaggle.losses import act_loss
from trm_kaggle.model import TRM, Batch, Carry
from trm_kaggle.optim import EMA, AdamATan2, SignSGDEmbedding, set_lr

CARRY_FIELDS = ("z_H", "z_L", "steps", "halted")


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
    embeddings_only_steps: int = 0  # the first steps move only the puzzle embeddings


@dataclass
class TrainStep:
    model: TRM
    schedule: Schedule
    global_batch_size: int
    ema: EMA | None = None
    seed: int = 0
    rank: int = 0  # this rank holds rows [rank·b, (rank+1)·b) of each global batch
    forward: Callable | None = None  # e.g. torch.compile(model); default the model itself
    step: int = 0
    carry: Carry | None = None
    trunk: AdamATan2 = field(init=False)
    embeddings: SignSGDEmbedding = field(init=False)

    def __post_init__(self) -> None:
        s = self.schedule
        self.trunk = AdamATan2(self.model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        self.embeddings = SignSGDEmbedding(self.model.puzzle_emb, lr=s.puzzle_emb_lr,
                                           weight_decay=s.puzzle_emb_weight_decay)

    def halting_noise(self, rows: int, device: torch.device) -> torch.Tensor:
        """This rank's slice of the global batch's exploration draws for the coming step."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.step) % 2**63)
        noise = torch.rand(self.global_batch_size, 2, generator=generator)
        return noise[self.rank * rows:(self.rank + 1) * rows].to(device)

    def __call__(self, batch: Batch, train_trunk: bool | None = None) -> dict[str, float]:
        """One ACT step and one optimizer step. The trunk trains unless `train_trunk` is
        False or the schedule's embeddings-only phase is on."""
        if train_trunk is None:
            train_trunk = self.step >= self.schedule.embeddings_only_steps
        self.model.train()
        rows = batch["inputs"].shape[0]
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        forward = self.model if self.forward is None else self.forward
        self.carry, out = forward(self.carry, batch, self.halting_noise(rows, batch["inputs"].device))
        loss, metrics = act_loss(out["logits"], out["q_halt_logits"], self.carry.data["labels"],
                                 self.carry.halted, self.carry.steps)
        (loss / self.global_batch_size).backward()
        all_reduce_gradients(self.model)
        self.step += 1
        s = self.schedule
        optimizers = [self.trunk, self.embeddings] if train_trunk else [self.embeddings]
        base_lrs = [s.lr, s.puzzle_emb_lr] if train_trunk else [s.puzzle_emb_lr]
        lrs = set_lr(optimizers, base_lrs, self.step, warmup_steps=s.warmup_steps, total_steps=s.total_steps,
                     min_ratio=s.min_ratio)
        for optimizer in optimizers:
            optimizer.step()
        self.trunk.zero_grad(set_to_none=True)
        self.embeddings.zero_grad()
        if self.ema is not None and train_trunk:
            self.ema.update()
        return {k: float(v) for k, v in metrics.items()} | {"lr": lrs[0]}

    # ------------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "trunk": self.trunk.state_dict(), "embeddings": self.embeddings.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.trunk.load_state_dict(state["trunk"])
        self.embeddings.load_state_dict(state["embeddings"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])

    def carry_state(self) -> dict[str, Any] | None:
        """This rank's ACT carry on the CPU, to resume mid-sequence exactly."""
        if self.carry is None:
            return None
        c = self.carry
        return {name: getattr(c, name).cpu() for name in CARRY_FIELDS} | {"data": {k: v.cpu() for k, v in c.data.items()}}

    def load_carry(self, states: list[dict[str, Any] | None], world_size: int, device: torch.device) -> None:
        """Restore this rank's rows from every saved rank's carry (concatenated in rank
        order they are the global batch, so the number of ranks may differ from the save)."""
        if any(s is None for s in states):
            self.carry = None
            return
        rows = self.global_batch_size // world_size
        part = slice(self.rank * rows, (self.rank + 1) * rows)
        cat = lambda tensors: torch.cat(tensors)[part].to(device)  # noqa: E731
        fields = {name: cat([s[name] for s in states]) for name in CARRY_FIELDS}
        data = {k: cat([s["data"][k] for s in states]) for k in states[0]["data"]}
        self.carry = Carry(**fields, data=data)


def all_reduce_gradients(model: TRM) -> None:
    """Sum the trunk's gradients over ranks (the loss is already divided by the global batch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def flops_per_example(config: ModelConfig) -> tuple[float, float]:
    """(training step, one ACT step forward) FLOPs per example: matmuls and attention of the
    H·(L+1) network calls; backward (2× forward) only through the last H cycle's L+1 calls.
    The paper config gives ≈ 398 and 239 GFLOP (DESIGN §5)."""
    tokens, hidden = config.seq_len + config.puzzle_tokens, config.hidden_size
    inner = -(round(config.expansion * hidden * 2 / 3) // -256) * 256
    block = 2 * tokens * (4 * hidden * hidden + 3 * inner * hidden) + 4 * tokens * tokens * hidden
    call = config.L_layers * block
    forward = config.H_cycles * (config.L_cycles + 1) * call
    return forward + 2 * (config.L_cycles + 1) * call, forward
