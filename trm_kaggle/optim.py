"""Optimizers, learning-rate schedule and weight averaging of the original TRM, in pure PyTorch.

- `AdamATan2` trains the trunk. It is the update of the `adam-atan2` package the original
  imports, whose CUDA extension must be compiled against the installed torch (and so often
  is not there on Kaggle): Adam with decoupled weight decay whose step is
  `atan2(m, √v)` instead of `m / (√v + ε)`, bounded and without an epsilon.
- `SignSGDEmbedding` trains the puzzle-embedding table, a buffer of which a batch touches a
  few rows: their gradients are summed per row over all ranks and the rows take a step of
  `lr·sign(g)`, which is what Adam amounts to on so sparse a gradient.
- `lr_at` / `set_lr`: linear warmup then cosine decay to `min_ratio·base_lr`, shared by both.
- `EMA`: the exponential moving average of the weights that evaluation uses.

Each optimizer step of a run:

    set_lr(optimizers, base_lrs, step, warmup_steps=..., total_steps=..., min_ratio=...)
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad()
    ema.update()

where `step` counts from 1 (see `lr_at`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import ParamsT


class AdamATan2(torch.optim.Optimizer):
    """Per tensor and step t (1-based), with bc1 = 1 − β1^t and bc2 = 1 − β2^t:

        p ← p·(1 − lr·wd);  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
        p ← p − (lr / bc1)·atan2(m, √v / √bc2)

    `lr` may be a float or a 0-dim tensor; it is read with `float()` every step, so a
    schedule may set `group["lr"]` freely (keep a tensor on the CPU: on a GPU that read waits
    for the device). Tensors without a gradient are skipped entirely: no decay, no state, and
    their step count does not advance. State per tensor: `step` (an int), `exp_avg`,
    `exp_avg_sq`, in the tensor's dtype; `state_dict()` holds all of it, so a loaded
    optimizer continues bit-identically. A plain loop over the tensors: torch has no
    `_foreach_atan2`, and the trunk has only a few dozen tensors.
    """

    def __init__(self, params: ParamsT, lr: float | torch.Tensor = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr ({lr}) and weight_decay ({weight_decay}) must not be negative")
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas {betas} must lie in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = float(group["lr"]), group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
                state["step"] += 1
                _adam_atan2_(param, param.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                             lr=lr, beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"])
        return loss


def _adam_atan2_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                 exp_avg_sq: torch.Tensor, step: int, *, lr: float, beta1: float, beta2: float,
                 weight_decay: float) -> None:
    """One AdamATan2 update of one tensor, in place, in the order of the package's reference
    implementation. atan2(0, 0) = 0, so a coordinate that never had a gradient stays put."""
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)
    param.add_(torch.atan2(exp_avg, denom), alpha=-lr / (1 - beta1 ** step))


class SparseEmbedding(Protocol):
    """What `SignSGDEmbedding` needs of the embedding (`layers.PuzzleEmbedding` is one)."""

    weights: torch.Tensor  # (num_ids, dim), a buffer updated in place
    local_weights: torch.Tensor | None  # (B, dim) leaf of the batch's rows; .grad after backward
    local_ids: torch.Tensor | None  # (B,) int64, the row of each local_weights row


class SignSGDEmbedding:
    """Sign-SGD with decoupled weight decay on the rows of `embedding.weights` that the last
    forward pass used; every other row stays bit-identical (no decay either, as the original).

    Not a `torch.optim.Optimizer`: what it updates is a buffer, not a parameter, and
    `local_weights` is a new tensor every forward pass, so there is nothing to register. It
    keeps the interface the training loop uses: `param_groups` (one group; `set_lr` writes
    its "lr"), `step()`, `zero_grad()`, `state_dict()` / `load_state_dict()`. It has no
    state beyond its hyper-parameters: the table itself is saved with the model.

    Under `torch.distributed` with more than one rank, `step()` gathers every rank's ids and
    gradients, so all ranks must call it together with the same batch size, and all apply
    the same update to their copy of the table (which is therefore never all-reduced).
    """

    def __init__(self, embedding: SparseEmbedding, lr: float | torch.Tensor = 1e-2,
                 weight_decay: float = 0.1):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr ({lr}) and weight_decay ({weight_decay}) must not be negative")
        self.embedding = embedding
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "weight_decay": weight_decay}]

    @torch.no_grad()
    def step(self) -> None:
        local = self.embedding.local_weights
        if local is None or local.grad is None or self.embedding.local_ids is None:
            return
        group = self.param_groups[0]
        ids = _gather_from_ranks(self.embedding.local_ids)  # (world·B,)
        grads = _gather_from_ranks(local.grad)  # (world·B, dim)
        _sign_sgd_rows_(self.embedding.weights, ids, grads, lr=float(group["lr"]),
                        weight_decay=group["weight_decay"])

    def zero_grad(self) -> None:
        if self.embedding.local_weights is not None:
            self.embedding.local_weights.grad = None

    def state_dict(self) -> dict[str, Any]:
        """In torch.optim's layout, so checkpoints treat every optimizer alike."""
        return {"state": {}, "param_groups": [dict(group) for group in self.param_groups]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != 1 or set(groups[0]) != set(self.param_groups[0]):
            raise ValueError(f"not a SignSGDEmbedding state: {groups}")
        self.param_groups = [dict(groups[0])]


def _gather_from_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` of every rank, concatenated along dim 0 in rank order; itself on one rank.
    The list form of all_gather works on gloo and NCCL in every torch this package takes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _sign_sgd_rows_(weights: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor, *,
                    lr: float, weight_decay: float) -> None:
    """row ← row·(1 − lr·wd) − lr·sign(Σ g) for each distinct id, the sum over all of that
    id's occurrences. weights: (num_ids, dim); ids: (N,); grads: (N, dim)."""
    rows, inverse = ids.unique(return_inverse=True)  # (U,), (N,)
    summed = grads.new_zeros(len(rows), grads.shape[1]).index_add_(0, inverse, grads)  # (U, dim)
    updated = weights[rows].mul_(1 - lr * weight_decay).add_(summed.sign().to(weights.dtype), alpha=-lr)
    weights.index_copy_(0, rows, updated)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The learning rate of optimizer step `step`, counted from 1: the original increments
    its step counter before computing the rate, so its first update uses base_lr/warmup and
    step `warmup_steps` is the first at the full rate. After warmup the rate follows
    `min_ratio + (1 − min_ratio)·½(1 + cos πp)` of base_lr, p the fraction of the remaining
    steps done, clamped to [0, 1] (the original's would rise again past total_steps)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizers: Sequence[torch.optim.Optimizer | SignSGDEmbedding], base_lrs: Sequence[float],
           step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> list[float]:
    """Set every group of each optimizer to `lr_at(step, its base lr, ...)`; the rates, for
    logging."""
    if len(optimizers) != len(base_lrs):
        raise ValueError(f"{len(optimizers)} optimizers but {len(base_lrs)} base learning rates")
    lrs = [lr_at(step, base_lr, warmup_steps, total_steps, min_ratio) for base_lr in base_lrs]
    for optimizer, lr in zip(optimizers, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
    return lrs


class EMA:
    """A float32 exponential moving average of a module's trainable parameters, and of the
    buffers named in `buffers` (the original averages only parameters, so its EMA model keeps
    the live puzzle table; pass "…puzzle_emb.weights" to average that too).

    `update()` after each optimizer step does `shadow ← decay·shadow + (1 − decay)·tensor`,
    the original EMAHelper's rule with mu = decay, starting from the weights at construction.
    Build it after the module is on its device: the averages stay where they were created.
    Tensors are looked up by name on each call, since `.to()` replaces buffer tensors.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, buffers: Iterable[str] = ()):
        if not 0 <= decay <= 1:
            raise ValueError(f"decay {decay} must lie in [0, 1]")
        self.module, self.decay = module, decay
        names = [name for name, param in module.named_parameters() if param.requires_grad] + list(buffers)
        self.shadow: dict[str, torch.Tensor] = {
            name: tensor.detach().to(torch.float32, copy=True)
            for name, tensor in zip(names, _named_tensors(module, names))}

    @torch.no_grad()
    def update(self) -> None:
        shadows = list(self.shadow.values())
        torch._foreach_mul_(shadows, self.decay)
        torch._foreach_add_(shadows, _named_tensors(self.module, self.shadow), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module | None = None) -> None:
        """Write the averages into `module` (by default the tracked one), cast to its dtypes;
        e.g. into a copy of the model that is then saved or packaged."""
        for target, average in zip(_named_tensors(module or self.module, self.shadow), self.shadow.values()):
            target.copy_(average)

    @contextmanager
    def swapped_in(self) -> Iterator[nn.Module]:
        """The tracked module with the averages in place of its weights, for evaluation in the
        middle of training without a second copy of the model; the live weights come back
        bit for bit on exit, also when the block raises."""
        live = [tensor.detach().clone() for tensor in _named_tensors(self.module, self.shadow)]
        self.copy_to()
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for target, saved in zip(_named_tensors(self.module, self.shadow), live):
                    target.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        """The decay and the averages (the tensors themselves, as nn.Module.state_dict)."""
        return {"decay": self.decay, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copied into this EMA's own tensors, which keeps their device and shares nothing
        with `state_dict`; the names must be exactly those tracked here."""
        shadow = state_dict["shadow"]
        if set(shadow) != set(self.shadow):
            missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
            raise ValueError(f"EMA state does not match the tracked tensors: missing {missing}, "
                             f"unexpected {unexpected}")
        self.decay = state_dict["decay"]
        for name, average in self.shadow.items():
            average.copy_(shadow[name])


def _named_tensors(module: nn.Module, names: Iterable[str]) -> list[torch.Tensor]:
    """Parameters and buffers of `module` by name, in the order of `names`."""
    found = dict(module.named_parameters()) | dict(module.named_buffers())
    missing = [name for name in names if name not in found]
    if missing:
        raise KeyError(f"module has no parameter or buffer named {missing}")
    return [found[name] for name in names]
