"""Deep Improvement Supervision's intermediate targets (seed 001, METHODS.md §1).

Step s (1..N_sup) of a DIS model is supervised with frame s of a path from the input x0
(frame 0) to the label x1 (frame N_sup). D = the positions where x0 and x1 differ; each time
an example enters the ACT carry, a random order of D is drawn for it (from the seed, the
optimizer step and its global row: the same on any number of ranks and after a resume, see
`TrainStep.draw`), and frame k replaces the first ⌊k·|D|/N_sup⌋ positions of that order:

- `path` (the DIS code's `batch_corrupt_linear_path_v2`): the label there, the input
  elsewhere. A replaced position whose label is IGNORE_LABEL (padding) is not supervised.
- `masking` (the paper's "masking with a linearly decreasing mask rate"): the label there and
  outside D; the rest of D — a share 1 − k/N_sup of it — is not supervised at all.

Each step's loss is weighted: `linear` (the paper, which gives no constants; we take
w_s = 2s/(N_sup + 1), so that the weights' mean is 1 as uniform's) or `uniform` (the code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from trm_kaggle.losses import IGNORE_LABEL

if TYPE_CHECKING:
    from trm_kaggle.config import DISConfig
    from trm_kaggle.model import Carry
    from trm_kaggle.train import TrainStep

ORDER = "dis_order"  # carry.data key: each position's place in its example's order of D
ORDER_STREAM = 1     # TrainStep.draw's stream for the orders (0 is the halting exploration's)


def path_order(inputs: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Each position's place (0-based) in a random order of D = {inputs ≠ labels}, seq_len for
    positions outside D: inputs, labels (B, S) int, draws (B, S) uniform [0, 1) -> (B, S) int32."""
    differ = inputs.long() != labels.long()
    keys = torch.where(differ, draws.to(inputs.device), torch.inf)
    place = torch.argsort(torch.argsort(keys, dim=-1), dim=-1)
    return torch.where(differ, place, inputs.shape[-1]).to(torch.int32)


@dataclass(frozen=True)
class ImprovementTargets:
    """The targets and step weights of a DIS run with N_sup = `n_sup` steps."""

    n_sup: int
    targets: Literal["path", "masking"] = "path"
    step_weights: Literal["linear", "uniform"] = "linear"

    @classmethod
    def of(cls, config: "DISConfig", n_sup: int) -> "ImprovementTargets":
        return cls(n_sup, config.targets, config.step_weights)

    def frame(self, inputs: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Frame `k` (B,) int of each row: (B, S) labels for the step loss, IGNORE_LABEL where
        nothing is supervised. inputs, labels (B, S); order (B, S) from `path_order`."""
        differ = order < inputs.shape[-1]
        replaced = (k.long().clamp(0, self.n_sup) * differ.sum(-1)) // self.n_sup  # (B,)
        done = order < replaced.unsqueeze(-1)
        labels = labels.long()
        if self.targets == "path":
            return torch.where(done | ~differ, labels, inputs.long())
        return torch.where(done | ~differ, labels, IGNORE_LABEL)

    def step_frame(self, carry: "Carry") -> torch.Tensor:
        """The frame each carried row's step (carry.steps, 1..N_sup) is supervised with: (B, S)."""
        data = carry.data
        return self.frame(data["inputs"], data["labels"], data[ORDER], carry.steps)

    def weight(self, steps: torch.Tensor) -> torch.Tensor:
        """(B,) float32 loss weight of each row's step s (B,) int, 1..N_sup."""
        if self.step_weights == "uniform":
            return torch.ones(steps.shape, device=steps.device)
        return 2 * steps.float() / (self.n_sup + 1)

    def add_orders(self, step_fn: "TrainStep", batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """TrainStep's `extras`: the incoming batch with each row's order of D (ORDER), drawn
        for (seed, step, global row); a row keeps it while it stays in the carry."""
        draws = step_fn.draw(ORDER_STREAM, (batch["inputs"].shape[-1],), rows=batch["inputs"].shape[0])
        return batch | {ORDER: path_order(batch["inputs"], batch["labels"], draws)}
