"""Stablemax cross-entropy and the ACT loss head, as the original TRM computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def act_loss(logits: torch.Tensor, q_halt_logits: torch.Tensor, labels: torch.Tensor,
             halted: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one ACT step and its metrics (sums over the batch; divide by counts).

    loss = Σ_sequences mean token loss over non-ignored labels + 0.5 · Σ BCE(q_halt, exact),
    where `exact` means every non-ignored token is right. Every sequence counts in the loss
    at every step; metrics count only sequences that halted this step and have labels.
    """
    mask = labels != IGNORE_LABEL
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1).unsqueeze(-1)
    with torch.no_grad():
        correct = mask & (logits.argmax(-1) == labels)
        exact = correct.sum(-1) == counts
        valid = halted & (counts > 0)
        metrics = {
            "count": valid.sum(),
            "accuracy": torch.where(valid, (correct.float() / divisor).sum(-1), 0).sum(),
            "exact_accuracy": (valid & exact).sum(),
            "q_halt_accuracy": (valid & ((q_halt_logits >= 0) == exact)).sum(),
            "steps": torch.where(valid, steps, 0).sum(),
        }
    lm_loss = (stablemax_cross_entropy(logits, labels, mask) / divisor).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt_logits, exact.to(q_halt_logits.dtype), reduction="sum")
    metrics |= {"lm_loss": lm_loss.detach(), "q_halt_loss": q_halt_loss.detach()}
    return lm_loss + 0.5 * q_halt_loss, metrics
