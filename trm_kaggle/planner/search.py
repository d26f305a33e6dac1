"""TRM-Planner Stage I's search (seed 000, METHODS.md §2): a frozen teacher unrolled on
training examples, ignoring its own halting, to find its best intermediate outputs.

Per example, R rollouts; each starts from the initial carry, and after every ACT step
Gaussian noise N(0, σ²) is added to z_H and z_L. A rollout is a beam over stop/continue (not
over tokens): every active element advances one ACT step and yields two candidates of the same
score, "continue" (stays active) and "halt" (frozen: carried on unchanged); the best K_b by
score are kept; after T_max rounds the rollout's candidate is its best element. The score is
label-aware, for offline use only:

    score(t) = α·exp(−ℓ_t) + β·sigmoid(q_halt_t) − λ·t

with ℓ_t the step's mean stablemax cross-entropy against the label over the supervised
positions. The cost is R·K_b·T_max teacher ACT steps per example at most (frozen elements
are not recomputed). All rollouts and beam states of a batch of examples run in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from trm_kaggle.losses import token_loss
from trm_kaggle.model import TRM, Batch


@dataclass(frozen=True)
class SearchSettings:
    rollouts: int = 8          # R
    beam: int = 4              # K_b
    max_steps: int = 16        # T_max
    noise: float = 0.02        # σ, on z_H and z_L after every ACT step
    alpha: float = 1.0         # α
    beta: float = 0.0          # β
    step_penalty: float = 0.01  # λ


def step_score(loss: torch.Tensor, q_halt: torch.Tensor, steps: torch.Tensor, s: SearchSettings) -> torch.Tensor:
    """α·exp(−ℓ) + β·sigmoid(q_halt) − λ·t, all (N,) -> (N,) float32."""
    return (s.alpha * torch.exp(-loss.float()) + s.beta * torch.sigmoid(q_halt.float())
            - s.step_penalty * steps.float())


@dataclass
class Beam:
    """K_b elements per rollout row, every field (N, K_b, ...): latents (…, P+S, D), ACT
    steps taken, frozen (halted) and alive (holds a state) flags, and for each element its
    last step's score, loss ℓ, q_halt and logits (…, S, V) float32."""

    z_H: torch.Tensor
    z_L: torch.Tensor
    steps: torch.Tensor
    frozen: torch.Tensor
    alive: torch.Tensor
    score: torch.Tensor
    loss: torch.Tensor
    q_halt: torch.Tensor
    logits: torch.Tensor

    def take(self, rows: torch.Tensor, slots: torch.Tensor) -> "Beam":
        """Element (rows[n, k], slots[n, k]) of every field: (N, K) index tensors."""
        return Beam(**{f.name: getattr(self, f.name)[rows, slots] for f in fields(self)})


def initial_beam(model: TRM, batch: Batch, width: int) -> Beam:
    """Slot 0 of every row holds the teacher's initial carry; the other slots are empty."""
    carry = model.initial_carry(batch)
    n, seq, vocab = batch["inputs"].shape[0], model.config.seq_len, model.config.vocab_size

    def slots(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(1).expand(n, width, *tensor.shape[1:]).clone()

    device = carry.z_H.device
    alive = torch.zeros(n, width, dtype=torch.bool, device=device)
    alive[:, 0] = True
    return Beam(z_H=slots(carry.z_H), z_L=slots(carry.z_L), steps=torch.zeros(n, width, dtype=torch.int32, device=device),
                frozen=torch.zeros_like(alive), alive=alive,
                score=torch.full((n, width), -torch.inf, device=device), loss=torch.zeros(n, width, device=device),
                q_halt=torch.zeros(n, width, device=device),
                logits=torch.zeros(n, width, seq, vocab, device=device))


@torch.inference_mode()
def advance(model: TRM, beam: Beam, batch: Batch, s: SearchSettings, generator: torch.Generator | None) -> Beam:
    """One round: every active element takes one ACT step (with noise on its latents); the
    pool of the advanced elements ("continue"), their halted copies and the frozen elements
    as they are is cut to the best K_b by score (ties: the earlier slot, continue first).
    `batch` holds one row per beam row (rollout): all its elements work on that example."""
    n, width = beam.score.shape
    active = beam.alive & ~beam.frozen
    rows, slots = active.nonzero(as_tuple=True)
    moved = replace(beam, **{f.name: getattr(beam, f.name).clone() for f in fields(beam)})
    if len(rows):
        data = {k: v[rows] for k, v in batch.items()}
        steps = beam.steps[rows, slots] + 1
        z_H, z_L, logits, q_halt, _ = model.step(beam.z_H[rows, slots], beam.z_L[rows, slots], data, steps)
        if s.noise:
            z_H = z_H + s.noise * torch.randn(z_H.shape, generator=generator, device="cpu").to(z_H)
            z_L = z_L + s.noise * torch.randn(z_L.shape, generator=generator, device="cpu").to(z_L)
        loss = token_loss(logits, data["labels"]).float()
        moved.z_H[rows, slots], moved.z_L[rows, slots], moved.steps[rows, slots] = z_H, z_L, steps
        moved.logits[rows, slots], moved.loss[rows, slots], moved.q_halt[rows, slots] = logits.float(), loss, q_halt
        moved.score[rows, slots] = step_score(loss, q_halt, steps, s)
    # The pool: slots 0..K-1 the elements as moved (continue, or frozen as they were), K..2K-1
    # the halted copies of the ones that moved.
    pool_score = torch.cat([torch.where(moved.alive, moved.score, -torch.inf),
                            torch.where(active, moved.score, -torch.inf)], dim=1)
    pool_alive = torch.cat([moved.alive, active], dim=1)
    order = torch.sort(pool_score, dim=1, descending=True, stable=True).indices[:, :width]  # (N, K)
    kept = moved.take(torch.arange(n, device=order.device).unsqueeze(1).expand(n, width), order % width)
    kept.frozen = kept.frozen | (order >= width)
    kept.alive = pool_alive.gather(1, order)
    kept.score = torch.where(kept.alive, kept.score, -torch.inf)
    return kept


@dataclass
class Candidates:
    """Each rollout's best element, (B, R, ...): ACT step t, score, loss ℓ, q_halt, logits (…, S, V)."""

    steps: torch.Tensor
    score: torch.Tensor
    loss: torch.Tensor
    q_halt: torch.Tensor
    logits: torch.Tensor


def search(model: TRM, batch: Batch, s: SearchSettings, generator: torch.Generator | None = None) -> Candidates:
    """The R rollout candidates of each of the batch's B examples (inputs, labels,
    puzzle_identifiers (B, ...)): all B·R rollouts run as one batch of B·R·K_b elements."""
    model.eval()
    examples = batch["inputs"].shape[0]
    rollouts = {k: v.repeat_interleave(s.rollouts, dim=0) for k, v in batch.items()}  # (B·R, ...)
    beam = initial_beam(model, rollouts, s.beam)
    for _ in range(s.max_steps):
        beam = advance(model, beam, rollouts, s, generator)
    best = torch.where(beam.alive, beam.score, -torch.inf).argmax(dim=1)  # (B·R,)
    rows = torch.arange(len(best), device=best.device)
    pick = {name: getattr(beam, name)[rows, best] for name in ("steps", "score", "loss", "q_halt", "logits")}
    return Candidates(**{k: v.view(examples, s.rollouts, *v.shape[1:]) for k, v in pick.items()})

