"""trm-simulate's timing model: how long each phase of a Kaggle run takes, predicted from
FLOPs, a hardware profile and the hidden test set's size, before a submission is spent.

    cost of a phase = FLOPs it needs / (devices × peak FLOP/s × achieved efficiency)

- FLOPs per example come from the model config (`model.flops_per_example`: ≈398 GFLOP per
  training step and 239 GFLOP per ACT step forward at the paper config). An embeddings-only
  step skips the weight gradients: forward + half of the backward.
- A profile gives the devices' peak, memory and bandwidth, and the achieved efficiency of
  training and of inference. Uncalibrated, `kaggle-4xL4` uses what the ARC Prize 2025 TRM
  entry's own timings imply: ~12% of the L4s' peak in training (15k steps of batch 384 in
  ~11 h) and ~35% in inference (512 augmentations of the hidden set in ~1 h).
- The workload is the challenges file scaled to the hidden rerun: 240 tasks with the file's
  test inputs per task, and grids at least evaluation-sized (the public placeholder's are
  ~1.8× smaller). The model's cost does not depend on grid size (every grid sits in a 30×30
  canvas); the data build and the vote do.

Whether a run fits is decided by trm-submit's own budget rule (`kaggle.budget.plan_finetune`)
fed with these costs as its warm-up would measure them: inference is reserved at its
predicted time × 1.25 plus a hand-over and a voting reserve, so the steps that fit here are
the steps `--steps auto` plans, and a dry run plans them too.

Nothing predicted here can beat the hardware: efficiencies lie in (0, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from trm_kaggle.arc import load_challenges
from trm_kaggle.augment import arc_shape
from trm_kaggle.config import ModelConfig
from trm_kaggle.errors import UserError
from trm_kaggle.hardware import PEAK_BF16_TFLOPS, PEAK_FP16_TFLOPS
from trm_kaggle.kaggle.budget import INFERENCE_SAFETY, Measured, Plan, plan_finetune
from trm_kaggle.model import block_calls, flops_per_example

HIDDEN_TASKS = 240
EVALUATION_CELLS_PER_TASK = 1882   # demonstration cells per task, ARC evaluation (KAGGLE.md)
DATA_EXAMPLES_PER_S = 174_600      # trm-build-data on the 2-core CI machine (benchmarks/results)
VOTE_S_PER_PREDICTION = 15e-6      # decode + vote, measured on the 2-core CI machine
WHEEL_INSTALL_S = 45.0             # pip install --no-index of the bundle (trm-package --verify)
WORKER_START_S = 20.0              # spawn, imports, data, model build per phase
COMPILE_S = 90.0                   # torch.compile of the training step on a GPU
WRITE_S = 0.5                      # one atomic submission write
WARMUP_PROBES = 3                  # timed calls per warm-up measurement (finetune.timed)


@dataclass(frozen=True)
class Profile:
    name: str
    devices: int
    peak_tflops: float           # per device, in the dtype the run uses (bf16; fp16 on T4; fp32 CPU)
    memory_gb: float             # usable per device
    bandwidth_gbs: float
    train_efficiency: float      # achieved / peak, training steps
    infer_efficiency: float      # achieved / peak, inference ACT steps
    compile: bool = True
    source: str = "documented default"
    uncertainty: float = 0.3     # relative, ± on each compute phase
    warning: str | None = None   # said in the prediction itself (table and JSON)

    def __post_init__(self) -> None:
        for name in ("train_efficiency", "infer_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"profile {self.name}: {name} {getattr(self, name)} must lie in (0, 1]")

    def seconds(self, flops: float, efficiency: float) -> float:
        return flops / (self.devices * self.peak_tflops * 1e12 * efficiency)


ENTRY = "ARC Prize 2025 TRM entry (~11 h for 15k steps, ~1 h of inference): uncalibrated"
PROFILES = {
    "kaggle-4xL4": Profile("kaggle-4xL4", 4, PEAK_BF16_TFLOPS["L4"], 22.5, 300, 0.12, 0.35, source=ENTRY),
    "kaggle-2xT4": Profile("kaggle-2xT4", 2, PEAK_FP16_TFLOPS["T4"], 15.0, 320, 0.12, 0.35,
                           source=ENTRY + " (fp16 peak)"),
    "h100": Profile("h100", 1, PEAK_BF16_TFLOPS["H100"], 80.0, 3350, 0.35, 0.366,
                    source="measured: trm-kaggle on an H100, compiled bf16", uncertainty=0.1),
    "cpu": Profile("cpu", 1, 0.1, 24.0, 20, 0.3, 0.3, compile=False, source="rough default: run --calibrate"),
}


@dataclass(frozen=True)
class Workload:
    tasks: int
    test_inputs: int
    demo_pairs: int
    cells_per_task: float        # demonstration cells per task, after scaling
    cell_scale: float
    source: str

    @classmethod
    def hidden_from(cls, challenges: Path | None, hidden_tasks: int = HIDDEN_TASKS,
                    cell_scale: float | None = None) -> "Workload":
        """The hidden rerun as the file predicts it: `hidden_tasks` tasks with the file's
        test inputs and demonstration pairs per task; cells scaled to at least evaluation size."""
        if challenges is None:  # ARC Prize 2025 evaluation: 120 tasks, 172 test inputs, 358 demonstrations
            per_task_inputs, per_task_pairs, cells, source = 172 / 120, 358 / 120, EVALUATION_CELLS_PER_TASK, "default"
        else:
            tasks = load_challenges(challenges)
            per_task_inputs = sum(len(t.test) for t in tasks) / len(tasks)
            per_task_pairs = sum(len(t.train) for t in tasks) / len(tasks)
            cells = sum(p.input.size + p.output.size for t in tasks for p in t.train) / len(tasks)
            source = f"{challenges} ({len(tasks)} tasks)"
        scale = cell_scale if cell_scale is not None else max(1.0, EVALUATION_CELLS_PER_TASK / cells)
        return cls(hidden_tasks, round(hidden_tasks * per_task_inputs), round(hidden_tasks * per_task_pairs),
                   cells * scale, scale, source)


@dataclass(frozen=True)
class Settings:
    steps: int = 15_000
    batch_size: int = 384
    num_aug: int = 512
    embeddings_only_fraction: float = 0.25
    budget_hours: float = 12.0
    margin_minutes: float = 20.0
    submission_writes: int = 100

    @property
    def budget_s(self) -> float:
        return self.budget_hours * 3600


def paper_config() -> ModelConfig:
    return ModelConfig(**arc_shape(2).model_dump())


def dis_paper_config() -> ModelConfig:
    """Seed 001's DIS medium on ARC: the arc2_dis preset's architecture."""
    from trm_kaggle.cli.pretrain import load_config

    arch = load_config(["preset=arc2_dis", "data_path=-", "run_dir=-"]).arch
    return arch.to_model_config(arc_shape(2), cuda=True)


COMPUTE_PHASES = ("finetune_warmup", "finetune", "inference")  # from FLOPs and efficiency: ±uncertainty


@dataclass(frozen=True)
class StepCosts:
    """Seconds on the profile, all devices together."""

    embeddings_step: float
    full_step: float
    infer_example_step: float    # one ACT step of one example

    @classmethod
    def of(cls, config: ModelConfig, profile: Profile, batch_size: int) -> "StepCosts":
        train, forward = flops_per_example(config)
        embeddings_only = forward + (train - forward) / 2  # no weight gradients
        return cls(profile.seconds(embeddings_only * batch_size, profile.train_efficiency),
                   profile.seconds(train * batch_size, profile.train_efficiency),
                   profile.seconds(forward, profile.infer_efficiency))


@dataclass
class Prediction:
    phases: dict[str, float]
    budget_s: float
    margin_s: float
    profile: Profile
    workload: Workload
    settings: Settings
    config: ModelConfig
    costs: StepCosts
    predictions: int             # test inputs × (num_aug + 1)
    notes: list[str] = field(default_factory=list)
    outcome: dict | None = None  # the dry run's, when one ran (trm-simulate --dry-run)

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())

    def upper_s(self) -> float:
        """The total with every compute phase at +uncertainty."""
        return self.total_s + self.profile.uncertainty * sum(self.phases[name] for name in COMPUTE_PHASES)

    def plan(self, upper: bool = False) -> Plan:
        """trm-submit's plan (`plan_finetune`, with steps "auto" and no cap) made with these
        costs as its warm-up would measure them, after the phases that precede it; with
        every compute phase at +uncertainty when `upper`."""
        k = 1 + self.profile.uncertainty if upper else 1.0
        c, devices = self.costs, self.profile.devices
        warmup = self.phases["finetune_warmup"] * k  # a worker's start as the warm-up measures it (finetune.py)
        measured = Measured(c.embeddings_step * k, c.full_step * k, c.infer_example_step * devices * k, warmup)
        planned_at = self.phases["wheel_install"] + self.phases["data"] + warmup
        return plan_finetune(measured, planned_at, self.budget_s - self.margin_s, self.predictions,
                             self.config.halt_max_steps, devices, self.settings.embeddings_only_fraction, "auto",
                             max_steps=2**62)

    def steps_that_fit(self, upper: bool = False) -> int:
        """The most fine-tune steps trm-submit's planner keeps before inference's reserved time
        (at the expected cost, or with the compute phases at +uncertainty)."""
        return self.plan(upper).steps_that_fit

    @property
    def fits(self) -> bool:
        """All the requested steps fit at the expected cost (fits_at_upper: still at +uncertainty)."""
        return self.settings.steps <= self.steps_that_fit()

    @property
    def fits_at_upper(self) -> bool:
        return self.settings.steps <= self.steps_that_fit(upper=True)

    def to_json(self) -> str:
        plan = self.plan()
        return json.dumps({"phases": {f"{k}_s": round(v, 1) for k, v in self.phases.items()},
                           "total_s": round(self.total_s, 1), "budget_s": self.budget_s,
                           "margin_s": self.margin_s, "fits": self.fits,
                           "inference_reserved_s": round(plan.predicted_inference_s + plan.reserve_s, 1),
                           "total_s_upper": round(self.upper_s(), 1), "fits_at_upper": self.fits_at_upper,
                           "steps": self.settings.steps, "steps_that_fit": self.steps_that_fit(),
                           "steps_that_fit_upper": self.steps_that_fit(upper=True),
                           "uncertainty": self.profile.uncertainty, "profile": self.profile.name,
                           "warning": self.profile.warning, "dry_run": self.outcome})


def predict(profile: Profile, workload: Workload, settings: Settings,
            config: ModelConfig | None = None) -> Prediction:
    """Seconds per phase of a run on `profile`."""
    config = config or paper_config()
    costs = StepCosts.of(config, profile, settings.batch_size)
    variants = settings.num_aug + 1
    train_examples = workload.demo_pairs * variants
    predictions = workload.test_inputs * variants
    f = settings.embeddings_only_fraction
    emb_steps = math.floor(f * settings.steps)
    warmup = WARMUP_PROBES * (costs.embeddings_step + costs.full_step) + \
        WARMUP_PROBES * costs.infer_example_step * settings.batch_size / profile.devices
    phases = {
        "wheel_install": WHEEL_INSTALL_S,
        "data": (train_examples + predictions) / DATA_EXAMPLES_PER_S * workload.cell_scale,
        "finetune_warmup": WORKER_START_S + (COMPILE_S if profile.compile else 0) + warmup,
        "finetune": emb_steps * costs.embeddings_step + (settings.steps - emb_steps) * costs.full_step,
        "inference": WORKER_START_S + predictions * config.halt_max_steps * costs.infer_example_step,
        "voting": predictions * VOTE_S_PER_PREDICTION * workload.cell_scale,
        "writing": settings.submission_writes * WRITE_S,
    }
    return Prediction(phases, settings.budget_s, settings.margin_minutes * 60, profile, workload, settings, config,
                      costs, predictions)


def model_line(config: ModelConfig) -> str:
    """The model timed, in block calls (one call of the shared network f) and GFLOP per example."""
    per_step, per_pass = block_calls(config)
    train, forward = flops_per_example(config)
    return (f"model: objective {config.objective}, hidden {config.hidden_size} × {config.L_layers} layers, "
            f"{config.halt_max_steps} ACT steps × {config.H_cycles} H × ({config.L_cycles} L + 1): {per_step} block "
            f"calls per training step, {per_pass} per example pass; {train / 1e9:.0f} GFLOP per training step, "
            f"{forward / 1e9:.0f} per ACT step forward, per example")


def report_lines(p: Prediction) -> list[str]:
    w, s, prof = p.workload, p.settings, p.profile
    lines = [
        f"profile {prof.name}: {prof.devices} × {prof.peak_tflops:g} TFLOP/s peak, efficiency train "
        f"{prof.train_efficiency:.1%} / inference {prof.infer_efficiency:.1%} ({prof.source}; ±{prof.uncertainty:.0%})",
        f"workload: {w.tasks} hidden tasks, {w.test_inputs} test inputs, {w.demo_pairs} demonstration pairs, "
        f"{w.cells_per_task:.0f} demo cells/task (×{w.cell_scale:.2f} scaling), from {w.source}",
        f"settings: {s.steps} steps × batch {s.batch_size} ({s.embeddings_only_fraction:.0%} embeddings only), "
        f"{s.num_aug} augmentations",
        model_line(p.config),
        f"{'phase':<16} {'predicted s':>12} {'h':>7} {'budget':>7}",
    ]
    for name, seconds in p.phases.items():
        lines.append(f"{name:<16} {seconds:>12.0f} {seconds / 3600:>7.2f} {seconds / p.budget_s:>7.1%}")
    lines.append(f"{'total':<16} {p.total_s:>12.0f} {p.total_s / 3600:>7.2f} {p.total_s / p.budget_s:>7.1%}")
    return lines + verdict_lines(p) + ([p.profile.warning] if p.profile.warning else []) + p.notes


def verdict_lines(p: Prediction) -> list[str]:
    """Fits or not at the expected cost, then at +uncertainty, and the steps that do fit, by
    trm-submit's budget rule (Prediction.plan)."""
    u, budget, steps = p.profile.uncertainty, f"{p.budget_s / 3600:.1f} h", p.settings.steps
    plan = p.plan()
    reserved = plan.predicted_inference_s + plan.reserve_s
    lines = [f"trm-submit's planner reserves {reserved:.0f} s for inference and voting (its prediction × "
             f"{INFERENCE_SAFETY:g} for stragglers, a hand-over and a voting reserve) and fine-tunes until then"]
    fit = p.steps_that_fit()
    total = f"{p.total_s / 3600:.2f} h + {p.margin_s / 60:.0f} min margin vs {budget}"
    lines.append(f"fits at the expected cost: {total}; room for {fit} steps beside that reserve" if p.fits else
                 f"does NOT fit at the expected cost: beside that reserve, at most {fit} of the {steps} steps fit "
                 f"(the phases without it: {total})")
    upper = p.steps_that_fit(upper=True)
    lines.append(f"at +{u:.0%} on the compute phases: {p.upper_s() / 3600:.2f} h, "
                 + ("still fits" if p.fits_at_upper else f"does NOT fit (at most {upper} steps would); "
                    "trm-submit measures and shortens fine-tuning to fit, so the run ends on time with fewer "
                    "steps"))
    return lines


# ---------------------------------------------------------------------------- profiles from files

OTHER_DEVICE_WARNING = ("WARNING: a calibration from another kind of device: efficiency does not transfer "
                        "(dtype, batch and kernels differ), so this prediction may be off by far more than ±50%")


def load_calibration(path: Path, target: Profile, other_device: bool = False) -> Profile:
    """The target's peak with the efficiencies measured by --calibrate on the same kind of
    device (±10%). One measured on another kind (a CPU's float32 at batch 1 for an L4) is
    refused unless `other_device`; then it applies with ±50% and OTHER_DEVICE_WARNING in the
    prediction itself. UserError for an unreadable file or a refused calibration."""
    try:
        raw = json.loads(path.read_text())
        train, infer, device = float(raw["train_efficiency"]), float(raw["infer_efficiency"]), str(raw["device"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a calibration file ({type(exc).__name__}: {exc})") from None
    same = device == target.name
    if not same and not other_device:
        raise UserError(f"{path}: measured on {device}, not on {target.name}: an efficiency measured on one kind of "
                        f"device does not predict another's; calibrate on {target.name}, or pass "
                        "--calibration-from-other-device to apply it anyway (±50%)")
    return replace(target, train_efficiency=min(train, 1.0), infer_efficiency=min(infer, 1.0),
                   source=f"calibrated on {device} ({path})" + ("" if same else ", applied to another device"),
                   uncertainty=0.1 if same else 0.5, warning=None if same else OTHER_DEVICE_WARNING)


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(f"--profile {name}: unknown; use one of {', '.join(PROFILES)}")
    return PROFILES[name]


def calibration_record(device: str, peak_tflops: float, train_s: float, infer_s: float, batch: int,
                       config: ModelConfig) -> dict:
    """What --calibrate saves: the achieved efficiency of a timed training step and ACT step."""
    train, forward = flops_per_example(config)
    return {"device": device, "peak_tflops": peak_tflops, "batch": batch,
            "train_step_s": train_s, "infer_step_s": infer_s,
            "train_efficiency": train * batch / train_s / (peak_tflops * 1e12),
            "infer_efficiency": forward * batch / infer_s / (peak_tflops * 1e12),
            "config": config.model_dump()}
