"""Inference over test inputs × augmentations, in chunks that workers take from a queue.

Chunks are cut from the examples in *rounds*: every test input's original first, then every
test input's first variant, and so on, so that when time runs out, whatever chunks are done
hold votes for every test input rather than all the votes for some. The supervisor cuts the
chunks and hands them to each worker when it spawns it. A worker writes each
chunk's predictions atomically to `scratch/predictions/chunk_NNNNN.npz`; the supervisor
votes with the files as they come.
"""

from __future__ import annotations

import logging
import queue as queue_module
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trm_kaggle.checkpoint import load_checkpoint
from trm_kaggle.dataset.format import SplitArrays, load_identifiers, load_split
from trm_kaggle.evaluate import select_examples
from trm_kaggle.hardware import default_dtype
from trm_kaggle.inference import Predictions, predict
from trm_kaggle.kaggle import faults
from trm_kaggle.kaggle.workers import WorkerSpec, configure_worker

log = logging.getLogger("trm_kaggle.submit")


def round_order(split: SplitArrays, num_aug: int) -> np.ndarray:
    """The examples to predict (original + first `num_aug` variants of each test input),
    ordered by variant index first."""
    examples = select_examples(split, num_aug, None)
    puzzle = np.searchsorted(split.puzzle_indices, examples, side="right") - 1
    group = np.searchsorted(split.group_indices, puzzle, side="right") - 1
    variant = puzzle - split.group_indices[group]
    return examples[np.lexsort((examples, variant))]


@dataclass(frozen=True)
class Chunks:
    """The examples to predict, in round order, cut into chunks: chunk c is
    examples[bounds[c]:bounds[c + 1]]."""

    examples: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def rows(self, chunk: int, stride: int = 1) -> np.ndarray:
        """Chunk `chunk`'s examples, every `stride`-th one (a dry run computes one in `stride`)."""
        return self.examples[self.bounds[chunk]:self.bounds[chunk + 1]:stride]


def plan_chunks(split: SplitArrays, num_aug: int, rows: int) -> Chunks:
    """The ordered examples cut into chunks of `rows` (the last one shorter)."""
    examples = round_order(split, num_aug)
    bounds = np.arange(0, len(examples) + rows, rows).clip(max=len(examples))
    return Chunks(examples, np.unique(bounds))


def chunk_path(directory: Path, chunk: int) -> Path:
    return directory / f"chunk_{chunk:05d}.npz"


def load_model(spec: WorkerSpec, device: torch.device):
    """The fine-tuned weights when fine-tuning saved any, else the package with its new
    embedding rows at their initial value."""
    if (spec.finetuned_dir / "meta.json").is_file():
        ckpt = load_checkpoint(spec.finetuned_dir)
        dtype = default_dtype(device)
        log.info("inference with the fine-tuned weights of step %s", ckpt.step)
        return ckpt.build_model(dtype).to(device)
    from trm_kaggle.kaggle.finetune import build_model

    log.info("no fine-tuned weights: inference with the packaged model")
    return build_model(spec, device, load_identifiers(spec.data_dir)).eval()


def predict_resilient(model, split: SplitArrays, examples: np.ndarray, batch: int,
                      device: torch.device) -> tuple[Predictions, int]:
    """Predictions for `examples` in batches; a CUDA OOM halves the batch and retries.
    Returns the predictions and the batch size that worked. (The embedding rows are the
    split's own unless the wrong_rows control is on: faults.identifier_map.)"""
    rows_map = faults.identifier_map(model.config.num_puzzle_identifiers)
    parts, start = [], 0
    while start < len(examples):
        rows = examples[start:start + batch]
        try:
            faults.before_infer_batch(len(rows))
            parts.append(predict(model, split, batch, rows, identifier_map=rows_map, device=device, progress=False))
            start += len(rows)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            log.warning("CUDA out of memory: inference batch now %d", batch)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return Predictions.concat(parts), batch


def predict_chunk(runner, model, split: SplitArrays, rows: np.ndarray, batch: int, device: torch.device):
    """predict_resilient with `runner` (the compiled model, or the model itself); if the
    compiled one fails (a compiler that does not work on this image), the eager model takes
    over for good: 2-3x slower, not fatal. Returns (predictions, batch size, runner)."""
    try:
        return (*predict_resilient(runner, split, rows, batch, device), runner)
    except Exception as exc:
        if runner is model or isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        log.warning("compiled inference failed (%s: %s): predicting eagerly", type(exc).__name__, exc)
        return (*predict_resilient(model, split, rows, batch, device), model)


def save_predictions(path: Path, predictions: Predictions) -> None:
    tmp = path.with_name(f".{path.stem}.partial.npz")
    np.savez(tmp, tokens=predictions.tokens, q_halt_logits=predictions.q_halt_logits,
             example_index=predictions.example_index)
    tmp.replace(path)


def load_predictions(path: Path) -> Predictions:
    with np.load(path) as data:
        return Predictions(data["tokens"], data["q_halt_logits"], data["example_index"])


def infer_worker(rank: int, spec: WorkerSpec, device_name: str, todo, workers: int, chunks: Chunks) -> None:
    """An inference process's entry point (spawned): chunk numbers from the queue `todo`
    until None."""
    device = configure_worker(rank, 1, 0, device_name, workers, spec)
    try:
        split = load_split(spec.data_dir, "test")
        model = load_model(spec, device).eval()
        batch = spec.options.infer_batch_per_device(len(spec.devices))
        runner = torch.compile(model) if spec.options.compile and device.type == "cuda" else model
        clock, stride = spec.clock, spec.clock.stride("infer")
        while (chunk := take(todo)) is not None:
            faults.before_infer_chunk(rank, chunk)
            rows = chunks.rows(chunk, stride)
            clock.charge("inference", len(rows) * stride * model.config.halt_max_steps)
            predictions, batch, runner = predict_chunk(runner, model, split, rows, batch, device)
            if clock.past(spec.inference_end):
                break  # stopped before it finished this chunk
            save_predictions(chunk_path(spec.predictions_dir, chunk), predictions)
    except BaseException:
        log.exception("inference failed")
        raise SystemExit(1)


def take(chunks) -> int | None:
    try:
        return chunks.get(timeout=60)
    except queue_module.Empty:
        return None
