"""Pydantic schemas for configs: frozen, unknown keys rejected, so a typo is an error and
not a silently ignored setting."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from trm_kaggle.errors import UserError


class Frozen(BaseModel):
    # A field's docstring is its description (the schema, `--help`-style listings).
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def with_defaults(base: type[Frozen], **defaults: Any) -> type[Frozen]:
    """`base` with other defaults for some fields, their bounds and descriptions kept: a
    preset in code (SubmitOptions' optimizer settings)."""
    fields = {}
    for name, value in defaults.items():
        info = copy.copy(base.model_fields[name])
        info.default = value
        fields[name] = (info.annotation, info)
    return create_model(base.__name__, __base__=base, **fields)


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
        if self.dis_token_input != "input" and self.objective != "dis":
            raise ValueError(f"dis_token_input {self.dis_token_input} needs objective dis")
        return self


class ModelConfig(_Architecture):
    """TRM (ACT V1) architecture; defaults are the paper configuration (DESIGN §5). Every
    bound is checked here, and ArchConfig takes these very fields (defaults and bounds)."""

    num_puzzle_identifiers: int = Field(ge=1)
    """Puzzle-embedding rows: the dataset's identifiers.json, <blank> first."""
    vocab_size: int = Field(ge=2)
    """Token values (the dataset's dataset.json; ARC: 12)."""
    seq_len: int = Field(ge=1)
    """Tokens per example (the dataset's dataset.json; ARC: 900)."""
    hidden_size: int = Field(512, ge=1)
    """Width D of every position's state."""
    num_heads: int = Field(8, ge=1)
    """Attention heads; hidden_size must divide by it."""
    L_layers: int = Field(2, ge=1)
    """Transformer blocks of the one shared network f."""
    H_cycles: int = Field(3, ge=1)
    """H cycles per ACT step (T in the paper); all but the last run without gradient."""
    L_cycles: int = Field(4, ge=1)
    """z_L updates per H cycle (n in the paper)."""
    expansion: float = Field(4.0, gt=0)
    """SwiGLU width as a multiple of hidden_size (rounded as the original)."""
    puzzle_emb_ndim: int = Field(512, ge=0)
    """Puzzle-embedding width; 0: no puzzle embedding (the original's mode for one-identifier datasets)."""
    puzzle_emb_len: int = Field(16, ge=0)
    """Positions the puzzle embedding takes; 0: ceil(puzzle_emb_ndim / hidden_size), as the original."""
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    """Position encoding of the positions."""
    rope_theta: float = Field(10000.0, gt=0)
    """RoPE base."""
    rms_norm_eps: float = Field(1e-5, gt=0)
    """RMSNorm epsilon."""
    halt_max_steps: int = Field(16, ge=1)
    """ACT steps at most (N_sup); evaluation always runs all of them."""
    halt_exploration_prob: float = Field(0.1, ge=0, le=1)
    """Training: the chance that a sequence must first reach a random step in 2..halt_max_steps before it may halt."""
    forward_dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    """Activations' dtype (weights stay float32)."""
    objective: Literal["trm", "dis"] = "trm"
    """trm: ACT with a learned halting head, every step supervised with the answer; dis: Deep Improvement Supervision (seed 001) - halt_max_steps = N_sup fixed steps, a step-index embedding, step s supervised with an intermediate target (see `dis`)."""
    dis_token_input: Literal["input", "previous"] = "input"
    """objective dis: the token input of steps 2..N_sup - the original input (the paper) or the previous step's argmax prediction (the DIS code)."""

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
    | {"forward_dtype": (Literal["auto", "bfloat16", "float32", "float16"],
                         Field("auto", description="Activations' dtype; auto: bfloat16 on GPU, float32 on the CPU."))})
ArchConfig.__doc__ = "trm-pretrain's arch: ModelConfig without num_puzzle_identifiers, vocab_size and seq_len."


class DISConfig(Frozen):
    """Deep Improvement Supervision's training targets (seed 001, METHODS.md §1), used when
    arch.objective is dis: step s of N_sup is supervised with frame s of a path from the
    input (frame 0) to the label (frame N_sup)."""

    targets: Literal["path", "masking"] = "path"
    """path (the DIS code): frame s holds the label at the first ⌊s·|D|/N_sup⌋ positions of a random order of the positions D where input and label differ, the input elsewhere; masking (the paper's text): those same positions hold the label, the rest of D is not supervised (a mask rate falling linearly to 0)."""
    step_weights: Literal["linear", "uniform"] = "linear"
    """Each step's loss weight: linear (the paper: 2s/(N_sup + 1), mean 1) or uniform (the code: 1)."""


class DistillConfig(Frozen):
    """TRM-Planner's Stage II (seed 000, METHODS.md §2): the TRM loss plus w·L_distill against
    entries of a trm-teacher-cache, at every ACT step, on supervised positions only."""

    cache: str | None = None
    """A trm-teacher-cache directory built from this run's dataset; None: no distillation."""
    weight: float = Field(0.25, ge=0)
    """w: the distillation term's weight."""
    mode: Literal["hard", "soft"] = "hard"
    """hard: stablemax CE against the teacher's tokens; soft: T²·KL(StableMax(teacher/T) ‖ StableMax(student/T)) (needs a cache with logits)."""
    temperature: float = Field(1.0, gt=0)
    """T of soft distillation."""
    quality: float = Field(0.5, ge=0)
    """q: only entries whose teacher loss ℓ ≤ q are eligible; an example without one is not distilled."""


class WandbConfig(Frozen):
    enabled: bool = False
    """Log metrics to Weights & Biases (pip install 'trm-kaggle[wandb]')."""
    project: str = "trm-kaggle"
    """The W&B project."""
    entity: str | None = None
    """The W&B team or user (default: the key's)."""
    name: str | None = None
    """The run's name in W&B (default: W&B's)."""


class OptimConfig(Frozen):
    """The optimizers' settings, shared by trm-pretrain (defaults: the TRM paper's) and trm-submit's
    fine-tuning (SubmitOptions: the ARC Prize 2025 recipe): AdamATan2 for the trunk, sign-SGD for
    the puzzle embeddings, one schedule for both (linear warm-up, then cosine from lr to
    lr_min_ratio·lr), as the original pretrain.py. train.Schedule.of turns it into a schedule."""

    lr: float = Field(1e-4, ge=0)
    """Trunk learning rate (AdamATan2) after warm-up."""
    puzzle_emb_lr: float = Field(1e-2, ge=0)
    """Puzzle-embedding learning rate (sign-SGD)."""
    weight_decay: float = Field(0.1, ge=0)
    """Trunk weight decay (decoupled)."""
    puzzle_emb_weight_decay: float = Field(0.1, ge=0)
    """Puzzle-embedding weight decay."""
    beta1: float = Field(0.9, ge=0, lt=1)
    """AdamATan2's first-moment decay."""
    beta2: float = Field(0.95, ge=0, lt=1)
    """AdamATan2's second-moment decay."""
    lr_warmup_steps: int = Field(2000, ge=0)
    """Optimizer steps of linear warm-up from 0."""
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    """Where the cosine decay ends, as a share of lr; 1: constant after warm-up (the paper)."""
    ema_rate: float = Field(0.999, gt=0, lt=1)
    """Decay of the weights' exponential moving average (what is evaluated, saved and packaged)."""


class PretrainConfig(OptimConfig):
    """trm-pretrain's resolved config (Hydra composes it from conf/ and the command line; this
    validates it, so a bad value is one line and exit 2)."""

    preset: str
    """The preset under conf/preset/ this run started from."""
    data_path: str
    """A dataset directory (trm-build-data's, or the original builders')."""
    run_dir: str
    """Where checkpoints (step_N/) and metrics.jsonl go."""
    seed: int = Field(0, ge=0)
    """Seeds the model's init, the data order and every random draw of training."""
    epochs: int = Field(100_000, ge=1)
    """The planned length in epochs, when total_steps is not given."""
    total_steps: int | None = Field(None, ge=1)
    """The planned length in optimizer steps (the schedule's); default: from epochs."""
    max_steps: int | None = Field(None, ge=1)
    """Stop (and checkpoint) after this many optimizer steps: a pause, not a plan; resume=true continues."""
    global_batch_size: int = Field(768, ge=1)
    """Examples per optimizer step, over all ranks."""
    embeddings_only_fraction: float = Field(0.0, ge=0, le=1)
    """The first part of the steps trains only the puzzle embeddings (no trunk gradient)."""
    ema: bool = True
    """Keep an EMA of the weights (ema_rate)."""
    init_from: str | None = None
    """A checkpoint (ours or the original's) to start from: its trunk, and its embedding rows by name."""
    init_new_rows: Literal["mean", "normal"] = "mean"
    """How embedding rows init_from lacks start: the mean of its rows, or drawn with their mean and std."""
    init_identifiers: str | None = None
    """identifiers.json naming init_from's rows when none lies beside it."""
    init_rows_by_position: bool = False
    """Match init_from's unnamed rows to this dataset by position instead (warns)."""
    resume: bool = False
    """Continue from run_dir's newest checkpoint exactly where it stopped."""
    compile: bool = True
    """torch.compile the model on CUDA (ignored on the CPU)."""
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also checkpoint every N steps (besides every evaluation and the last step)."""
    keep_last: int | None = Field(None, ge=1)
    """Delete all but the newest N checkpoints."""
    eval_every_epochs: int | None = Field(None, ge=1)
    """Evaluate on the test split every N epochs (pass@K on ARC, exact accuracy otherwise)."""
    eval_num_aug: int | None = Field(None, ge=0)
    """Evaluate on the original plus this many variants per task (default: all)."""
    eval_batch_size: int = Field(256, ge=1)
    """Examples per evaluation batch, per rank."""
    log_every_steps: int = Field(10, ge=1)
    """Log (stdout, metrics.jsonl, W&B) every N steps."""
    arch: ArchConfig = ArchConfig()
    """The TRM's architecture (ModelConfig without the dataset's fields)."""
    dis: DISConfig = DISConfig()
    """Deep Improvement Supervision's targets and step weights (with arch.objective=dis)."""
    distill: DistillConfig = DistillConfig()
    """Distillation from a trm-teacher-cache (distill.cache=DIR); init_from defaults to its teacher."""
    wandb: WandbConfig = WandbConfig()
    """Weights & Biases logging (off by default)."""
