"""TRM-Planner Stage I's offline teacher cache (seed 000, METHODS.md §2): K entries per
training example, written in shards as the build goes, resumable, compact.

Layout of CACHE/:
- `cache.json`: the settings, the teacher checkpoint (path, SHA-256 of its weights) and the
  dataset's fingerprint (SHA-256 of its train split), written first; `complete` and the
  summary (examples, entries, seconds, bytes) once every shard exists.
- `shard_NNNNNN.pt`: examples [N·chunk, (N+1)·chunk) of the train split, one per chunk:
  `examples` (n,) int64, `steps` (n, K) int16 (the selected ACT step t), `score` and `loss`
  (n, K) float32 (the teacher's ℓ), `tokens` (n, K, S) uint8 (argmax ŷ) and, when asked, the
  logits at the supervised positions only (label ≠ ignore, `supervised` (n,) int32 counts
  them): `logits` (Σ K·m, V) bfloat16 in example, then entry order (`supervised-bf16`), or
  `topk_values` (Σ K·m, k) bfloat16 and `topk_indices` uint8 (`topk:k`).

A key is one training *example* (the split's row), never a puzzle: every demonstration pair
of a variant shares a puzzle id, and a per-puzzle key mixes different inputs (the authors'
early code had that bug). The noise of chunk N is drawn from (seed, N) alone, so a build
resumed after an interruption, or split over any number of ranks (chunk N on rank N mod
world), writes the same shards as one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from trm_kaggle import distributed
from trm_kaggle.checkpoint import averaged_state, load_checkpoint, sha256_file
from trm_kaggle.config import Frozen
from trm_kaggle.dataset.format import SplitArrays, load_split
from trm_kaggle.dataset.sampler import example_puzzles, gather
from trm_kaggle.errors import UserError
from trm_kaggle.losses import IGNORE_LABEL
from trm_kaggle.model import TRM
from trm_kaggle.planner.search import SearchSettings, search
from trm_kaggle.planner.select import js_distances, select_mmr

CACHE_FILE = "cache.json"
FORMAT = "trm-kaggle teacher cache 1"
TRAIN_FILES = ("dataset.json", "all__inputs.npy", "all__labels.npy", "all__puzzle_identifiers.npy",
               "all__puzzle_indices.npy", "all__group_indices.npy")


class CacheSettings(Frozen):
    """trm-teacher-cache's settings: the search's (R, K_b, T_max, σ, α, β, λ), the selection's
    (K, λ_sel), what is stored and how the work is cut. Defaults: the paper's."""

    rollouts: int = Field(8, ge=1)
    """R: noisy rollouts per example."""
    beam: int = Field(4, ge=1)
    """K_b: stop/continue states kept per rollout."""
    max_steps: int = Field(16, ge=1)
    """T_max: ACT steps each rollout takes at most."""
    keep: int = Field(2, ge=1)
    """K: entries kept per example (at most R)."""
    noise: float = Field(0.02, ge=0)
    """σ of the Gaussian noise on z_H and z_L after every ACT step (0: deterministic rollouts)."""
    alpha: float = 1.0
    """α: weight of exp(−ℓ) in the score."""
    beta: float = 0.0
    """β: weight of sigmoid(q_halt) in the score."""
    step_penalty: float = 0.01
    """λ: score penalty per ACT step."""
    mmr_lambda: float = Field(0.7, ge=0, le=1)
    """λ_sel: the selection's weight of the score against diversity."""
    logits: str = "none"
    """What logits are stored: none (tokens only, hard KD), supervised-bf16, or topk:K."""
    seed: int = Field(0, ge=0)
    """Seeds the rollouts' noise (with the chunk's index)."""
    chunk: int = Field(256, ge=1)
    """Examples per shard (the unit of resuming and of the ranks' work)."""
    batch_size: int = Field(16, ge=1)
    """Examples per teacher batch (R·K_b beam elements each)."""

    @field_validator("logits")
    @classmethod
    def _known_logits(cls, value: str) -> str:
        if value in ("none", "supervised-bf16"):
            return value
        if value.startswith("topk:") and value[5:].isdigit() and int(value[5:]) >= 1:
            return value
        raise ValueError(f"{value!r}: use none, supervised-bf16 or topk:K (K ≥ 1)")

    @property
    def search(self) -> SearchSettings:
        return SearchSettings(self.rollouts, self.beam, self.max_steps, self.noise, self.alpha, self.beta,
                              self.step_penalty)

    @property
    def topk(self) -> int | None:
        return int(self.logits[5:]) if self.logits.startswith("topk:") else None


def dataset_fingerprint(data_dir: Path) -> str:
    """SHA-256 over the train split's files: a cache belongs to exactly these examples."""
    digest = hashlib.sha256()
    for name in TRAIN_FILES:
        digest.update(name.encode())
        digest.update(sha256_file(Path(data_dir) / "train" / name).encode())
    return digest.hexdigest()


def shard_path(cache: Path, chunk: int) -> Path:
    return cache / f"shard_{chunk:06d}.pt"


@dataclass
class Manifest:
    format: str
    settings: dict
    teacher: str
    teacher_sha256: str
    data: str
    dataset_sha256: str
    examples: int
    chunks: int
    complete: bool = False
    summary: dict | None = None

    def same_build(self, other: "Manifest") -> str | None:
        """What differs from `other` that a resume cannot continue across, or None."""
        for name in ("format", "settings", "teacher_sha256", "dataset_sha256", "examples"):
            if getattr(self, name) != getattr(other, name):
                return name
        return None


def read_manifest(cache: Path) -> Manifest:
    path = cache / CACHE_FILE
    try:
        return Manifest(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (not a trm-teacher-cache directory)") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a teacher cache manifest ({exc})") from None


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` then rename: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_manifest(cache: Path, manifest: Manifest) -> None:
    write_atomically(cache / CACHE_FILE, lambda tmp: tmp.write_text(json.dumps(asdict(manifest), indent=2)))


# ---------------------------------------------------------------------------- one chunk

def chunk_entries(model: TRM, split: SplitArrays, examples: np.ndarray, settings: CacheSettings,
                  generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The shard of `examples`: search each batch, select K entries per example, pack."""
    puzzles = example_puzzles(split)
    parts = []
    for start in range(0, len(examples), settings.batch_size):
        batch = gather(split, puzzles, examples[start:start + settings.batch_size])
        labels = batch["labels"]
        batch = {k: v.to(device) for k, v in batch.items() if k != "example_index"}
        found = search(model, batch, settings.search, generator)
        for row in range(len(labels)):
            parts.append(example_entries(found, row, labels[row] != IGNORE_LABEL, settings))
    return pack(examples, parts, settings)


def example_entries(found, row: int, supervised: torch.Tensor, settings: CacheSettings) -> dict[str, torch.Tensor]:
    """The K entries of one example among its R rollout candidates (STABLEJS-MMR)."""
    logits = found.logits[row].cpu()  # (R, S, V)
    scores = found.score[row].cpu().double()
    chosen = torch.tensor(select_mmr(scores, js_distances(logits, supervised), settings.keep, settings.mmr_lambda))
    entry = {"steps": found.steps[row].cpu()[chosen].to(torch.int16), "score": found.score[row].cpu()[chosen],
             "loss": found.loss[row].cpu()[chosen], "tokens": logits[chosen].argmax(-1).to(torch.uint8),
             "supervised": int(supervised.sum())}
    if settings.logits != "none":
        entry["logits"] = logits[chosen][:, supervised].reshape(-1, logits.shape[-1])  # (K·m, V)
    return entry


def pack(examples: np.ndarray, parts: list[dict], settings: CacheSettings) -> dict[str, torch.Tensor]:
    shard = {"examples": torch.from_numpy(np.asarray(examples, dtype=np.int64)),
             "supervised": torch.tensor([p["supervised"] for p in parts], dtype=torch.int32)}
    for name in ("steps", "score", "loss", "tokens"):
        shard[name] = torch.stack([p[name] for p in parts])
    if settings.logits == "supervised-bf16":
        shard["logits"] = torch.cat([p["logits"] for p in parts]).to(torch.bfloat16)
    elif settings.topk is not None:
        values, indices = torch.cat([p["logits"] for p in parts]).topk(min(settings.topk, parts[0]["logits"].shape[-1]))
        shard["topk_values"], shard["topk_indices"] = values.to(torch.bfloat16), indices.to(torch.uint8)
    return shard


# ---------------------------------------------------------------------------- the build

@dataclass
class BuildSummary:
    examples: int
    entries: int
    seconds: float
    bytes: int
    chunks_built: int
    chunks_resumed: int
    seq_len: int

    @property
    def bytes_per_example(self) -> float:
        return self.bytes / max(self.examples, 1)


def teacher_model(path: Path) -> TRM:
    """The teacher as it is evaluated: its EMA averages when it has them (as trm-eval)."""
    ckpt = load_checkpoint(path)
    ckpt.state_dict, _ = averaged_state(ckpt)
    return ckpt.build_model()


def plan(teacher: Path, data_dir: Path, settings: CacheSettings, examples: int) -> Manifest:
    ckpt_file = teacher if teacher.is_file() else teacher / "model.pt"
    return Manifest(format=FORMAT, settings=settings.model_dump(), teacher=str(teacher.resolve()),
                    teacher_sha256=sha256_file(ckpt_file), data=str(Path(data_dir).resolve()),
                    dataset_sha256=dataset_fingerprint(data_dir), examples=examples,
                    chunks=-(-examples // settings.chunk))


def start_cache(cache: Path, manifest: Manifest) -> None:
    """Create the cache, or check that the one there is this build (then it resumes)."""
    if (cache / CACHE_FILE).is_file():
        earlier = read_manifest(cache)
        differs = earlier.same_build(manifest)
        if differs:
            raise UserError(f"{cache}: holds a cache built with another {differs} "
                            "(a different teacher, dataset or settings): choose a new --out")
        return
    if cache.exists() and any(cache.iterdir()):
        raise UserError(f"{cache}: exists and is not a teacher cache: choose a new --out")
    cache.mkdir(parents=True, exist_ok=True)
    write_manifest(cache, manifest)


def build_cache(teacher: Path, data_dir: Path, cache: Path, settings: CacheSettings,
                world: distributed.Dist, progress: bool = True, log=print) -> BuildSummary:
    """Stage I: every training example's K entries, chunk by chunk (this rank's chunks:
    index ≡ rank mod world size), skipping chunks whose shard exists. Returns the summary
    (rank 0's, over all shards) and marks the cache complete."""
    from tqdm import tqdm

    if settings.keep > settings.rollouts:
        raise UserError(f"--keep {settings.keep}: more entries than --rollouts {settings.rollouts} candidates")
    split = load_split(data_dir, "train")
    manifest = plan(teacher, data_dir, settings, split.num_examples)
    if world.is_main:
        start_cache(cache, manifest)
    distributed.barrier()
    model = teacher_model(teacher).to(world.device)
    if model.config.seq_len != split.inputs.shape[1]:
        raise UserError(f"{teacher}: was trained on seq_len {model.config.seq_len}, {data_dir} has "
                        f"{split.inputs.shape[1]}")
    mine = [c for c in range(manifest.chunks) if c % world.world_size == world.rank]
    todo = [c for c in mine if not shard_path(cache, c).is_file()]
    start = time.perf_counter()
    for c in tqdm(todo, desc="teacher cache", unit="chunk", disable=None if progress and world.is_main else True):
        examples = np.arange(c * settings.chunk, min((c + 1) * settings.chunk, split.num_examples))
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + c)
        shard = chunk_entries(model, split, examples, settings, generator, world.device)
        write_atomically(shard_path(cache, c), lambda tmp: torch.save(shard, tmp))
    seconds = time.perf_counter() - start
    distributed.barrier()
    summary = BuildSummary(examples=split.num_examples, entries=split.num_examples * settings.keep,
                           seconds=round(seconds, 1), bytes=0, chunks_built=len(todo),
                           chunks_resumed=len(mine) - len(todo), seq_len=split.inputs.shape[1])
    if world.is_main:
        summary.bytes = sum(shard_path(cache, c).stat().st_size for c in range(manifest.chunks))
        manifest.complete, manifest.summary = True, asdict(summary)
        write_manifest(cache, manifest)
    return summary
