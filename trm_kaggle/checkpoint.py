"""Checkpoints: ours (a `step_N/` directory) and the original TRM's (a bare `step_N` file
with `all_config.yaml` beside it) load through one function.

Ours, written atomically (a temporary directory renamed into place):

    step_N/model.pt          state_dict of trm_kaggle.model.TRM (torch.save)
    step_N/config.json       {"model": ModelConfig, ...the rest of the resolved config}
    step_N/identifiers.json  the puzzle-embedding row names
    step_N/train_state.pt    optional: what resuming needs (optimizers, step, EMA, RNG, sampler)
    step_N/meta.json         format, step, SHA-256 of every other file

A slim export (trm-package) has no puzzle-embedding table: `embedding_stats.pt` holds the
mean and std of the trained rows instead, which is all that new tasks start from.

Everything is read with `torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from trm_kaggle.atomic import atomic_dir
from trm_kaggle.augment import arc_shape
from trm_kaggle.config import DATASET_FIELDS, ModelConfig, model_config_from_original
from trm_kaggle.dataset.format import BLANK_IDENTIFIER
from trm_kaggle.errors import NonFiniteError, UserError
from trm_kaggle.model import TRM

FORMAT = "trm-kaggle-checkpoint/1"
MODEL_FILE, CONFIG_FILE, IDS_FILE, TRAIN_STATE_FILE, META_FILE = (
    "model.pt", "config.json", "identifiers.json", "train_state.pt", "meta.json")
STATS_FILE = "embedding_stats.pt"  # slim exports: {"mean", "std", "rows"} of the trained rows
TABLE = "puzzle_emb.weights"
log = logging.getLogger("trm_kaggle.checkpoint")
ORIGINAL_PREFIXES = ("_orig_mod.", "model.inner.")


TRAIN_STATE_VERSION = 1


@dataclass
class TrainState:
    """train_state.pt: what resuming a run needs beside the weights, one schema for its writer
    (trm-pretrain) and its readers (resume; trm-package, which exports the EMA averages). On
    disk a dict of tensors and plain values (`torch.load(weights_only=True)`) with `version`."""

    train_step: dict[str, Any]          # TrainStep.state_dict(): step, optimizers, "ema" when EMA is on
    sampler: dict[str, Any] | None = None
    carries: list[Any] | None = None    # each rank's ACT carry
    rng: list[Any] | None = None        # each rank's RNG states
    elapsed: float = 0.0                # seconds of training so far
    global_batch_size: int | None = None
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"version": TRAIN_STATE_VERSION} | {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Any, source: Path) -> "TrainState":
        if not isinstance(raw, dict) or not isinstance(raw.get("train_step"), dict):
            raise UserError(f"{source}: not a training state (no train_step)")
        if raw.get("version", 1) != TRAIN_STATE_VERSION:  # files from before the version key are version 1
            raise UserError(f"{source}: training state version {raw.get('version')}, this trm-kaggle reads "
                            f"{TRAIN_STATE_VERSION}")
        unknown = sorted(set(raw) - {f.name for f in fields(cls)} - {"version"})
        if unknown:
            raise UserError(f"{source}: unknown training-state keys {unknown} (written by a newer trm-kaggle?)")
        return cls(**{k: v for k, v in raw.items() if k != "version"})

    def ema_shadow(self, expected: bool, source: Path) -> dict[str, torch.Tensor] | None:
        """The EMA averages by parameter name; None without EMA. UserError when the run had EMA
        on (`expected`) but none is here: exporting live weights as if averaged would be silent."""
        ema = self.train_step.get("ema")
        if ema is None:
            if expected:
                raise UserError(f"{source}: the run had EMA on, but its training state holds no EMA averages")
            return None
        return ema["shadow"]


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    identifiers: list[str] | None
    source: Path
    original_format: bool
    extra_config: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    embedding_stats: dict[str, Any] | None = None  # a slim export's stand-in for the table

    def build_model(self, forward_dtype: str | None = None) -> TRM:
        """A TRM with these weights, on the CPU, in eval mode, computing in `forward_dtype`
        (default: the checkpoint's)."""
        if TABLE not in self.state_dict:
            raise UserError(f"{self.source}: a slim export holds no puzzle embeddings to predict with: "
                            "fine-tune it on your tasks (init_from=...) or export with --keep-embeddings")
        config = self.config if forward_dtype is None else self.config.model_copy(
            update={"forward_dtype": forward_dtype})
        model = TRM(config)
        load_weights(model, self.state_dict, self.source)
        return model.eval()

    def train_state(self) -> "TrainState | None":
        path = self.source / TRAIN_STATE_FILE
        if self.original_format or not path.is_file():
            return None
        return TrainState.from_dict(torch_load(path), path)

    @property
    def num_rows(self) -> int:
        return self.config.num_puzzle_identifiers

    @property
    def has_unnamed_rows(self) -> bool:
        """A full embedding table whose rows nobody named (the original code saves no
        identifiers.json): matching them to a dataset by position is a guess."""
        return TABLE in self.state_dict and self.identifiers is None


def averaged_state(ckpt: Checkpoint) -> tuple[dict[str, torch.Tensor], bool]:
    """The checkpoint's weights with its EMA averages in place when it has them (the weights
    trm-pretrain evaluates with and trm-package exports; the original saves the EMA model
    itself); (state, whether EMA was applied). UserError when the run had EMA on but its
    averages are missing."""
    state = dict(ckpt.state_dict)
    train_state = ckpt.train_state()
    had_ema = bool(ckpt.extra_config.get("pretrain", {}).get("ema"))  # trm-pretrain records its config
    shadow = train_state.ema_shadow(had_ema, ckpt.source) if train_state is not None else None
    if shadow is None:
        return state, False
    for name, average in shadow.items():
        state[name] = average.to(state[name].dtype)
    return state, True


# ---------------------------------------------------------------------------- naming its rows
#
# A row is only meaningful under the name of the variant it trained on. Matching rows by
# position to a dataset numbered differently gives each task another task's embedding: the
# failure that scored a public offline TRM notebook 0 (public report sapientinc/HRM#2 is this
# kind). So rows without names are refused wherever they would be matched, unless the user
# names them (--identifiers FILE) or asks for position explicitly (--rows-by-position).

def read_identifiers(path: Path, rows: int) -> list[str]:
    """The names in an identifiers.json for a table of `rows` rows: a list of distinct strings,
    `<blank>` first (the dataset layout, DESIGN §4); UserError naming the file otherwise."""
    names = read_json_file(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: expected a JSON list of identifier names (identifiers.json of a dataset)")
    if names[0] != BLANK_IDENTIFIER:
        raise UserError(f"{path}: the first name is {names[0]!r}, not {BLANK_IDENTIFIER!r}: not a dataset's "
                        "identifiers.json")
    repeated = next((n for n, count in Counter(names).items() if count > 1), None)
    if repeated is not None:
        raise UserError(f"{path}: {repeated!r} names more than one row")
    if len(names) != rows:
        raise UserError(f"{path}: {len(names)} names for a table of {rows} puzzle-embedding rows: "
                        "not the dataset this checkpoint was trained on")
    return names


def option_name(flag: str) -> str:
    """`--identifiers FILE` -> `--identifiers`; `init_identifiers=FILE` -> `init_identifiers`."""
    return flag.split()[0].split("=")[0]


def name_rows(ckpt: Checkpoint, identifiers: Path | None = None, by_position: list[str] | None = None,
              against: str = "the dataset", flags: tuple[str, str] = ("--identifiers FILE", "--rows-by-position")
              ) -> Checkpoint:
    """Give `ckpt`'s embedding rows names: from an identifiers.json (`identifiers`), or the
    dataset's own names in order (`by_position`, with a warning). With neither, unnamed rows
    are a UserError naming `flags`, the options that would resolve it. Returns `ckpt`."""
    if identifiers is not None:
        if ckpt.identifiers is not None and TABLE in ckpt.state_dict:
            raise UserError(f"{option_name(flags[0])}: {ckpt.source} already names its rows (identifiers.json)")
        ckpt.identifiers = read_identifiers(identifiers, ckpt.num_rows)
    elif by_position is not None and not ckpt.has_unnamed_rows:
        log.warning("%s: ignored: %s names its rows, they are matched by name", flags[1], ckpt.source)
    elif by_position is not None:
        if len(by_position) != ckpt.num_rows:
            raise UserError(f"{option_name(flags[1])}: {against} has {len(by_position)} identifiers, {ckpt.source} has "
                            f"{ckpt.num_rows} rows: position cannot match them")
        log.warning("%s: rows matched to %s by position (%s), not by name: right only if it was "
                    "trained on a dataset numbered exactly like this one", ckpt.source, against, flags[1])
        ckpt.identifiers = list(by_position)
    elif ckpt.has_unnamed_rows:
        raise UserError(f"{ckpt.source}: its {ckpt.num_rows} puzzle-embedding rows have no names (no "
                        f"identifiers.json beside it), so they cannot be matched to {against} by name; pass "
                        f"{flags[0]} (the identifiers.json of the dataset it was trained on), or {flags[1]} "
                        "if that dataset numbered its variants exactly like this one")
    return ckpt


# ---------------------------------------------------------------------------- reading

def torch_load(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason}") from None


def nonfinite_tensor(obj: Any, name: str = "") -> str | None:
    """The name (dotted path) of the first floating-point tensor in `obj` (a tensor, or dicts
    and lists of them) holding NaN or inf; None when every one is finite."""
    if isinstance(obj, torch.Tensor):
        return name if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = nonfinite_tensor(value, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


def check_finite(obj: Any, source: Path | str) -> None:
    """Refuse a checkpoint (being read or written) with NaN or inf in it, naming the tensor.
    Raises NonFiniteError."""
    name = nonfinite_tensor(obj)
    if name is not None:
        raise NonFiniteError(f"{source}: {name} holds NaN or inf values: a diverged run's weights "
                             "(use an earlier checkpoint)")


def read_json_file(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None


def strip_original_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original keys `_orig_mod.model.inner.X` (compiled) or `model.inner.X` -> our `X`."""
    renamed = {}
    for key, value in state_dict.items():
        for prefix in ORIGINAL_PREFIXES:
            key = key.removeprefix(prefix)
        renamed[key] = value
    return renamed


def load_weights(model: TRM, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with a one-line error naming the first mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UserError(f"{source}: weights do not fit the architecture: {what} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    for key, tensor in expected.items():
        if state_dict[key].shape != tensor.shape:
            raise UserError(f"{source}: weights do not fit the architecture: {key} has shape "
                            f"{tuple(state_dict[key].shape)}, the architecture needs {tuple(tensor.shape)}")
    model.load_state_dict(state_dict, strict=True)


def load_original(path: Path) -> Checkpoint:
    """An original-TRM checkpoint: `step_N` plus `all_config.yaml` (and `identifiers.json`)."""
    import yaml  # hydra-core's dependency; only the original format needs it

    config_path = path.parent / "all_config.yaml"
    if not config_path.is_file():
        raise UserError(f"{config_path}: no such file (an original TRM checkpoint needs its all_config.yaml)")
    try:
        run_config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{config_path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(run_config, dict) or not isinstance(run_config.get("arch"), dict):
        raise UserError(f"{config_path}: no arch: block")
    state = torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state_dict of tensors")
    state = strip_original_prefixes(state)
    check_finite(state, path)
    table = state.get("puzzle_emb.weights")
    if table is None:
        raise UserError(f"{path}: weights do not fit the architecture: missing puzzle_emb.weights")
    config = original_model_config(run_config["arch"], state, table.shape[0], str(config_path))
    ids_path = path.parent / "identifiers.json"
    identifiers = read_identifiers(ids_path, table.shape[0]) if ids_path.is_file() else None
    named_step = re.fullmatch(r"step_(\d+)", path.name)  # the original names its files by step
    return Checkpoint(config, state, identifiers, path, original_format=True,
                      extra_config={k: v for k, v in run_config.items() if k != "arch"},
                      step=int(named_step.group(1)) if named_step else None)


def original_model_config(arch: dict[str, Any], state: dict[str, torch.Tensor], rows: int,
                          where: str) -> ModelConfig:
    """An original checkpoint records no data shape: the vocabulary is its token table's
    rows; the sequence length its learned position table's rows less the puzzle positions,
    or, with RoPE (no per-position weights), ARC's 900."""
    tokens = state.get("embed_tokens.embedding_weight")
    if tokens is None:
        raise UserError(f"{where}: weights do not fit the architecture: missing embed_tokens.embedding_weight")
    config = model_config_from_original(arch, arc_shape(rows).model_copy(update={"vocab_size": tokens.shape[0]}),
                                        where)
    positions = state.get("embed_pos.embedding_weight")
    if config.pos_encodings == "learned" and positions is not None:
        config = config.model_copy(update={"seq_len": positions.shape[0] - config.puzzle_tokens})
    return config


def verify_hashes(directory: Path, meta: dict[str, Any]) -> None:
    for name, digest in meta.get("sha256", {}).items():
        if not (directory / name).is_file():
            raise UserError(f"{directory / name}: no such file (listed in {META_FILE})")
        if sha256_file(directory / name) != digest:
            raise UserError(f"{directory / name}: SHA-256 differs from {META_FILE}: the file is damaged")


def read_model_config(directory: Path, config: dict | None = None) -> ModelConfig:
    """The architecture a checkpoint of ours (or a packaged model) holds, without its weights.
    `config` is its config.json when already read. UserError when there is none."""
    config = read_json_file(directory / CONFIG_FILE) if config is None else config
    try:
        return ModelConfig.model_validate(config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{directory / CONFIG_FILE}: no valid model config: {' '.join(str(exc).split())[:200]}") from None


def load_ours(directory: Path) -> Checkpoint:
    meta = read_json_file(directory / META_FILE)
    if meta.get("format") != FORMAT:
        raise UserError(f"{directory / META_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
    verify_hashes(directory, meta)
    config = read_json_file(directory / CONFIG_FILE)
    model_config = read_model_config(directory, config)
    state = torch_load(directory / MODEL_FILE)
    check_finite(state, directory / MODEL_FILE)
    stats = torch_load(directory / STATS_FILE) if (directory / STATS_FILE).is_file() else None
    check_finite(stats, directory / STATS_FILE)
    identifiers = read_identifiers(directory / IDS_FILE, model_config.num_puzzle_identifiers) \
        if stats is None or (directory / IDS_FILE).is_file() else None
    return Checkpoint(model_config, state, identifiers, directory,
                      original_format=False, extra_config={k: v for k, v in config.items() if k != "model"},
                      step=meta.get("step"), embedding_stats=stats)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load ours (a directory) or an original TRM checkpoint (a file)."""
    path = Path(path)
    if path.is_dir():
        originals = sorted(p.name for p in path.glob("step_*") if p.is_file())
        if not (path / META_FILE).is_file() and originals:
            raise UserError(f"{path}: a directory of original-TRM checkpoints ({', '.join(originals[:3])}); "
                            f"pass the file, e.g. {path / originals[-1]}")
        return load_ours(path)
    if path.is_file():
        return load_original(path)
    raise UserError(f"{path}: no such checkpoint")


# ---------------------------------------------------------------------------- starting from one

ARCH_FIELDS_IGNORED = {"num_puzzle_identifiers", "forward_dtype", "halt_exploration_prob"}  # not the architecture


# What a TRM checkpoint may differ in when it starts a DIS model (init_from, trm-submit
# --objective dis): the objective and its steps; the recursion (cycles) and shapes must match.
TRM_TO_DIS_FIELDS = {"objective", "dis_token_input", "halt_max_steps"}
STEP_EMBEDDING = "step_emb.embedding_weight"


def starts_dis_from_trm(model: TRM, ckpt: Checkpoint) -> bool:
    return model.config.objective == "dis" and ckpt.config.objective == "trm"


def check_same_architecture(model: TRM, ckpt: Checkpoint, allow_trm_to_dis: bool = False) -> None:
    """A checkpoint used to start a run must be the run's architecture, behaviour included
    (cycles, halting), not just shape-compatible. With `allow_trm_to_dis`, a TRM checkpoint
    may start a DIS model (TRM_TO_DIS_FIELDS may differ)."""
    ours, theirs = model.config.model_dump(), ckpt.config.model_dump()
    allowed = TRM_TO_DIS_FIELDS if allow_trm_to_dis and starts_dis_from_trm(model, ckpt) else set()
    for key in sorted(ours, key=lambda k: k != "objective"):  # a different objective explains the rest
        if key in ARCH_FIELDS_IGNORED or key in allowed or ours[key] == theirs[key]:
            continue
        if key in DATASET_FIELDS:
            raise UserError(f"{ckpt.source}: was trained on data with {key} {theirs[key]}, this dataset's is "
                            f"{ours[key]}")
        raise UserError(f"{ckpt.source}: arch.{key} is {theirs[key]}, this run's is {ours[key]}")


def embedding_stats(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the trained rows (row 0, the blank, never trains)."""
    trained = table[1:] if len(table) > 1 else table
    return trained.mean(0), (trained.std(0) if len(trained) > 1 else torch.zeros_like(trained[0]))


@torch.no_grad()
def init_from_checkpoint(model: TRM, ckpt: Checkpoint, identifiers: list[str], new_rows: str,
                         seed: int = 0, unnamed_rows: str = "refuse") -> tuple[int, int]:
    """Load a checkpoint's trunk into `model` and its puzzle-embedding rows by identifier
    name; rows it lacks start at the mean of its trained rows (`normal`: drawn with their
    per-dimension mean and std). Returns (rows copied, rows initialised), the blank row
    aside. A table without row names (see `name_rows`) is a UserError, unless `unnamed_rows`
    is "fresh": then no row is copied and every row starts from the table's statistics
    (trm-submit: hidden tasks are new, no row could match them anyway).

    A TRM checkpoint may start a DIS model of the same recursion (seed 001): its step
    embedding starts at zero, so that step 1 computes what the TRM's first step did."""
    if unnamed_rows != "fresh":
        name_rows(ckpt)
    check_same_architecture(model, ckpt, allow_trm_to_dis=True)
    state = dict(ckpt.state_dict)
    if starts_dis_from_trm(model, ckpt):
        state[STEP_EMBEDDING] = torch.zeros_like(model.step_emb.embedding_weight)
    table = state.pop(TABLE, None)
    state[TABLE] = model.puzzle_emb.weights
    load_weights(model, state, ckpt.source)
    if table is None:  # a slim export: only the statistics of the trained rows
        table = torch.zeros(0, model.config.puzzle_emb_ndim)
        mean, std = ckpt.embedding_stats["mean"].float(), ckpt.embedding_stats["std"].float()
    else:
        table = table.float()
        mean, std = embedding_stats(table)
    rows = {name: i for i, name in enumerate(ckpt.identifiers or [])}
    weights = model.puzzle_emb.weights
    generator = torch.Generator().manual_seed(seed)
    copied = 0
    for i, name in enumerate(identifiers[1:], start=1):
        if name in rows:
            weights[i] = table[rows[name]]
            copied += 1
        elif new_rows == "normal":
            weights[i] = mean + std * torch.randn(mean.shape, generator=generator)
        else:
            weights[i] = mean
    # Row 0, the blank, never trains on ARC (no training example uses it); on a one-identifier
    # dataset (the original's Sudoku, Maze) it is the one row that does, so it is copied too.
    weights[0] = table[0] if len(table) else 0
    return copied, len(identifiers) - 1 - copied


# ---------------------------------------------------------------------------- writing

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, model: TRM, identifiers: list[str], step: int,
                    extra_config: dict[str, Any] | None = None, train_state: TrainState | None = None,
                    extra_files: dict[str, bytes] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write a model's checkpoint directory (e.g. runs/x/step_100) atomically; see save_state."""
    tensors = {TRAIN_STATE_FILE: train_state.to_dict()} if train_state is not None else {}
    return save_state(directory, model.config, model.state_dict(), identifiers, step, extra_config,
                      tensors, extra_files, meta)


def save_state(directory: str | Path, config: ModelConfig, state_dict: dict[str, torch.Tensor],
               identifiers: list[str] | None, step: int | None, extra_config: dict[str, Any] | None = None,
               torch_files: dict[str, Any] | None = None, extra_files: dict[str, bytes] | None = None,
               meta: dict[str, Any] | None = None) -> Path:
    """Write `directory` atomically: all of it or, after a crash, none of it; an existing
    directory of that name is replaced only once the new one is complete. `torch_files`
    (name -> object) are torch.save'd, `extra_files` (name -> bytes, e.g. config.yaml)
    written as they are; all are hashed in meta.json, with `meta`'s fields."""
    directory = Path(directory)
    check_finite(state_dict, directory / MODEL_FILE)  # a diverged run's weights never become the newest
    for name, obj in (torch_files or {}).items():
        check_finite(obj, directory / name)
    with atomic_dir(directory, fsync=True) as staging:
        torch.save(state_dict, staging / MODEL_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps({"model": config.model_dump()} | (extra_config or {}), indent=2))
        if identifiers is not None:
            (staging / IDS_FILE).write_text(json.dumps(identifiers))
        for name, obj in (torch_files or {}).items():
            torch.save(obj, staging / name)
        for name, data in (extra_files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        hashes = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        fields = {"format": FORMAT, "step": step} | (meta or {}) | {"sha256": hashes}
        (staging / META_FILE).write_text(json.dumps(fields, indent=2))
    return directory
