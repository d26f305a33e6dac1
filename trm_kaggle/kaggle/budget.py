"""One deadline for the whole run, and how fine-tuning is sized to leave inference its time.

    deadline = start + budget − margin             (the margin absorbs Kaggle's runtime noise)
    inference ≈ hand-over + (worker start + examples × ACT steps × s per example-step / devices) × 1.25
    fine-tuning ends at deadline − inference − a voting reserve
    steps (auto) = what fits before then at the measured step times, capped at max_steps

Times are the run clock's seconds (`Clock.now()`: wall time, or virtual in a dry run).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


INFERENCE_SAFETY = 1.25   # measured throughput is optimistic: variable grid sizes, stragglers
HANDOVER_S = 10.0         # fine-tuning's last save and exit, inference workers' spawn
VOTE_RESERVE_S = 5.0      # decode + vote + write, besides 5% of inference


@dataclass(frozen=True)
class Deadline:
    start: float
    end: float

    @classmethod
    def of(cls, start: float, budget_s: float, margin_s: float) -> "Deadline":
        return cls(start, start + budget_s - margin_s)

    def left(self, now: float) -> float:
        """Seconds from `now` (the run clock's) to the end."""
        return self.end - now


@dataclass(frozen=True)
class Measured:
    """Warm-up timings on this machine, per device (all devices run at the same pace)."""

    step_s_embeddings: float     # one fine-tune step training only the puzzle embeddings
    step_s_full: float           # one fine-tune step training everything
    infer_s_per_example_step: float  # one ACT step of one inference example
    startup_s: float = 0.0       # a worker's start: spawn, imports, data, model (inference pays it too)


@dataclass
class Plan:
    steps: int
    embeddings_only_steps: int
    finetune_end: float          # wall time fine-tuning must stop by
    predicted_finetune_s: float
    predicted_inference_s: float
    reserve_s: float
    deadline: float
    why: str
    measured: Measured | None = None
    steps_that_fit: int = 0      # the most steps that fit before finetune_end (what "auto" takes, uncapped)
    written_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        """The plan as JSON, for the record (the run never reads it back)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    def stop_workers_at(self, stride: int = 1) -> float:
        """When the supervisor stops fine-tuning workers that have not stopped themselves at
        `finetune_end` (seconds): 10 s and five full steps later (`stride` steps each in a dry
        run, which jumps that many at once)."""
        step_s = self.measured.step_s_full * stride if self.measured else 0.0
        return self.finetune_end + 10 + 5 * step_s


def predict_inference_s(measured: Measured, examples: int, act_steps: int, devices: int) -> float:
    compute = examples * act_steps * measured.infer_s_per_example_step / max(devices, 1)
    return HANDOVER_S + (measured.startup_s + compute) * INFERENCE_SAFETY


def plan_finetune(measured: Measured, now: float, deadline: float, examples: int, act_steps: int,
                  devices: int, embeddings_only_fraction: float, steps: int | str, max_steps: int) -> Plan:
    """Fine-tuning's length and end time so that inference keeps its predicted time."""
    inference = predict_inference_s(measured, examples, act_steps, devices)
    reserve = VOTE_RESERVE_S + 0.05 * inference
    finetune_end = deadline - inference - reserve
    available = max(0.0, finetune_end - now)
    f = embeddings_only_fraction
    mean_step = f * measured.step_s_embeddings + (1 - f) * measured.step_s_full
    fits = math.floor(available / mean_step) if mean_step > 0 else max_steps
    if steps == "auto":
        chosen = min(fits, max_steps)
        why = (f"auto: {fits} steps fit in {available:.0f} s at {mean_step:.3f} s/step"
               + (f", capped at {max_steps}" if fits > max_steps else ""))
    else:
        chosen = int(steps)
        why = f"requested {chosen} steps" + (f" (only ~{fits} fit: fine-tuning will stop early)"
                                              if chosen > fits else "")
    return Plan(steps=chosen, embeddings_only_steps=math.floor(f * chosen), finetune_end=finetune_end,
                predicted_finetune_s=chosen * mean_step, predicted_inference_s=inference,
                reserve_s=reserve, deadline=deadline, why=why, measured=measured, steps_that_fit=fits)


def since_start(seconds: float) -> str:
    """A time relative to the run's start: '+95 s', or '-161 s (before the start)'."""
    return f"{seconds:+.0f} s" + (" (before the start)" if seconds < 0 else "")


def plan_lines(plan: Plan, start: float) -> list[str]:
    """The plan for the log, times relative to the run's start."""
    lines = [f"plan: {plan.steps} fine-tune steps ({plan.embeddings_only_steps} embeddings only), {plan.why}",
             f"plan: fine-tune ~{plan.predicted_finetune_s:.0f} s, must end by {since_start(plan.finetune_end - start)}; "
             f"inference ~{plan.predicted_inference_s:.0f} s; reserve {plan.reserve_s:.0f} s; "
             f"deadline {since_start(plan.deadline - start)}"]
    if plan.steps == 0:
        lines.append("plan: the budget is too small on this device for one fine-tune step: the packaged model "
                     "predicts, and chunks that do not fit before the deadline keep their fallback answers")
    return lines
