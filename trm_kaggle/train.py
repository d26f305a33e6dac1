"""One training step of the TRM, shared by pretraining and test-time fine-tuning.

As the original: each call runs ONE ACT step over the carried batch (rows that halted are
replaced by the incoming batch's rows), the loss is divided by the global batch size before
backward, trunk gradients are all-reduced across ranks, both optimizers share the LR
schedule, and the EMA follows every step.

Unlike the original, the halting-exploration draws come from (seed, step, global row), not
from each rank's RNG, so a run gives the same weights on any number of ranks.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist

from trm_kaggle import distributed
from trm_kaggle.config import DISConfig, OptimConfig
from trm_kaggle.dis import ImprovementTargets
from trm_kaggle.errors import NonFiniteError
from trm_kaggle.losses import ACTLoss
from trm_kaggle.model import TRM, Batch, Carry
from trm_kaggle.optim import EMA, AdamATan2, SignSGDEmbedding, set_lr

if TYPE_CHECKING:
    from trm_kaggle.planner.distill import Distiller

CARRY_FIELDS = ("z_H", "z_L", "steps", "halted")
STREAM_STRIDE = 0x9E3779B97F4A7C15  # separates the random streams of one step (golden ratio · 2^64)
log = logging.getLogger(__name__)


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

    @classmethod
    def of(cls, optim: OptimConfig, total_steps: int = 100_000, embeddings_only_steps: int = 0) -> "Schedule":
        """The schedule of a config's optimizer settings, for a run of `total_steps` steps."""
        return cls(lr=optim.lr, puzzle_emb_lr=optim.puzzle_emb_lr, warmup_steps=optim.lr_warmup_steps,
                   total_steps=total_steps, min_ratio=optim.lr_min_ratio, weight_decay=optim.weight_decay,
                   puzzle_emb_weight_decay=optim.puzzle_emb_weight_decay, betas=(optim.beta1, optim.beta2),
                   embeddings_only_steps=embeddings_only_steps)


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
    micro_batches: int = 1  # pieces each rank's batch runs in, gradients accumulated (more after a CUDA OOM)
    before_forward: Callable[[int], None] | None = None  # called with each piece's rows (fault injection)
    loss: Callable = field(default_factory=ACTLoss)  # (outputs, carry) -> (loss summed over rows, metric sums)
    # Adds per-example tensors to each incoming batch (keyed by its example_index, drawn with
    # `draw`); they enter the carry with their example and stay while it does.
    extras: Callable[["TrainStep", Batch], Batch] | None = None
    trunk: AdamATan2 = field(init=False)
    embeddings: SignSGDEmbedding = field(init=False)
    frozen: list[torch.nn.Parameter] = field(init=False, default_factory=list)  # trunk, during embeddings-only steps

    def __post_init__(self) -> None:
        s = self.schedule
        self.trunk = AdamATan2(self.model.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        self.embeddings = SignSGDEmbedding(self.model.puzzle_emb, lr=s.puzzle_emb_lr,
                                           weight_decay=s.puzzle_emb_weight_decay)

    def replan(self, total_steps: int, embeddings_only_steps: int) -> None:
        """Set the schedule's length once it is known (test-time fine-tuning plans its steps
        after timing a few)."""
        self.schedule = dataclasses.replace(self.schedule, total_steps=max(total_steps, 1),
                                            embeddings_only_steps=embeddings_only_steps)

    def probe(self, batch: Batch, train_trunk: bool) -> None:
        """Forward and backward of one training step over `batch`, leaving no trace: weights,
        optimizer, step, carry and gradients as they were (timing a step, trying the
        compiled forward). Trunk gradients only with `train_trunk`, as a real step."""
        self.model.train()
        self.freeze_trunk(not train_trunk)
        if self.extras is not None:  # reads the step only: no state changes
            batch = self.extras(self, batch)
        self.forward_backward(self.carry or self.model.initial_carry(batch), batch)
        self.trunk.zero_grad(set_to_none=True)
        self.embeddings.zero_grad()

    def use_eager(self) -> None:
        """Run the model itself from now on (a compiled forward that failed)."""
        self.forward = None
        self.trunk.zero_grad(set_to_none=True)
        self.embeddings.zero_grad()

    def draw(self, stream: int, shape: tuple[int, ...], rows: int) -> torch.Tensor:
        """This rank's `rows` rows of the coming step's uniform [0, 1) draws for the whole
        global batch, (rows, *shape) float32 on the CPU, from (seed, step, stream) alone: the
        same numbers on any number of ranks and after a resume. Stream 0 is the halting
        exploration's; a per-example extra (a DIS target order, a KD entry) takes its own."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.step + stream * STREAM_STRIDE) % 2**63)
        draws = torch.rand(self.global_batch_size, *shape, generator=generator)
        return draws[self.rank * rows:(self.rank + 1) * rows]

    def halting_noise(self, rows: int, device: torch.device) -> torch.Tensor:
        """This rank's slice of the global batch's exploration draws for the coming step."""
        return self.draw(0, (2,), rows).to(device)

    def __call__(self, batch: Batch, train_trunk: bool | None = None) -> dict[str, float]:
        """One ACT step and one optimizer step. The trunk trains unless `train_trunk` is
        False or the schedule's embeddings-only phase is on."""
        if train_trunk is None:
            train_trunk = self.step >= self.schedule.embeddings_only_steps
        self.model.train()
        self.freeze_trunk(not train_trunk)
        rows = batch["inputs"].shape[0]
        if self.extras is not None:
            batch = self.extras(self, batch)
        if self.carry is None:
            self.carry = self.model.initial_carry(batch)
        self.carry, loss, metrics = self.forward_backward(self.carry, batch,
                                                          self.halting_noise(rows, batch["inputs"].device))
        all_reduce_gradients(self.model)
        grad_norm = trunk_grad_norm(self.model)
        self.check_finite(loss, grad_norm)
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
        lr_trunk, lr_puzzle_emb = (lrs[0], lrs[1]) if train_trunk else (0.0, lrs[0])
        return {k: float(v) for k, v in metrics.items()} | {"lr_trunk": lr_trunk, "lr_puzzle_emb": lr_puzzle_emb,
                                                            "grad_norm": float(grad_norm)}

    def freeze_trunk(self, freeze: bool) -> None:
        """Embeddings-only steps: the trainable trunk parameters get `requires_grad=False`, so
        backward computes (and all-reduces) no trunk gradient at all, only the puzzle rows'
        (the original computed and discarded them). Exactly those parameters are restored at
        the first trunk step; ones frozen for other reasons (LoRA's base weights) stay frozen."""
        if freeze and not self.frozen:
            self.frozen = [p for p in self.model.parameters() if p.requires_grad]
            for p in self.frozen:
                p.requires_grad_(False)
        elif not freeze and self.frozen:
            for p in self.frozen:
                p.requires_grad_(True)
            self.frozen = []

    def forward_backward(self, carry: Carry, batch: Batch, noise: torch.Tensor | None = None
                         ) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor]]:
        """One ACT step's forward and backward over this rank's rows: the new carry, the loss
        (summed over rows, detached) and the metric sums. Gradients accumulate in `.grad`
        (the loss is divided by the global batch size).

        On a CUDA out-of-memory error the gradients so far are dropped and the rows run again
        in twice as many micro-batches, until they fit or each holds one row (then the error
        is raised). Every op is row-wise, so k micro-batches give the update of one batch
        (up to float summation order) and the same carry; the count is kept for later steps."""
        rows = batch["inputs"].shape[0]
        while True:
            try:
                return self.accumulate(carry, batch, noise, min(self.micro_batches, rows))
            except torch.cuda.OutOfMemoryError:
                self.model.zero_grad(set_to_none=True)
                self.embeddings.zero_grad()
                if self.micro_batches >= rows:
                    raise
                self.micro_batches = min(rows, 2 * self.micro_batches)
                log.warning("CUDA out of memory in a training step of %d rows: now %d micro-batches of ~%d rows",
                            rows, self.micro_batches, -(-rows // self.micro_batches))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def accumulate(self, carry: Carry, batch: Batch, noise: torch.Tensor | None, pieces: int
                   ) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor]]:
        """forward_backward in `pieces` row ranges; the puzzle rows' gradients of every piece
        are handed to the embedding optimizer together, as one batch would."""
        forward = self.model if self.forward is None else self.forward
        bounds = torch.linspace(0, batch["inputs"].shape[0], pieces + 1).round().long().tolist()
        carries, losses, sums, emb_parts = [], [], {}, []
        for start, end in zip(bounds[:-1], bounds[1:]):
            part = slice(start, end)
            if self.before_forward is not None:
                self.before_forward(end - start)
            sub = carry if pieces == 1 else carry_rows(carry, part)
            new, out = forward(sub, batch if pieces == 1 else {k: v[part] for k, v in batch.items()},
                               None if noise is None else noise[part])
            loss, metrics = self.loss(out, new)
            (loss / self.global_batch_size).backward()
            carries.append(new)
            losses.append(loss.detach())
            sums = {k: sums.get(k, 0) + v for k, v in metrics.items()}
            emb_parts.append(self.model.puzzle_emb.take_local_gradients())
        if pieces > 1:
            self.model.puzzle_emb.set_local_gradients(emb_parts)
        return (carries[0] if pieces == 1 else concat_carries(carries)), sum(losses), sums

    def check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Stop before an update that would put NaN or inf into the weights: every rank stops
        together (a rank that stopped alone would leave its peers waiting in a collective),
        with the gradients cleared and the weights as the previous step left them.
        Raises NonFiniteError."""
        bad = not bool((torch.isfinite(loss) & torch.isfinite(grad_norm)).item())
        if distributed.any_rank(bad, loss.device):
            self.trunk.zero_grad(set_to_none=True)
            self.embeddings.zero_grad()
            raise NonFiniteError(f"step {self.step + 1}: loss {loss.item():.4g}, trunk gradient norm "
                                 f"{grad_norm.item():.4g} (on rank {self.rank}): not finite, the run diverged "
                                 "(lower the learning rate); the step was not applied")

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
        return None if self.carry is None else vars(map_carry(self.carry, torch.Tensor.cpu))

    def load_carry(self, states: list[dict[str, Any] | None], world_size: int, device: torch.device) -> None:
        """Restore this rank's rows from every saved rank's carry (concatenated in rank
        order they are the global batch, so the number of ranks may differ from the save)."""
        if any(s is None for s in states):
            self.carry = None
            return
        rows = self.global_batch_size // world_size
        part = slice(self.rank * rows, (self.rank + 1) * rows)
        whole = concat_carries([Carry(**state) for state in states])
        self.carry = map_carry(whole, lambda tensor: tensor[part].to(device))


def build_train_step(model: TRM, schedule: Schedule, global_batch_size: int, world: distributed.Dist, *,
                     seed: int = 0, ema_rate: float | None = None, compile: bool = False,
                     before_forward: Callable[[int], None] | None = None,
                     dis: DISConfig | None = None, distiller: "Distiller | None" = None) -> TrainStep:
    """The one way pretraining and test-time fine-tuning set up training: `model` (on
    `world.device`, with what should train already `requires_grad`) → EMA of those weights
    (`ema_rate`; None: no EMA) → torch.compile on CUDA (`compile`) → a TrainStep for this
    rank's slice of each global batch, with the loss of the model's objective: TRM's, or for a
    DIS model improvement targets (`dis`'s settings, default DISConfig()) and their orders
    drawn as each example enters the carry; with a `distiller` (TRM-Planner Stage II) plus the
    distillation term against the teacher entry each example carries."""
    ema = EMA(model, ema_rate) if ema_rate is not None else None
    compiled = torch.compile(model) if compile and world.device.type == "cuda" else None
    step = TrainStep(model, schedule, global_batch_size, ema, seed, world.rank, compiled,
                     before_forward=before_forward)
    extras, targets = [], None
    if model.config.objective == "dis":
        targets = ImprovementTargets.of(dis or DISConfig(), model.config.halt_max_steps)
        extras.append(targets.add_orders)
    if distiller is not None:
        extras.append(distiller.add_entries)
    step.loss = ACTLoss(improvement=targets, distillation=distiller.term if distiller else None)
    if extras:
        step.extras = chain_extras(extras)
    return step


def chain_extras(extras: list[Callable[[TrainStep, Batch], Batch]]) -> Callable[[TrainStep, Batch], Batch]:
    """One `extras` hook that applies each in turn (each adds its own keys)."""
    def added(step: TrainStep, batch: Batch) -> Batch:
        for extra in extras:
            batch = extra(step, batch)
        return batch
    return added


def map_carry(carry: Carry, fn: Callable[[torch.Tensor], torch.Tensor]) -> Carry:
    """`fn` applied to every tensor of a carry: latents, counters, flags and the batch rows."""
    return Carry(**{name: fn(getattr(carry, name)) for name in CARRY_FIELDS},
                 data={k: fn(v) for k, v in carry.data.items()})


def carry_rows(carry: Carry, rows: slice) -> Carry:
    return map_carry(carry, lambda tensor: tensor[rows])


def concat_carries(carries: list[Carry]) -> Carry:
    return Carry(**{name: torch.cat([getattr(c, name) for c in carries]) for name in CARRY_FIELDS},
                 data={k: torch.cat([c.data[k] for c in carries]) for k in carries[0].data})


def all_reduce_gradients(model: TRM) -> None:
    """Sum the trunk's gradients over ranks (the loss is already divided by the global batch)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def trunk_grad_norm(model: TRM) -> torch.Tensor:
    """The L2 norm of every trunk gradient together (a 0-dim float32 tensor; 0 when the trunk
    is frozen). The puzzle table is a buffer and has no `.grad`; its rows' gradients are
    covered by the loss check."""
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in model.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros((), device=model.H_init.device)
    return torch.linalg.vector_norm(torch.stack(norms))

