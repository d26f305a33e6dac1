"""The training loss: per-sequence terms (token cross-entropy, halting BCE) and the loss object
that sums them for one ACT step, as the original TRM's ACTLossHead computes it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trm_kaggle.model import Carry

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
    A new term (KD, DIS) is a new `*_loss` metric here; reports sum whatever terms exist."""

    q_halt_weight: float = 0.5

    def __call__(self, outputs: dict[str, torch.Tensor], carry: Carry) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, q_halt, labels = outputs["logits"], outputs["q_halt_logits"], carry.data["labels"]
        with torch.no_grad():
            exact, token_accuracy = step_scores(logits, labels)
            valid = carry.halted & (labels != IGNORE_LABEL).any(-1)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, token_accuracy, 0).sum(),
                "exact_accuracy": (valid & exact).sum(),
                "q_halt_accuracy": (valid & ((q_halt >= 0) == exact)).sum(),
                "steps": torch.where(valid, carry.steps, 0).sum(),
            }
        terms = {"lm_loss": token_loss(logits, labels).sum(), "q_halt_loss": halting_loss(q_halt, exact).sum()}
        loss = terms["lm_loss"] + self.q_halt_weight * terms["q_halt_loss"]
        return loss, metrics | {k: v.detach() for k, v in terms.items()} | {"loss": loss.detach()}


def is_loss_sum(name: str) -> bool:
    """Whether a metric of ACTLoss is a sum over every row (`loss`, `*_loss`) rather than over
    the `count` rows that halted."""
    return name == "loss" or name.endswith("_loss")
