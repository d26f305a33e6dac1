"""TRM-Planner's Stage II (seed 000, METHODS.md §2): a student trained with the TRM loss plus
w·L_distill against a trm-teacher-cache.

Each time an example enters the ACT carry, one of its cached entries with teacher loss
ℓ ≤ q is drawn uniformly ("sample-one"; from the seed, the optimizer step and its global row,
so that DDP equals one process and a resume is exact: `TrainStep.draw`); it rides in the carry
while the example does. An example with no eligible entry is not distilled. The loss term
(losses.Distillation) then applies at every ACT step on the supervised positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trm_kaggle.config import DistillConfig
from trm_kaggle.errors import UserError
from trm_kaggle.losses import IGNORE_LABEL, KD_LOGITS, KD_TOKENS, Distillation
from trm_kaggle.planner.cache import dataset_fingerprint, read_manifest, shard_path

if TYPE_CHECKING:
    from trm_kaggle.train import TrainStep

KD_STREAM = 2  # TrainStep.draw's stream for the entry draws (0: halting, 1: DIS orders)


@dataclass
class TeacherEntries:
    """A whole cache in memory, by training example: tokens (N, K, S) uint8, loss (N, K)
    float32, and for soft KD the logits at supervised positions (packed as in the shards,
    `offsets` (N,) int64 the first row of each example's block; −inf outside a top-k)."""

    tokens: torch.Tensor
    loss: torch.Tensor
    supervised: torch.Tensor
    logits: torch.Tensor | None
    offsets: torch.Tensor
    teacher: str

    @classmethod
    def load(cls, cache: Path, data_dir: Path, vocab_size: int) -> "TeacherEntries":
        """UserError when the cache is incomplete or was built from another dataset."""
        manifest = read_manifest(cache)
        if not manifest.complete:
            raise UserError(f"{cache}: the cache is incomplete: run trm-teacher-cache again with the same "
                            "arguments to finish it")
        if manifest.dataset_sha256 != dataset_fingerprint(data_dir):
            raise UserError(f"{cache}: was built from another dataset ({manifest.data}), not {data_dir}")
        shards = [torch.load(shard_path(cache, c), weights_only=True) for c in range(manifest.chunks)]
        supervised = torch.cat([s["supervised"] for s in shards]).long()
        keep = manifest.settings["keep"]
        return cls(tokens=torch.cat([s["tokens"] for s in shards]), loss=torch.cat([s["loss"] for s in shards]),
                   supervised=supervised, logits=stored_logits(shards, vocab_size),
                   offsets=torch.cumsum(keep * supervised, 0) - keep * supervised, teacher=manifest.teacher)

    def entry_logits(self, example: int, entry: int) -> torch.Tensor:
        """(m, V) float32 logits of one entry at its example's m supervised positions."""
        m = int(self.supervised[example])
        start = int(self.offsets[example]) + entry * m
        return self.logits[start:start + m].float()


def stored_logits(shards: list[dict], vocab_size: int) -> torch.Tensor | None:
    """The shards' logits as (Σ K·m, V) rows: as stored, or rebuilt from a top-k store with
    −inf elsewhere; None for a tokens-only cache."""
    if "logits" in shards[0]:
        return torch.cat([s["logits"] for s in shards])
    if "topk_values" not in shards[0]:
        return None
    values = torch.cat([s["topk_values"] for s in shards]).float()
    indices = torch.cat([s["topk_indices"] for s in shards]).long()
    return torch.full((len(values), vocab_size), -torch.inf).scatter_(1, indices, values)


@dataclass
class Distiller:
    """Stage II for one run: the cache and the settings; `add_entries` is TrainStep's extras."""

    entries: TeacherEntries
    config: DistillConfig

    @classmethod
    def of(cls, config: DistillConfig, data_dir: Path, vocab_size: int) -> "Distiller":
        entries = TeacherEntries.load(Path(config.cache), data_dir, vocab_size)
        if config.mode == "soft" and entries.logits is None:
            raise UserError(f"{config.cache}: distill.mode=soft needs logits, and this cache holds tokens only "
                            "(build it with --logits supervised-bf16 or topk:K, or use distill.mode=hard)")
        return cls(entries, config)

    @property
    def term(self) -> Distillation:
        return Distillation(self.config.weight, self.config.mode, self.config.temperature)

    def choose(self, step_fn: "TrainStep", examples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(entry (B,) int64, has (B,) bool): one eligible entry per row, drawn uniformly."""
        known = examples >= 0  # a padding row (-1) has no example
        eligible = (self.entries.loss[examples.clamp_min(0)] <= self.config.quality) & known.unsqueeze(1)
        count = eligible.sum(1)
        draw = step_fn.draw(KD_STREAM, (), rows=len(examples))
        rank = (draw * count).long().clamp_max((count - 1).clamp_min(0))
        entry = ((eligible.cumsum(1) - 1 == rank.unsqueeze(1)) & eligible).float().argmax(1)
        return entry, count > 0

    def add_entries(self, step_fn: "TrainStep", batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The incoming batch with each row's teacher entry: KD_TOKENS (B, S) int64, the
        entry's tokens where supervised, IGNORE_LABEL elsewhere and for rows without one; with
        soft KD also KD_LOGITS (B, S, V) float32 (0 where unsupervised)."""
        examples = batch["example_index"].cpu()
        entry, has = self.choose(step_fn, examples)
        labels = batch["labels"].cpu()
        supervised = (labels != IGNORE_LABEL) & has.unsqueeze(1)
        tokens = self.entries.tokens[examples.clamp_min(0), entry].long()
        added = {KD_TOKENS: torch.where(supervised, tokens, IGNORE_LABEL)}
        if self.config.mode == "soft":
            logits = torch.zeros(*labels.shape, self.entries.logits.shape[-1])
            for row in has.nonzero().flatten().tolist():
                logits[row, labels[row] != IGNORE_LABEL] = self.entries.entry_logits(int(examples[row]), int(entry[row]))
            added[KD_LOGITS] = logits
        device = batch["inputs"].device
        return batch | {k: v.to(device) for k, v in added.items()}
