"""TRM-Planner Stage I's selection (seed 000, METHODS.md §2): K entries per example among its
rollout candidates by STABLEJS-MMR — first the highest score, then greedily the candidate c
maximising

    λ_sel·score~(c) + (1 − λ_sel)·min over selected s of d_JS(s, c)

with score~ min-max normalised within the example's candidates (0 for all when they tie) and
d_JS the mean over the supervised positions (label ≠ ignore; every candidate of an example
shares them) of the Jensen–Shannon divergence between the two candidates' StableMax
distributions (0 when no position is supervised).
"""

from __future__ import annotations

import torch

from trm_kaggle.losses import log_stablemax


def stablemax(logits: torch.Tensor) -> torch.Tensor:
    """StableMax distributions over the last axis, float64 (TRM's likelihood)."""
    return torch.exp(log_stablemax(logits.double()))


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ p·(log p − log q) over the last axis (0·log 0 = 0)."""
    return torch.where(p > 0, p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300))), 0).sum(-1)


def js_distances(logits: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
    """(R, R) float64: the mean over supervised positions of JS(StableMax(a) ‖ StableMax(b)) for
    every pair of the R candidates' logits (R, S, V); `supervised` (S,) bool."""
    probs = stablemax(logits[:, supervised])  # (R, M, V)
    if probs.shape[1] == 0:
        return torch.zeros(len(logits), len(logits), dtype=torch.float64)
    a, b = probs.unsqueeze(1), probs.unsqueeze(0)  # (R, 1, M, V), (1, R, M, V)
    mid = (a + b) / 2
    return (0.5 * kl_divergence(a, mid) + 0.5 * kl_divergence(b, mid)).mean(-1)


def select_mmr(scores: torch.Tensor, distances: torch.Tensor, keep: int, weight: float) -> list[int]:
    """Indices of `keep` candidates (at most all of them): scores (R,), distances (R, R),
    `weight` = λ_sel. Ties go to the lower index."""
    low, high = scores.min(), scores.max()
    normalised = (scores - low) / (high - low) if high > low else torch.zeros_like(scores)
    chosen = [int(torch.argmax(scores))]
    while len(chosen) < min(keep, len(scores)):
        diversity = distances[chosen].min(dim=0).values.to(normalised.dtype)
        value = weight * normalised + (1 - weight) * diversity
        value[chosen] = -torch.inf
        chosen.append(int(torch.argmax(value)))
    return chosen
