"""Pydantic schemas for configs: frozen, unknown keys rejected, so a typo is an error and
not a silently ignored setting."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from trm_kaggle.errors import UserError


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Architecture(Frozen):
    """What ModelConfig and ArchConfig share: derived sizes and the cross-field checks (run at
    validation, so a bad combination is one line at the boundary, not a traceback later)."""

    @property
    def puzzle_tokens(self) -> int:
        """Puzzle-embedding positions prepended to the sequence's tokens."""
        if self.puzzle_emb_len:
            return self.puzzle_emb_len
        return -(self.puzzle_emb_ndim // -self.hidden_size)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @model_validator(mode="after")
    def _check_shapes(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.pos_encodings == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, hidden_size / num_heads is {self.head_dim}")
        if self.puzzle_emb_ndim > self.puzzle_tokens * self.hidden_size:
            raise ValueError(f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit in "
                             f"{self.puzzle_tokens} tokens of {self.hidden_size}")
        return self


class ModelConfig(_Architecture):
    """TRM (ACT V1) architecture; defaults are the paper configuration (DESIGN §5). Every
    bound is checked here, and ArchConfig takes these very fields (defaults and bounds)."""

    num_puzzle_identifiers: int = Field(ge=1)
    vocab_size: int = Field(ge=2)  # these three are the dataset's (dataset.json, identifiers.json)
    seq_len: int = Field(ge=1)
    hidden_size: int = Field(512, ge=1)
    num_heads: int = Field(8, ge=1)
    L_layers: int = Field(2, ge=1)
    H_cycles: int = Field(3, ge=1)
    L_cycles: int = Field(4, ge=1)
    expansion: float = Field(4.0, gt=0)
    puzzle_emb_ndim: int = Field(512, ge=0)  # 0: no puzzle embedding (one-identifier datasets)
    puzzle_emb_len: int = Field(16, ge=0)  # 0: ceil(puzzle_emb_ndim / hidden_size), as the original
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    halt_max_steps: int = Field(16, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0, le=1)
    forward_dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"


TINY_MODEL = dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=2, L_cycles=1, expansion=2.0, puzzle_emb_ndim=32,
                  puzzle_emb_len=1, halt_max_steps=2, forward_dtype="float32")


def tiny_model_config(shape: "DataShape", **changes) -> ModelConfig:
    """The one tiny TRM (hidden 32, 1 layer, 2×1 cycles, 2 ACT steps, float32) that CPU tests,
    the dry run and the golden trace share, for data of `shape`; `changes` override any
    field. The `cpu_tiny` preset holds the same architecture for trm-pretrain."""
    return ModelConfig(**(shape.model_dump() | TINY_MODEL | changes))


# Keys of the original's `arch:` block that name code paths we implement one way only.
_ORIGINAL_ONLY = {"mlp_t": False, "no_ACT_continue": True}
_ORIGINAL_IGNORED = {"name", "loss", "H_layers", "batch_size"}


def model_config_from_original(arch: dict[str, Any], shape: DataShape, where: str) -> ModelConfig:
    """The ModelConfig of an original-TRM `arch:` block (all_config.yaml) for data of `shape`."""
    for key, supported in _ORIGINAL_ONLY.items():
        if arch.get(key, supported) != supported:
            raise UserError(f"{where}: arch.{key}={arch[key]} is not supported (only {supported})")
    fields = {k: v for k, v in arch.items() if k not in _ORIGINAL_IGNORED and k not in _ORIGINAL_ONLY}
    try:
        return ModelConfig(**shape.model_dump(), **fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"{where}: arch.{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


class DataShape(Frozen):
    """What a dataset decides about the model: embedding rows (identifiers.json), token
    vocabulary and sequence length (dataset.json). ARC's is `augment.arc_shape(rows)`."""

    num_puzzle_identifiers: int = Field(ge=1)
    vocab_size: int = Field(ge=2)
    seq_len: int = Field(ge=1)

    def mismatch(self, config: "ModelConfig") -> str | None:
        """'seq_len 900 ≠ 64'-style text for the first field where `config` differs (rows aside:
        init_from and trm-eval map rows by name), or None."""
        for name in ("seq_len", "vocab_size"):
            if getattr(config, name) != getattr(self, name):
                return f"{name} {getattr(config, name)}, the dataset's is {getattr(self, name)}"
        return None


DATASET_FIELDS = tuple(DataShape.model_fields)  # the dataset decides these


class _ArchBase(_Architecture):
    def to_model_config(self, shape: DataShape, cuda: bool) -> ModelConfig:
        fields = self.model_dump()
        if fields["forward_dtype"] == "auto":
            fields["forward_dtype"] = "bfloat16" if cuda else "float32"
        return ModelConfig(**shape.model_dump(), **fields)


# ModelConfig without what the dataset decides, built from ModelConfig's own fields so that a
# default or a bound lives in one place; forward_dtype may also be "auto" (bf16 on GPU, f32 on CPU).
ArchConfig = create_model(
    "ArchConfig", __base__=_ArchBase,
    **{name: (info.annotation, info) for name, info in ModelConfig.model_fields.items() if name not in DATASET_FIELDS}
    | {"forward_dtype": (Literal["auto", "bfloat16", "float32", "float16"], "auto")})
ArchConfig.__doc__ = "trm-pretrain's arch: ModelConfig without num_puzzle_identifiers, vocab_size and seq_len."


class WandbConfig(Frozen):
    enabled: bool = False
    project: str = "trm-kaggle"
    entity: str | None = None
    name: str | None = None


class PretrainConfig(Frozen):
    """trm-pretrain's resolved config (Hydra composes it; this validates it)."""

    preset: str
    data_path: str
    run_dir: str
    seed: int = Field(0, ge=0)
    epochs: int = Field(100_000, ge=1)
    total_steps: int | None = Field(None, ge=1)  # the planned length (schedule); default from epochs
    max_steps: int | None = Field(None, ge=1)  # stop after this many optimizer steps (a pause, not a plan)
    global_batch_size: int = Field(768, ge=1)
    lr: float = Field(1e-4, ge=0)
    puzzle_emb_lr: float = Field(1e-2, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    puzzle_emb_weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    lr_warmup_steps: int = Field(2000, ge=0)
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    embeddings_only_fraction: float = Field(0.0, ge=0, le=1)  # first part of the steps: embeddings only
    ema: bool = True
    ema_rate: float = Field(0.999, gt=0, lt=1)
    init_from: str | None = None  # a checkpoint (ours or original) to start from
    init_new_rows: Literal["mean", "normal"] = "mean"
    init_identifiers: str | None = None  # names of init_from's rows when it has no identifiers.json
    init_rows_by_position: bool = False  # or: match its unnamed rows to this dataset by position (warns)
    resume: bool = False
    compile: bool = True  # torch.compile on CUDA; ignored on CPU
    checkpoint_every_steps: int | None = Field(None, ge=1)  # besides every eval and the final step
    keep_last: int | None = Field(None, ge=1)
    eval_every_epochs: int | None = Field(None, ge=1)
    eval_num_aug: int | None = Field(None, ge=0)
    eval_batch_size: int = Field(256, ge=1)
    log_every_steps: int = Field(10, ge=1)
    arch: ArchConfig = ArchConfig()
    wandb: WandbConfig = WandbConfig()
