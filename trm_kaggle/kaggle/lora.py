"""LoRA on the trunk's linear layers, for the `lora` fine-tuning mode.

Each `layers.Linear` of the recursive block and the LM head becomes `W x + (α/r)·B A x`
with W frozen, A (r × in) small random and B (out × r) zero, so training starts exactly at
the packaged model. `merged_state_dict` folds B A into W and gives the plain TRM names, so
the fine-tuned model is saved, loaded and predicted with like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trm_kaggle.layers import Linear
from trm_kaggle.model import TRM


class LoRALinear(nn.Module):
    def __init__(self, base: Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        out_features, in_features = base.weight.shape
        self.lora_A = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = (x @ self.lora_A.to(x.dtype).T) @ self.lora_B.to(x.dtype).T  # (..., out)
        return self.base(x) + self.scale * low_rank

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * (self.lora_B @ self.lora_A).to(self.base.weight.dtype)


def add_lora(model: TRM, rank: int, alpha: float | None = None) -> list[nn.Parameter]:
    """Wrap the trunk's linear layers in place; freeze every other trunk parameter.
    Returns the LoRA parameters (what the trunk optimizer and the EMA train)."""
    for param in model.parameters():
        param.requires_grad_(False)
    targets = [(parent, name) for parent in [*model.L_level.modules(), model]
               for name, child in parent.named_children() if isinstance(child, Linear) and name != "q_head"]
    for parent, name in targets:
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha or rank))
    return [p for p in model.parameters() if p.requires_grad]


def merged_state_dict(model: TRM) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA layer folded into its base weight, in the plain
    TRM's names (what checkpoint.load_weights expects)."""
    state = {}
    lora_prefixes = {f"{name}.": module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    for key, value in model.state_dict().items():
        prefix = next((p for p in lora_prefixes if key.startswith(p)), None)
        if prefix is None:
            state[key] = value
        elif key == f"{prefix}base.weight":
            state[f"{prefix}weight"] = lora_prefixes[prefix].merged_weight().detach()
        elif key.startswith(f"{prefix}base."):
            state[prefix + key.removeprefix(f"{prefix}base.")] = value
    return state
