"""The Tiny Recursive Model with adaptive computation time (ACT V1), as the original TRM.

One ACT step: embed the tokens (and prepend the puzzle embedding as `puzzle_tokens`
positions), then recurse with one shared 2-layer network f: (H_cycles − 1) cycles without
grad and one with, each `L_cycles × z_L = f(z_L, z_H + x)` then `z_H = f(z_H, z_L)`. The
answer is `lm_head(z_H)` on the grid positions; `q_head(z_H[:, 0])` says whether to halt.

The ACT carry lets a batch hold sequences at different steps: a halted sequence is replaced
by the incoming batch's row and restarts from the init states. In eval every sequence runs
exactly `halt_max_steps` steps.

With `objective="dis"` (Deep Improvement Supervision, seed 001, METHODS.md §1) the same model
runs N_sup = `halt_max_steps` steps in training too (no halting head, no exploration), adds
a learned embedding of the step index t = 1..N_sup to every position of its input, and with
`dis_token_input="previous"` takes the previous step's argmax prediction as the token input
of steps 2..N_sup (the DIS code's `ACTV5`).

State-dict names equal the original's below `model.inner.` (see checkpoint.py).

Shapes: B batch rows, S = seq_len grid tokens (900: a 30×30 canvas), P = puzzle_tokens
positions in front of them, D = hidden_size, V = vocab_size, E = puzzle_emb_ndim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trm_kaggle.config import ModelConfig
from trm_kaggle.layers import (
    Block, Embedding, Linear, PuzzleEmbedding, ReasoningModule, RotaryEmbedding, swiglu_width, trunc_normal_)

Batch = dict[str, torch.Tensor]
PREVIOUS_TOKENS = "previous_tokens"  # carry.data key of a DIS model fed its previous prediction


@dataclass
class Carry:
    """What persists between ACT steps: latent states, steps taken, halted flags and the
    examples each batch row currently works on."""

    z_H: torch.Tensor
    z_L: torch.Tensor
    steps: torch.Tensor   # (B,) int32
    halted: torch.Tensor  # (B,) bool
    data: Batch


class TRM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.dtype = getattr(torch, config.forward_dtype)
        hidden, positions = config.hidden_size, config.seq_len + config.puzzle_tokens
        self.embed_scale = math.sqrt(hidden)
        self.embed_tokens = Embedding(config.vocab_size, hidden, 1 / self.embed_scale, self.dtype)
        self.lm_head = Linear(hidden, config.vocab_size)
        self.q_head = Linear(hidden, 2, bias=True)
        self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim, self.dtype)
        self.rotary_emb = None
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(config.head_dim, positions, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = Embedding(positions, hidden, 1 / self.embed_scale, self.dtype)
        if config.objective == "dis":  # rows 0..N_sup + 1, as the DIS code's timestep_embed
            self.step_emb = Embedding(config.halt_max_steps + 2, hidden, 1 / self.embed_scale, self.dtype)
        self.L_level = ReasoningModule([Block(hidden, config.num_heads, config.expansion, config.rms_norm_eps)
                                        for _ in range(config.L_layers)])
        # register_buffer rather than nn.Buffer (torch >= 2.5): the floor is torch 2.4.
        self.register_buffer("H_init", trunc_normal_(torch.empty(hidden), 1.0).to(self.dtype))
        self.register_buffer("L_init", trunc_normal_(torch.empty(hidden), 1.0).to(self.dtype))
        with torch.no_grad():  # halting starts almost off: q_halt ≈ −5
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    # ------------------------------------------------------------------------ one ACT step

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor,
                         step_index: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, S) token ids, puzzle_identifiers (B,) -> x (B, P+S, D) in the model dtype:
        the puzzle's embedding, zero-padded to P·D and cut into P positions, then the tokens'.
        A DIS model adds its step embedding of `step_index` (B,) int, 1..N_sup, to every
        position before the √D scale (the DIS code's `_input_embeddings`)."""
        tokens = self.embed_tokens(inputs.long())  # (B, S, D)
        puzzle = self.puzzle_emb(puzzle_identifiers)  # (B, E)
        hidden, count = self.config.hidden_size, self.config.puzzle_tokens
        puzzle = F.pad(puzzle, (0, count * hidden - puzzle.shape[-1])).view(len(puzzle), count, hidden)  # (B, P, D)
        x = torch.cat([puzzle, tokens], dim=-2)  # (B, P+S, D)
        if self.config.objective == "dis":
            x = x + self.step_emb(step_index.long()).unsqueeze(1)  # + (B, 1, D)
        if self.config.pos_encodings == "learned":  # 1/√2 keeps the sum's variance
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(self.dtype))  # + (P+S, D)
        return self.embed_scale * x

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One H cycle of the recursion. z_H, z_L, x: (B, P+S, D); returns (z_H, z_L), same shapes."""
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, self.rotary_emb)
        return self.L_level(z_H, z_L, self.rotary_emb), z_L

    def step(self, z_H: torch.Tensor, z_L: torch.Tensor, batch: Batch, step_index: torch.Tensor | None = None):
        """The inner model: new (detached) latents, token logits, (q_halt, q_continue).

        z_H, z_L: (B, P+S, D), step_index (B,) 1..N_sup (a DIS model's) -> z_H, z_L (B, P+S, D),
        logits (B, S, V) on the grid positions only, q_halt and q_continue (B,) float32 from the
        first position's z_H."""
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"], step_index)
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                z_H, z_L = self.recurse(z_H, z_L, x)
        z_H, z_L = self.recurse(z_H, z_L, x)
        logits = self.lm_head(z_H)[:, self.config.puzzle_tokens:]  # (B, S, V)
        q = self.q_head(z_H[:, 0]).float()  # (B, 2)
        return z_H.detach(), z_L.detach(), logits, q[..., 0], q[..., 1]

    # ------------------------------------------------------------------------ ACT wrapper

    def initial_carry(self, batch: Batch) -> Carry:
        """Every row halted, so the first forward loads the batch and starts from the inits.

        z_H, z_L: (B, P+S, D) in the model dtype; steps (B,) int32 zeros; halted (B,) all True;
        data: uninitialised tensors shaped like the batch's, replaced at the first forward."""
        size = batch["inputs"].shape[0]
        shape = (size, self.config.seq_len + self.config.puzzle_tokens, self.config.hidden_size)
        device = self.H_init.device
        data = {k: torch.empty_like(v) for k, v in batch.items()}
        if self.feeds_previous:  # the model's own: the last step's prediction, the next step's tokens
            data[PREVIOUS_TOKENS] = torch.empty_like(batch["inputs"])
        return Carry(
            z_H=self.H_init.expand(shape).clone(), z_L=self.L_init.expand(shape).clone(),
            steps=torch.zeros(size, dtype=torch.int32, device=device),
            halted=torch.ones(size, dtype=torch.bool, device=device),
            data=data,
        )

    @property
    def feeds_previous(self) -> bool:
        return self.config.objective == "dis" and self.config.dis_token_input == "previous"

    def forward(self, carry: Carry, batch: Batch,
                noise: torch.Tensor | None = None) -> tuple[Carry, dict[str, torch.Tensor]]:
        """One ACT step. `noise` (B, 2) uniform [0, 1) drives the halting exploration in
        training; the trainer derives it from the seed, step and global row so that the run
        does not depend on the number of ranks (default: torch's global RNG).

        batch: inputs (B, S), puzzle_identifiers (B,) and any other per-row tensors, which ride
        along in the carry (labels (B, S), ...). Returns the new carry (see initial_carry) and
        outputs logits (B, S, V), q_halt_logits (B,) float32."""
        reset = carry.halted.view(-1, 1, 1)  # (B, 1, 1): broadcasts over (P+S, D)
        z_H = torch.where(reset, self.H_init, carry.z_H)
        z_L = torch.where(reset, self.L_init, carry.z_L)
        steps = torch.where(carry.halted, 0, carry.steps)
        data = {k: torch.where(carry.halted.view(-1, *[1] * (v.ndim - 1)), batch[k], v)
                for k, v in carry.data.items() if k != PREVIOUS_TOKENS}
        tokens = data
        if self.feeds_previous:  # a row's first step reads its input, later ones the last prediction
            fresh = (steps == 0).view(-1, 1)
            tokens = data | {"inputs": torch.where(fresh, data["inputs"], carry.data[PREVIOUS_TOKENS])}
        # q_continue fed only the original's no_ACT_continue=False branch, which is not ported.
        z_H, z_L, logits, q_halt, _ = self.step(z_H, z_L, tokens, steps + 1)
        with torch.no_grad():
            steps = steps + 1
            halted = self.halting(steps, q_halt, noise)
            if self.feeds_previous:
                data[PREVIOUS_TOKENS] = logits.argmax(-1).to(data["inputs"].dtype)
        outputs = {"logits": logits, "q_halt_logits": q_halt}
        return Carry(z_H, z_L, steps, halted, data), outputs

    def halting(self, steps: torch.Tensor, q_halt: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Eval, and a DIS model always: halt at max steps only. Training a TRM: also when
        q_halt > 0, except that with probability `halt_exploration_prob` a row must first
        reach U{2..max} steps."""
        max_steps = self.config.halt_max_steps
        halted = steps >= max_steps
        if not self.training or max_steps == 1 or self.config.objective == "dis":
            return halted
        halted = halted | (q_halt > 0)
        if noise is None:
            noise = torch.rand(len(steps), 2, device=steps.device)
        explore = noise[:, 0] < self.config.halt_exploration_prob
        min_steps = explore * (2 + (noise[:, 1] * (max_steps - 1)).long().clamp_max(max_steps - 2))
        return halted & (steps >= min_steps)


def block_calls(config: ModelConfig) -> tuple[int, int]:
    """(per ACT step, per example pass) calls of the shared network f: H_cycles·(L_cycles + 1)
    per step, halt_max_steps steps per pass (every step, as evaluation runs them). The unit of
    seed 001's comparison: 18 for the DIS paper config (6 × 1 × 3), 240 for TRM's (16 × 3 × 5)."""
    per_step = config.H_cycles * (config.L_cycles + 1)
    return per_step, per_step * config.halt_max_steps


def flops_per_example(config: ModelConfig) -> tuple[float, float]:
    """(training step, one ACT step forward) FLOPs per example: matmuls and attention of the
    H·(L+1) network calls; backward (2× forward) only through the last H cycle's L+1 calls.
    The paper config gives ≈ 398 and 239 GFLOP (DESIGN §5)."""
    tokens, hidden = config.seq_len + config.puzzle_tokens, config.hidden_size
    inner = swiglu_width(hidden, config.expansion)
    block = 2 * tokens * (4 * hidden * hidden + 3 * inner * hidden) + 4 * tokens * tokens * hidden
    call = config.L_layers * block
    forward = config.H_cycles * (config.L_cycles + 1) * call
    return forward + 2 * (config.L_cycles + 1) * call, forward
