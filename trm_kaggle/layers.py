"""The TRM's building blocks, named as the original's so its state_dicts load by a prefix
rename (`embedding_weight`, `qkv_proj`, `gate_up_proj`, `weights`, ...).

Weights stay float32 and are cast to the activations' dtype where they are used (bf16 on
GPU), as the original does; norms and RoPE compute in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Fill with a normal truncated at ±bound·σ whose standard deviation after truncation
    is `std` (JAX's convention, the original's init; torch's trunc_normal_ is not)."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        pdf = math.exp(-0.5 * bound**2) / math.sqrt(2 * math.pi)
        mass = math.erf(bound / math.sqrt(2))
        truncated_var = 1 - 2 * bound * pdf / mass
        scale = std / math.sqrt(truncated_var)
        tensor.uniform_(-mass, mass).erfinv_().mul_(math.sqrt(2) * scale)
        return tensor.clamp_(-bound * scale, bound * scale)


class Linear(nn.Module):
    """Bias-optional linear layer with LeCun-normal init, cast to the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), 1 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class Embedding(nn.Module):
    def __init__(self, num: int, dim: int, std: float, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(num, dim), std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.dtype))


class PuzzleEmbedding(nn.Module):
    """One vector per puzzle identifier, in a buffer (not a Parameter) trained by sign-SGD
    on the rows a batch uses. In training the forward pass hands out `local_weights`, a
    leaf copy of the batch's rows that collects their gradients, with `local_ids`;
    `optim.SignSGDEmbedding` applies them to `weights`."""

    def __init__(self, num: int, dim: int, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.register_buffer("weights", torch.zeros(num, dim))  # zero init, as the original
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids.long()]
        if not (self.training and torch.is_grad_enabled()):
            return rows.to(self.dtype)
        self.local_ids = ids.long()
        self.local_weights = rows.detach().requires_grad_(True)
        return self.local_weights.to(self.dtype)

    def take_local_gradients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(ids, rows, their gradients) of the last training forward, for a micro-batch."""
        if self.local_weights is None or self.local_ids is None:
            return None
        return self.local_ids, self.local_weights.detach(), self.local_weights.grad

    def set_local_gradients(self, parts: list) -> None:
        """The micro-batches' rows and gradients as if one forward pass had used them all
        (what `optim.SignSGDEmbedding.step` reads)."""
        parts = [p for p in parts if p is not None]
        if not parts:
            return
        self.local_ids = torch.cat([ids for ids, _, _ in parts])
        self.local_weights = torch.cat([rows for _, rows, _ in parts]).requires_grad_(True)
        if all(grad is not None for _, _, grad in parts):
            self.local_weights.grad = torch.cat([grad for _, _, grad in parts])


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a weight, in float32."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotate-half RoPE over every position, float32, not saved."""

    def __init__(self, head_dim: int, positions: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, head_dim); rotated in float32, returned in x's dtype."""
    x32 = x.float()
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with one fused, bias-free qkv projection."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.qkv_proj = Linear(hidden_size, 3 * hidden_size)
        self.o_proj = Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = self.qkv_proj(x).view(batch, seq, 3, self.num_heads, self.head_dim).unbind(2)
        if rope is not None:
            q, k = apply_rope(q, rope.cos_cached, rope.sin_cached), apply_rope(k, rope.cos_cached, rope.sin_cached)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, hidden))


def swiglu_width(hidden_size: int, expansion: float) -> int:
    """The original's inner width: round(expansion·hidden·2/3) rounded up to a multiple of 256."""
    return -(round(expansion * hidden_size * 2 / 3) // -256) * 256


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inner = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = Linear(hidden_size, 2 * inner)
        self.down_proj = Linear(inner, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block: h = rms(h + attn(h)); h = rms(h + mlp(h))."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, eps: float):
        super().__init__()
        self.self_attn = Attention(hidden_size, num_heads)
        self.mlp = SwiGLU(hidden_size, expansion)
        self.eps = eps

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        x = rms_norm(x + self.self_attn(x, rope), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class ReasoningModule(nn.Module):
    """The one shared network of the recursion: f(h, injection) = layers(h + injection)."""

    def __init__(self, layers: list[Block]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h: torch.Tensor, injection: torch.Tensor, rope: RotaryEmbedding | None) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, rope)
        return h
