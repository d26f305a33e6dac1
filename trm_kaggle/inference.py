"""Run a TRM over a dataset split in eval mode: every example for all `halt_max_steps` ACT
steps from the initial carry, batched, with the predictions of the last step (and, on
request, every step's logits and q_halt, or every step's exact match against the labels)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from tqdm import tqdm

from trm_kaggle.dataset.format import SplitArrays
from trm_kaggle.dataset.sampler import example_puzzles, gather
from trm_kaggle.losses import step_scores
from trm_kaggle.model import TRM


@dataclass
class Predictions:
    tokens: np.ndarray          # (N, seq_len) uint8: argmax of the last step's logits
    q_halt_logits: np.ndarray   # (N,) float32 of the last step
    example_index: np.ndarray   # (N,) int64 rows of the split
    step_logits: np.ndarray | None = None   # (steps, N, seq_len, vocab) float32
    step_q_halt: np.ndarray | None = None   # (steps, N) float32
    step_exact: np.ndarray | None = None           # (steps, N) bool: every labelled token right
    step_token_accuracy: np.ndarray | None = None  # (steps, N) float32: share of labelled tokens right

    @classmethod
    def concat(cls, parts: list["Predictions"]) -> "Predictions":
        """Row-wise concatenation (e.g. the ranks' shares, in rank order)."""
        def join(name: str, axis: int):
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays, axis)
        return cls(*(join(f.name, 1 if f.name.startswith("step_") else 0) for f in fields(cls)))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def run_steps(model: TRM, batch: dict[str, torch.Tensor], keep_steps: bool, score_steps: bool = False):
    """All ACT steps of one batch: (logits per step or only the last, q_halt likewise, and
    with `score_steps` each step's step_scores against the batch's labels, else None)."""
    carry = model.initial_carry(batch)
    logits, q_halt, scores = [], [], []
    for _ in range(model.config.halt_max_steps):
        carry, out = model(carry, batch)
        if score_steps:
            scores.append(step_scores(out["logits"], batch["labels"]))
        if keep_steps or carry.halted.all():
            logits.append(out["logits"].float())
            q_halt.append(out["q_halt_logits"].float())
    stacked = tuple(torch.stack(s) for s in zip(*scores)) if scores else None
    return torch.stack(logits), torch.stack(q_halt), stacked


def predict(model: TRM, split: SplitArrays, batch_size: int, examples: np.ndarray | None = None,
            identifier_map: np.ndarray | None = None, keep_steps: bool = False,
            device: torch.device | None = None, progress: bool = True, score_steps: bool = False) -> Predictions:
    """Predictions for `examples` (default: every example of the split, in order), in
    batches of at most `batch_size` rows. `identifier_map[dataset row]` is the model's
    embedding row of a variant, when the two number their variants differently.
    `keep_steps` keeps every step's logits; `score_steps` every step's exact match and token
    accuracy against the split's labels (cheap: (steps, N) each)."""
    device = device or default_device()
    model = model.to(device).eval()
    examples = np.arange(split.num_examples) if examples is None else np.asarray(examples, dtype=np.int64)
    puzzles = example_puzzles(split)
    remap = None if identifier_map is None else torch.from_numpy(identifier_map.astype(np.int64))
    parts = []
    chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    # disable=None: tqdm turns itself off when stderr is not a terminal (a log file, a pod)
    for chunk in tqdm(chunks, desc="eval", unit="batch", disable=None if progress else True):
        batch = gather(split, puzzles, chunk)
        if remap is not None:
            batch["puzzle_identifiers"] = remap[batch["puzzle_identifiers"].long()].to(torch.int32)
        logits, q_halt, scores = run_steps(model, {k: v.to(device) for k, v in batch.items()}, keep_steps,
                                           score_steps)
        parts.append(Predictions(
            tokens=logits[-1].argmax(-1).to(torch.uint8).cpu().numpy(), q_halt_logits=q_halt[-1].cpu().numpy(),
            example_index=chunk, step_logits=logits.cpu().numpy() if keep_steps else None,
            step_q_halt=q_halt.cpu().numpy() if keep_steps else None,
            step_exact=scores[0].cpu().numpy() if score_steps else None,
            step_token_accuracy=scores[1].cpu().numpy() if score_steps else None))
    return Predictions.concat(parts) if parts else empty_predictions(model, split, keep_steps, score_steps)


def empty_predictions(model: TRM, split: SplitArrays, keep_steps: bool, score_steps: bool) -> Predictions:
    """Predictions of no example, with every array's shape but N = 0."""
    steps, length = model.config.halt_max_steps, split.inputs.shape[1]
    return Predictions(
        tokens=np.zeros((0, length), np.uint8), q_halt_logits=np.zeros(0, np.float32),
        example_index=np.zeros(0, np.int64),
        step_logits=np.zeros((steps, 0, length, model.config.vocab_size), np.float32) if keep_steps else None,
        step_q_halt=np.zeros((steps, 0), np.float32) if keep_steps else None,
        step_exact=np.zeros((steps, 0), bool) if score_steps else None,
        step_token_accuracy=np.zeros((steps, 0), np.float32) if score_steps else None)
