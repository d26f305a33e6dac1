"""trm-submit's settings, validated once at the boundary (frozen, unknown keys rejected).

The defaults are the ARC Prize 2025 recipe (TRM_NOTES, "Post-training recipe"): global batch
384, lr 2e-4 for the trunk and 2e-2 for the puzzle embeddings, EMA, puzzle embeddings only
for the first quarter of the steps, 512 augmentations voted per test input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from trm_kaggle.config import OptimConfig, with_defaults

Mode = Literal["full", "emb_only", "emb_first_quarter", "emb_first_half", "lora"]
# The share of the steps that trains only the puzzle embeddings, per mode.
EMBEDDINGS_ONLY_FRACTION = {"full": 0.0, "emb_only": 1.0, "emb_first_quarter": 0.25,
                            "emb_first_half": 0.5, "lora": 0.0}


# The fine-tuning recipe a package carries (config.yaml's `finetune:`): trm-submit takes each
# from the package unless it is given explicitly.
FINETUNE_KEYS = ("mode", "num_aug", "max_steps", "batch_size", *OptimConfig.model_fields, "lora_rank", "new_rows",
                 "objective")
RENAMED_KEYS = {"warmup_steps": "lr_warmup_steps"}  # in packages made before the rename (one name with trm-pretrain)


def with_package_defaults(options: "SubmitOptions", package: dict, where: str = "config.yaml finetune") -> "SubmitOptions":
    """`options` with the package's fine-tune settings where the user set none. An unknown key,
    a key given under both its old and new name, or a value out of bounds is a UserError
    naming `where` and the key, like any other bad setting."""
    from trm_kaggle.errors import UserError

    for old, new in RENAMED_KEYS.items():
        if old in package and new in package:
            raise UserError(f"{where}: {old} and {new} both set: {old} is {new}'s old name, keep one")
    package = {RENAMED_KEYS.get(key, key): value for key, value in package.items()}
    unknown = sorted(set(package) - set(FINETUNE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]} (known: {', '.join(FINETUNE_KEYS)})")
    taken = {k: v for k, v in package.items() if k not in options.model_fields_set}
    if not taken:
        return options
    try:
        return SubmitOptions.model_validate(options.model_dump(exclude_unset=True) | taken)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"{where}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None


# A short run (the notebook outside the scoring rerun: saving a version, an interactive
# session) goes through every phase on the public placeholder in minutes, not 12 hours.
SHORT_BUDGET_HOURS, SHORT_NUM_AUG, SHORT_MAX_STEPS = 0.25, 8, 100


def shortened(options: "SubmitOptions") -> "SubmitOptions":
    """`options` cut to a short run's size when `short` is set (after the package's recipe
    is applied: the recipe's num_aug and max_steps are what get capped)."""
    if not options.short:
        return options
    steps = options.steps if options.steps == "auto" else min(options.steps, SHORT_MAX_STEPS)
    return options.model_copy(update={"num_aug": min(options.num_aug, SHORT_NUM_AUG), "steps": steps,
                                      "max_steps": min(options.max_steps, SHORT_MAX_STEPS)})


# The ARC Prize 2025 recipe's optimizer settings; the rest are pretraining's (config.OptimConfig).
FinetuneOptim = with_defaults(OptimConfig, lr=2e-4, puzzle_emb_lr=2e-2, lr_warmup_steps=200)


class SubmitOptions(FinetuneOptim):
    out: Path
    """Where submission.json is written (atomically; valid from the first seconds)."""
    model: Path | None = None
    """The packaged model dir, bundle dir or zip; None: discover."""
    challenges: Path | None = None
    """The challenges JSON; None: discover under input_root."""
    competition: str | None = None
    """The competition's slug when several are mounted (discovery)."""
    short: bool = False
    """A short run: every phase in minutes (see shortened)."""
    input_root: Path = Path("/kaggle/input")
    """Where Kaggle mounts the competition's and the user's datasets."""
    scratch: Path | None = None
    """Scratch directory; None: a new one under /kaggle/temp when it exists, else under the
    system's temporary directory, removed at the end unless keep_scratch."""
    keep_scratch: bool = False
    """Keep the scratch directory trm-submit created itself (a given `scratch` is always kept)."""
    budget_hours: float = Field(12.0, gt=0)
    """The run must end within this many hours of started_at."""
    margin_minutes: float | None = Field(None, ge=0)
    """Kept free before the budget ends; None: min(20 min, 10% of the budget)."""
    started_at: float | None = None
    """Wall time (s since the epoch) the budget counts from (the notebook's first cell)."""
    num_aug: int = Field(512, ge=0)
    """Variants voted per test input, besides the original."""
    objective: Literal["trm", "dis"] | None = None
    """Fine-tuning objective: trm, or dis (Deep Improvement Supervision: a TRM package gets a zero step embedding); None: the model's own."""
    mode: Mode = "emb_first_quarter"
    """Fine-tuning mode: full, emb_only, emb_first_quarter, emb_first_half (embeddings alone for that share of the steps, then everything) or lora."""
    steps: int | Literal["auto"] = "auto"
    """Fine-tune steps, or auto: as many as the budget fits after the warm-up timing."""
    max_steps: int = Field(15_000, ge=0)
    """What `auto` never exceeds (the recipe's upper end)."""
    batch_size: int = Field(384, ge=1)
    """Global fine-tune batch, over every device."""
    infer_batch_size: int | None = Field(None, ge=1)
    """Inference batch per device; None: batch_size // devices."""
    lora_rank: int = Field(16, ge=1)
    """Rank of the LoRA adapters (mode lora)."""
    new_rows: Literal["mean", "normal"] = "mean"
    """How the hidden tasks' embedding rows start: the mean of the package's rows, or drawn with their mean and std."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run: auto (CUDA when present), cpu or cuda."""
    gpus: int | Literal["auto"] = "auto"
    """Devices (CPU: worker processes) used in data parallel."""
    compile: bool = True
    """torch.compile on CUDA."""
    seed: int = Field(0, ge=0)
    """Seeds fine-tuning, sampling and augmentation."""
    translation: bool = True
    """Random offsets for the demonstration pairs."""
    progress_every_s: float = Field(60.0, gt=0)
    """How often (s) workers log and checkpoint."""
    write_every_s: float = Field(30.0, ge=0)
    """Least time (s) between submission rewrites."""

    @property
    def budget_hours_used(self) -> float:
        return min(self.budget_hours, SHORT_BUDGET_HOURS) if self.short else self.budget_hours

    @property
    def budget_s(self) -> float:
        return self.budget_hours_used * 3600

    @property
    def margin_s(self) -> float:
        if self.margin_minutes is not None:
            return self.margin_minutes * 60
        return min(20 * 60, 0.1 * self.budget_s)

    def infer_batch_per_device(self, devices: int) -> int:
        """Rows per inference batch on each of `devices`: infer_batch_size when given, else the
        global batch split over the devices (at least 1)."""
        return self.infer_batch_size or max(1, self.batch_size // devices)
