"""trm-submit: the whole Kaggle run, from the hidden tasks to `submission.json`, on time.

    submission = submit(SubmitOptions(out=Path("/kaggle/working/submission.json")))

1. Find the challenges and the packaged model; write a valid fallback submission at once.
2. Build the hidden tasks' dataset in scratch: demonstration pairs (augmented, translated)
   to train on, test inputs under `num_aug` augmentations to vote over.
3. Fine-tune in worker processes, one per device: they report the warm-up's timings, this
   process plans (budget.py) and sends the plan back.
4. Predict in worker processes, chunk by chunk; vote as chunks arrive and rewrite the
   submission atomically as it improves.

The supervisor (this process) never touches a GPU, so nothing a worker does (a crash, an
OOM, a hang) can stop it from writing the file. Every path after step 1 ends with a valid
submission; the report says what happened.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from trm_kaggle.arc import Task, load_challenges
from trm_kaggle.augment import canvas_side
from trm_kaggle.checkpoint import read_model_config
from trm_kaggle.config import ModelConfig
from trm_kaggle.dataset.build import BuildOptions, build_dataset, oversized_grid
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.errors import UserError
from trm_kaggle.evaluate import add_votes
from trm_kaggle.kaggle import faults, paths, workers
from trm_kaggle.kaggle.budget import Deadline, Plan, plan_finetune, plan_lines
from trm_kaggle.kaggle.clock import Clock, WallClock
from trm_kaggle.kaggle.finetune import finetune_worker
from trm_kaggle.kaggle.infer import chunk_path, infer_worker, load_predictions, plan_chunks
from trm_kaggle.kaggle.options import EMBEDDINGS_ONLY_FRACTION, SubmitOptions, shortened, with_package_defaults
from trm_kaggle.submission import write_submission
from trm_kaggle.vote import Votes, build_submission

log = logging.getLogger("trm_kaggle.submit")
POLL_S = 0.25
SUBSET = "hidden"


@dataclass
class Report:
    out: Path
    start: float
    deadline: float
    phases: dict[str, float] = field(default_factory=dict)  # actual seconds per phase
    plan: Plan | None = None
    steps_done: int | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    writes: int = 0
    test_inputs: int = 0   # of the challenges file
    answered: int = 0      # test inputs whose attempts come from the model, not the fallback
    finetune_started: bool = False
    events: list[str] = field(default_factory=list)
    error: str | None = None

    def event(self, message: str) -> None:
        self.events.append(message)
        log.warning(message)

    def failures(self) -> list[str]:
        """Why this run's file is not the model's work, one short reason each; [] when it is.
        A run that fine-tuned nothing it planned to, predicted nothing, or answered every test
        input with the fallback has failed, even though its file is valid."""
        reasons = [f"error: {self.error}"] if self.error else []
        if self.finetune_started and (self.plan is None or (self.plan.steps > 0 and not self.steps_done)):
            reasons.append("fine-tuning produced no weights (the packaged model predicted)")
        if self.test_inputs and self.chunks_done == 0 and self.plan is not None and self.plan.steps == 0:
            reasons.append(f"budget too small on this device: no fine-tune step and no inference chunk fit; "
                           f"the submission holds fallbacks only ({self.test_inputs} test inputs)")
        elif self.test_inputs and self.chunks_done == 0:
            reasons.append(f"inference produced no predictions: all {self.test_inputs} answers are fallbacks")
        elif self.test_inputs and self.answered == 0:
            reasons.append(f"no prediction decoded to a grid: all {self.test_inputs} answers are fallbacks")
        return reasons

    def verdict(self) -> str:
        """The run in one line: OK or FAILED, and why."""
        failures = self.failures()
        if failures:
            return "FAILED: " + "; ".join(failures)
        return (f"OK: {self.steps_done or 0} fine-tune steps; {self.answered} of {self.test_inputs} test inputs "
                f"answered by the model")

    def lines(self) -> list[str]:
        predicted = {"finetune": self.plan.predicted_finetune_s, "inference": self.plan.predicted_inference_s} \
            if self.plan else {}
        rows = [f"trm-submit: {self.verdict()}", f"{'phase':<10} {'predicted s':>12} {'actual s':>10}"]
        for name, seconds in self.phases.items():
            guess = f"{predicted[name]:.1f}" if name in predicted else "-"
            rows.append(f"{name:<10} {guess:>12} {seconds:>10.1f}")
        total = sum(self.phases.values())
        rows.append(f"{'total':<10} {'':>12} {total:>10.1f}  (deadline at {self.deadline - self.start:.0f} s)")
        if self.plan:
            rows.append(f"fine-tune steps: {self.steps_done} done of {self.plan.steps} planned")
        rows.append(f"inference chunks: {self.chunks_done} of {self.chunks_total}; submission written "
                    f"{self.writes} time(s): {self.out}")
        rows.append(f"answers: {self.answered} of {self.test_inputs} test inputs from the model, "
                    f"{self.test_inputs - self.answered} fallback(s)")
        rows += [f"event: {e}" for e in self.events]
        if self.error:
            rows.append(f"error: {self.error}")
        return rows


class SubmitRun:
    def __init__(self, options: SubmitOptions, clock: Clock = WallClock()):
        self.options, self.clock = options, clock
        now = clock.now()
        start = options.started_at or now
        self.deadline = Deadline.of(start, options.budget_s, options.margin_s)
        self.report = Report(options.out, start, self.deadline.end)
        self.own_scratch = options.scratch is None  # made here: removed at the end unless keep_scratch
        self.scratch = options.scratch or paths.default_scratch()
        self.tasks: list[Task] = []
        self.phase_start = now

    def phase_done(self, name: str) -> None:
        now = self.clock.now()
        self.report.phases[name] = now - self.phase_start
        self.phase_start = now

    # ------------------------------------------------------------------------ 1. start

    def start(self) -> None:
        o = self.options
        challenges = o.challenges or paths.find_challenges(o.input_root, o.competition)
        self.tasks = load_challenges(challenges)
        self.report.test_inputs = sum(len(t.test) for t in self.tasks)
        o.out.parent.mkdir(parents=True, exist_ok=True)
        self.write(Votes())  # the fallback: valid from the first second
        if injected := faults.describe():
            self.report.event(f"{faults.ENV}={injected}: faults injected on purpose (a test or a negative control), "
                              "not a real run")
        log.info("%s: %d tasks, %d test inputs; fallback written to %s", challenges, len(self.tasks),
                 sum(len(t.test) for t in self.tasks), o.out)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.model_dir = paths.resolve_model(o.model, self.scratch) if o.model else \
            paths.find_model(o.input_root, self.scratch)
        recipe = paths.package_finetune(self.model_dir)
        self.options = o = shortened(with_package_defaults(o, recipe, f"{self.model_dir / 'config.yaml'} finetune"))
        check_objective(o, read_model_config(self.model_dir), self.model_dir)
        if o.short:
            log.info("short run (not the scoring rerun): budget %.2f h, %d augmentations, at most %d fine-tune steps",
                     o.budget_hours_used, o.num_aug, o.max_steps)
        if mismatch := paths.python_mismatch(paths.find_wheels(self.model_dir)):
            self.report.event(mismatch)
        paths.check_torch()
        self.devices = workers.choose_devices(o)
        log.info("model %s; devices %s; budget %.0f s, margin %.0f s, deadline in %.0f s", self.model_dir,
                 ",".join(self.devices), o.budget_s, o.margin_s, self.deadline.left(self.clock.now()))

    def write(self, votes: Votes) -> None:
        ranked = votes.ranked()
        write_submission(self.options.out, build_submission(self.tasks, ranked), self.tasks)
        self.clock.charge("write")
        self.report.writes += 1
        self.report.answered = sum(1 for candidates in ranked.values() if candidates)

    # ------------------------------------------------------------------------ 2. data

    def build_data(self) -> None:
        o = self.options
        self.data_dir = self.scratch / "data"
        canvas = canvas_side(read_model_config(self.model_dir).seq_len)  # ARC's 30, or what it was pretrained on
        build_dataset(BuildOptions(source="challenges", subsets=(SUBSET,), test_set=SUBSET, out=self.data_dir,
                                   num_aug=o.num_aug, seed=o.seed, translation=o.translation, force=True,
                                   progress=False, canvas=canvas), subsets={SUBSET: self.tasks_that_fit(canvas)})
        self.test_split = load_split(self.data_dir, "test")
        train_examples = load_split(self.data_dir, "train").num_examples
        self.clock.charge("data_example", train_examples + self.test_split.num_examples)
        self.infer_batch = o.infer_batch_per_device(len(self.devices))
        self.chunks = plan_chunks(self.test_split, o.num_aug, self.infer_batch)
        self.report.chunks_total = len(self.chunks)
        self.infer_examples = len(self.chunks.examples)
        self.spec = workers.WorkerSpec(o, self.model_dir, self.data_dir, self.scratch, self.deadline, self.devices,
                                       workers.free_port(), clock=self.clock)
        self.clear_earlier_run()
        log.info("dataset %s: %d training examples; %d predictions to make in %d chunks",
                 self.data_dir, load_split(self.data_dir, "train").num_examples, self.infer_examples,
                 self.report.chunks_total)

    def tasks_that_fit(self, canvas: int) -> list[Task]:
        """The tasks whose every grid fits the model's canvas (all of them on ARC's 30); the
        others keep their fallback answers, with an event naming the first. UserError when none fits."""
        problems = {task.id: oversized_grid(task, canvas) for task in self.tasks}
        fit = [task for task in self.tasks if problems[task.id] is None]
        if len(fit) < len(self.tasks):
            first = next(problem for problem in problems.values() if problem)
            message = (f"{len(self.tasks) - len(fit)} of {len(self.tasks)} tasks have grids larger than the model's "
                       f"{canvas}x{canvas} canvas (first: {first})")
            if not fit:
                raise UserError(f"{message}: the model can answer none of them")
            self.report.event(f"{message}: they keep the fallback answers")
        return fit

    def clear_earlier_run(self) -> None:
        """Remove what an earlier run left in the same scratch: its fine-tuned weights and its
        prediction chunks would otherwise be taken for this run's (inference loads the weights
        it finds; voting takes every chunk file)."""
        finetuned, predictions = self.spec.finetuned_dir, self.spec.predictions_dir
        if (finetuned / "meta.json").is_file():
            shutil.rmtree(finetuned)
        for stale in predictions.glob("chunk_*.npz") if predictions.is_dir() else ():
            stale.unlink()

    # ------------------------------------------------------------------------ 3. fine-tune

    def finetune(self) -> list[int]:
        """Run the fine-tuning workers; returns the ranks that died (their devices are not
        used for inference)."""
        self.report.finetune_started = True
        spec = self.spec = dataclasses.replace(self.spec, spawned_at=self.clock.now())
        remaining = self.deadline.left(self.clock.now())
        stop_at = self.clock.now() + max(90.0, min(900.0, 0.25 * remaining))  # until there is a plan
        self.clock.charge("worker_start")
        link = workers.FinetuneLink()
        processes = workers.start(finetune_worker, [(rank, spec, link) for rank in range(len(spec.devices))])
        progress: dict = {}
        while any(p.is_alive() for p in processes) and not workers.failed(processes):
            message = link.next_report(POLL_S)
            if isinstance(message, workers.WarmedUp) and self.report.plan is None:
                link.send_plan(plan := self.plan(message))
                stop_at = plan.stop_workers_at(self.clock.stride("train"))
            elif isinstance(message, dict):
                progress = message
            if self.clock.now() > stop_at:
                workers.stop(processes, "fine-tuning is late")
                self.report.event(self.late_finetune_event())
                break
        dead = [rank for rank in workers.failed(processes) if processes[rank].exitcode != -signal.SIGTERM]
        if dead:
            workers.stop(processes, f"worker(s) {dead} failed")
            self.report.event(f"fine-tuning: worker(s) {dead} exited with code(s) "
                              f"{[processes[r].exitcode for r in dead]}; inference uses the last saved weights")
        while (message := link.next_report(0)) is not None:  # what rank 0 reported before it ended
            progress = message if isinstance(message, dict) else progress
        self.report.steps_done = self.finetuned_step()
        self.progress_events(progress)
        return dead

    def progress_events(self, progress: dict) -> None:
        """Events for what rank 0 last reported (Finetuner.write_progress): micro-batches
        after an OOM, an early stop."""
        if progress.get("micro_batches", 1) > 1:
            self.report.event(f"fine-tuning: CUDA out of memory; each step ran in {progress['micro_batches']} "
                              "micro-batches per device (same global batch, gradients accumulated)")
        stopped = progress.get("stopped")
        if stopped:
            weights = f"the weights saved at step {self.report.steps_done}" if self.report.steps_done \
                else "the packaged model"
            self.report.event(f"fine-tuning stopped early: {stopped}; inference uses {weights}")

    def plan(self, warmed_up: workers.WarmedUp) -> Plan:
        """The fine-tuning plan from rank 0's warm-up timings, made now; logged and saved
        (plan.json) for the record."""
        o = self.options
        plan = plan_finetune(warmed_up.measured, self.clock.now(), self.deadline.end, self.infer_examples,
                             warmed_up.act_steps, len(self.devices), EMBEDDINGS_ONLY_FRACTION[o.mode], o.steps,
                             o.max_steps)
        self.report.plan = plan
        for line in plan_lines(plan, self.report.start):
            log.info(line)
        plan.save(self.spec.plan_path)
        return plan

    def finetuned_step(self) -> int | None:
        meta = self.spec.finetuned_dir / "meta.json"
        if not meta.is_file():
            return None
        return json.loads(meta.read_text()).get("step")

    # ------------------------------------------------------------------------ 4. inference

    def infer(self, dead: list[int]) -> None:
        devices = [d for rank, d in enumerate(self.devices) if rank not in dead] or list(self.devices)
        self.spec.predictions_dir.mkdir(exist_ok=True)
        self.names = faults.variant_names(load_identifiers(self.data_dir))
        votes, voted = Votes(), set()
        end = self.spec.inference_end
        while len(voted) < self.report.chunks_total and devices and self.clock.now() < end:
            todo = [c for c in range(self.report.chunks_total) if c not in voted
                    and not chunk_path(self.spec.predictions_dir, c).exists()]
            before = len(voted)
            devices = self.infer_round(devices, todo, votes, voted, end)
            self.collect(votes, voted)
            if len(voted) == before:
                break  # no progress on this round: retrying would not do better
        if len(voted) < self.report.chunks_total:
            self.report.event(f"inference: {len(voted)} of {self.report.chunks_total} chunks predicted in time; "
                              "voting with those")
        self.report.chunks_done = len(voted)
        self.write(votes)

    def infer_round(self, devices: list[str], todo: list[int], votes: Votes, voted: set, end: float) -> list[str]:
        """Workers on `devices` take the `todo` chunks; returns the devices whose workers
        did not fail."""
        context = workers.queue_context()
        queue = context.Queue()
        for chunk in todo:
            queue.put(chunk)
        for _ in devices:
            queue.put(None)
        self.clock.charge("worker_start")
        processes = workers.start(infer_worker, [(rank, self.spec, device, queue, len(devices), self.chunks)
                                                 for rank, device in enumerate(devices)])
        last_write = self.clock.now()
        while any(p.is_alive() for p in processes):
            if self.collect(votes, voted) and self.clock.now() - last_write >= self.options.write_every_s:
                self.write(votes)
                last_write = self.clock.now()
            if self.clock.now() >= end:
                workers.stop(processes, "the deadline is near")
                self.clock.cut_at(end)
                break
            time.sleep(POLL_S)
        dead = workers.failed(processes)
        if dead and self.clock.now() < end:
            left = len(devices) - len(dead)
            self.report.event(f"inference: worker(s) {dead} exited with code(s) "
                              f"{[processes[r].exitcode for r in dead]}; "
                              + (f"the other {left} carry on" if left else "no inference worker is left"))
        return [d for rank, d in enumerate(devices) if rank not in dead]

    def collect(self, votes: Votes, voted: set) -> bool:
        """Vote with every finished chunk not voted yet; whether there was one."""
        new = [c for c in range(self.report.chunks_total)
               if c not in voted and chunk_path(self.spec.predictions_dir, c).exists()]
        for chunk in new:
            faults.before_vote()
            predictions = load_predictions(chunk_path(self.spec.predictions_dir, chunk))
            add_votes(votes, self.test_split, self.names, predictions)
            self.clock.charge("vote_prediction", len(predictions.example_index))
            voted.add(chunk)
        return bool(new)

    def late_finetune_event(self) -> str:
        plan = self.report.plan
        if plan is None:
            return "fine-tuning's warm-up ran past the time allowed for it: stopped; the packaged model predicts"
        if plan.steps == 0:
            return "no fine-tune step fit the budget: workers stopped after the warm-up; the packaged model predicts"
        return "fine-tuning ran past its end time: stopped; inference uses the last saved weights"

    def remove_own_scratch(self) -> None:
        """The scratch directory this run created, gone unless --keep-scratch (/tmp filled up
        with one trm-submit-* per run otherwise). The submission is never in it."""
        if self.own_scratch and not self.options.keep_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        elif self.own_scratch:
            log.info("scratch kept: %s", self.scratch)

    # ------------------------------------------------------------------------ the run

    def run(self) -> Report:
        """The phases in order; the fallback is on disk before anything can fail."""
        self.start()
        self.phase_done("setup")
        self.build_data()
        self.phase_done("data")
        try:
            dead = self.finetune()
        except Exception as exc:  # e.g. workers that cannot start: infer with what there is
            dead = []
            self.report.event(f"fine-tuning failed ({type(exc).__name__}: {exc}); inference uses the model as it stands")
        self.phase_done("finetune")
        try:
            self.infer(dead)
        except Exception as exc:
            self.report.error = f"inference: {type(exc).__name__}: {exc}"
            log.error("inference failed; the last written submission stands:\n%s", traceback.format_exc())
        self.phase_done("inference")
        return self.report


def check_objective(options: SubmitOptions, model: ModelConfig, model_dir: Path) -> None:
    """A DIS model fine-tunes with DIS only: its step embedding has no TRM counterpart. A TRM
    model may fine-tune with either (DIS adds a zero step embedding: step 1 starts as the TRM)."""
    if model.objective == "dis" and options.objective == "trm":
        raise UserError(f"{model_dir}: a DIS model (objective dis) cannot fine-tune with --objective trm; "
                        "leave --objective out or give dis")
    log.info("fine-tuning objective %s (%d ACT steps, %d H x %d L cycles)", options.objective or model.objective,
             model.halt_max_steps, model.H_cycles, model.L_cycles)


def setup_logging() -> None:
    if not log.handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s",
                            datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)


def submit(options: SubmitOptions, clock: Clock = WallClock()) -> Report:
    """The whole run. Raises UserError only when no submission could be written at all
    (no readable challenges file); after that it always returns the report, with `error`
    set when a phase failed: the submission on disk is then the last one written.
    `report.failures()` says whether the file holds the model's work (trm-submit exits 2
    when it does not). `clock` is the run's time (trm-simulate --dry-run passes a VirtualClock)."""
    setup_logging()
    run = SubmitRun(options, clock)
    try:
        run.run()
    except Exception as exc:
        if not run.tasks:
            raise
        run.report.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        log.error("%s; the last written submission stands", run.report.error)
        if not isinstance(exc, UserError):
            log.error(traceback.format_exc())
    finally:
        run.remove_own_scratch()
    verdict, *rest = run.report.lines()
    for line in rest:
        log.info(line)
    (log.error if run.report.failures() else log.info)(verdict)  # last, where a person looks
    return run.report
