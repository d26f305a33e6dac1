"""The training loss: per-sequence terms (token cross-entropy, halting BCE) and the loss object
that sums them for one ACT step, as the original TRM's ACTLossHead computes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trm_kaggle.model import Carry

if TYPE_CHECKING:
    from trm_kaggle.dis import ImprovementTargets

IGNORE_LABEL = -100


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log of s(x)/Σs(x) with s(x) = x + 1 for x ≥ 0 and 1/(1 − x) below: a softmax whose
    tail decays polynomially, so confident logits never overflow or vanish."""
    s = torch.where(logits < 0, 1 / (1 - logits + 1e-30), logits + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token loss (0 where masked), computed in float64 as the original."""
    logprobs = log_stablemax(logits.double())
    picked = logprobs.gather(-1, torch.where(mask, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(mask, picked, 0)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean stablemax cross-entropy over its labelled tokens: (B, L, V) logits
    and (B, L) labels -> (B,) float64 (0 for a sequence without labels). TRM's `lm_loss`."""
    mask = labels != IGNORE_LABEL
    return (stablemax_cross_entropy(logits, labels, mask) / mask.sum(-1).clamp_min(1).unsqueeze(-1)).sum(-1)


def halting_loss(q_halt_logits: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Each sequence's binary cross-entropy of q_halt against "the answer is exactly right":
    (B,) logits and (B,) bool -> (B,) in the logits' dtype. TRM's `q_halt_loss`."""
    return F.binary_cross_entropy_with_logits(q_halt_logits, exact.to(q_halt_logits.dtype), reduction="none")


def step_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact (B,) bool, token accuracy (B,) float32) of one step's (B, L, V) logits against
    (B, L) labels; IGNORE_LABEL positions do not count (a row without labels is exact)."""
    mask = labels != IGNORE_LABEL
    correct = (mask & (logits.argmax(-1) == labels)).sum(-1)
    counted = mask.sum(-1)
    return correct == counted, correct.float() / counted.clamp_min(1)


@dataclass(frozen=True)
class ACTLoss:
    """The TRM's loss of one ACT step (the original's ACTLossHead with no_ACT_continue):
    loss = Σ_sequences token_loss + q_halt_weight · Σ_sequences halting_loss, where every
    sequence counts at every step.

    Called with the step's outputs and new carry, it returns (loss, metrics): the loss summed
    over the batch's rows (the trainer divides by the global batch), and metric sums, detached.
    Metric names say how to average them: `loss` (the total) and `*_loss` terms are sums over
    every row; `count` counts the rows that halted this step and have labels, and the other
    metrics (`accuracy`, `exact_accuracy`, `q_halt_accuracy`, `steps`) are sums over those.
    A new term (KD, DIS) is a new `*_loss` metric here; reports sum whatever terms exist.

    With `improvement` (Deep Improvement Supervision, dis.py) the loss is Σ_sequences w_s ·
    token_loss against the sequence's frame of its step s and no halting term (no q head is
    trained): `lm_loss` is that weighted sum; the metrics still score the final label.

    With `distillation` (TRM-Planner's Stage II, seed 000) w·Σ_sequences L_distill is added at
    every step: the `kd_loss` metric, against the teacher entry each sequence carries."""

    q_halt_weight: float = 0.5
    improvement: "ImprovementTargets | None" = None
    distillation: "Distillation | None" = None

    def __call__(self, outputs: dict[str, torch.Tensor], carry: Carry) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.improvement is not None:
            loss, metrics = self.improvement_loss(outputs["logits"], carry)
        else:
            loss, metrics = self.trm_loss(outputs, carry)
        if self.distillation is not None:
            kd = self.distillation.loss(outputs["logits"], carry.data).sum()
            loss = loss + self.distillation.weight * kd
            metrics |= {"kd_loss": kd.detach(), "loss": loss.detach()}
        return loss, metrics

    def trm_loss(self, outputs: dict[str, torch.Tensor], carry: Carry) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, q_halt, labels = outputs["logits"], outputs["q_halt_logits"], carry.data["labels"]
        exact, valid, metrics = halted_metrics(logits, labels, carry)
        metrics["q_halt_accuracy"] = (valid & ((q_halt >= 0) == exact)).sum()
        terms = {"lm_loss": token_loss(logits, labels).sum(), "q_halt_loss": halting_loss(q_halt, exact).sum()}
        loss = terms["lm_loss"] + self.q_halt_weight * terms["q_halt_loss"]
        return loss, metrics | {k: v.detach() for k, v in terms.items()} | {"loss": loss.detach()}

    def improvement_loss(self, logits: torch.Tensor, carry: Carry) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        targets = self.improvement
        frame = targets.step_frame(carry)
        loss = (targets.weight(carry.steps).double() * token_loss(logits, frame)).sum()
        _, _, metrics = halted_metrics(logits, carry.data["labels"], carry)
        return loss, metrics | {"lm_loss": loss.detach(), "loss": loss.detach()}


KD_TOKENS, KD_LOGITS = "kd_tokens", "kd_logits"  # carry.data keys: a row's teacher entry (planner/distill.py)


def hard_kd_loss(logits: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean stablemax cross-entropy against the teacher's tokens (B, L), which
    are IGNORE_LABEL where not supervised: (B, L, V) logits -> (B,) float64."""
    return token_loss(logits, teacher_tokens)


def soft_kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """T²·mean over each sequence's `mask` (B, L) positions of KL(StableMax(teacher/T) ‖
    StableMax(student/T)): (B, L, V) logits, both -> (B,) float64 (0 for a row without
    masked positions). A teacher logit of −inf (a class outside a top-k store) has
    probability 0. In StableMax space, TRM's likelihood (the early public code used softmax)."""
    teacher = log_stablemax(teacher_logits.double() / temperature)
    student = log_stablemax(logits.double() / temperature)
    p = teacher.exp()
    kl = torch.where(p > 0, p * (teacher - student), 0).sum(-1)  # (B, L)
    per_row = torch.where(mask, kl, 0).sum(-1) / mask.sum(-1).clamp_min(1)
    return temperature**2 * per_row


@dataclass(frozen=True)
class Distillation:
    """Stage II's term: `weight` w, `mode` hard (tokens) or soft (logits), `temperature` T."""

    weight: float = 0.25
    mode: str = "hard"
    temperature: float = 1.0

    def loss(self, logits: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) L_distill of the carried rows' teacher entries (0 for a row without one)."""
        tokens = data[KD_TOKENS]
        if self.mode == "hard":
            return hard_kd_loss(logits, tokens)
        return soft_kd_loss(logits, data[KD_LOGITS], tokens != IGNORE_LABEL, self.temperature)


@torch.no_grad()
def halted_metrics(logits: torch.Tensor, labels: torch.Tensor, carry: Carry
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(exact (B,), valid (B,): halted with labels, metric sums over the valid rows) of one step."""
    exact, token_accuracy = step_scores(logits, labels)
    valid = carry.halted & (labels != IGNORE_LABEL).any(-1)
    return exact, valid, {"count": valid.sum(), "accuracy": torch.where(valid, token_accuracy, 0).sum(),
                          "exact_accuracy": (valid & exact).sum(), "steps": torch.where(valid, carry.steps, 0).sum()}


def is_loss_sum(name: str) -> bool:
    """Whether a metric of ACTLoss is a sum over every row (`loss`, `*_loss`) rather than over
    the `count` rows that halted."""
    return name == "loss" or name.endswith("_loss")
