"""Run a TRM over a dataset split in eval mode: every example for all `halt_max_steps` ACT
steps from the initial carry, batched, with the predictions of the last step (and, on
request, the logits and q_halt of every step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from trm_kaggle.dataset.format import SplitArrays
from trm_kaggle.dataset.sampler import example_puzzles, gather
from trm_kaggle.model import TRM


@dataclass
class Predictions:
    tokens: np.ndarray          # (N, 900) uint8: argmax of the last step's logits
    q_halt_logits: np.ndarray   # (N,) float32 of the last step
    example_index: np.ndarray   # (N,) int64 rows of the split
    step_logits: np.ndarray | None = None   # (steps, N, 900, vocab) float32
    step_q_halt: np.ndarray | None = None   # (steps, N) float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def run_steps(model: TRM, batch: dict[str, torch.Tensor], keep_steps: bool):
    """All ACT steps of one batch; (logits per step or only the last, q_halt likewise)."""
    carry = model.initial_carry(batch)
    logits, q_halt = [], []
    for _ in range(model.config.halt_max_steps):
        carry, out = model(carry, batch)
        if keep_steps or carry.halted.all():
            logits.append(out["logits"].float())
            q_halt.append(out["q_halt_logits"].float())
    return torch.stack(logits), torch.stack(q_halt)


def predict(model: TRM, split: SplitArrays, batch_size: int, examples: np.ndarray | None = None,
            identifier_map: np.ndarray | None = None, keep_steps: bool = False,
            device: torch.device | None = None, progress: bool = True) -> Predictions:
    """Predictions for `examples` (default: every example of the split, in order), in
    batches of at most `batch_size` rows. `identifier_map[dataset row]` is the model's
    embedding row of a variant, when the two number their variants differently."""
    device = device or default_device()
    model = model.to(device).eval()
    examples = np.arange(split.num_examples) if examples is None else np.asarray(examples, dtype=np.int64)
    puzzles = example_puzzles(split)
    remap = None if identifier_map is None else torch.from_numpy(identifier_map.astype(np.int64))
    tokens, q_last, all_logits, all_q = [], [], [], []
    chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    for chunk in tqdm(chunks, desc="eval", unit="batch", disable=not progress):
        batch = gather(split, puzzles, chunk)
        if remap is not None:
            batch["puzzle_identifiers"] = remap[batch["puzzle_identifiers"].long()].to(torch.int32)
        logits, q_halt = run_steps(model, {k: v.to(device) for k, v in batch.items()}, keep_steps)
        tokens.append(logits[-1].argmax(-1).to(torch.uint8).cpu().numpy())
        q_last.append(q_halt[-1].cpu().numpy())
        if keep_steps:
            all_logits.append(logits.cpu().numpy())
            all_q.append(q_halt.cpu().numpy())
    steps = model.config.halt_max_steps
    return Predictions(
        tokens=np.concatenate(tokens) if tokens else np.zeros((0, split.inputs.shape[1]), np.uint8),
        q_halt_logits=np.concatenate(q_last) if q_last else np.zeros(0, np.float32),
        example_index=examples,
        step_logits=(np.concatenate(all_logits, 1) if all_logits else
                     np.zeros((steps, 0, split.inputs.shape[1], model.config.vocab_size), np.float32))
        if keep_steps else None,
        step_q_halt=(np.concatenate(all_q, 1) if all_q else np.zeros((steps, 0), np.float32)) if keep_steps else None,
    )
