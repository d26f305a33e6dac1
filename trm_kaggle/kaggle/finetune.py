"""Test-time fine-tuning in a worker process: the packaged model, new embedding rows for the
hidden tasks' variants, trained on their demonstration pairs until the plan's step count or
its end time, whichever comes first.

Modes: `full` trains everything; `emb_only` only the puzzle embeddings; `emb_first_quarter`
and `emb_first_half` the embeddings alone for that share of the steps, then everything;
`lora` LoRA adapters on the trunk plus the embeddings. In an embeddings-only phase the trunk
has `requires_grad=False`, so backward computes no weight gradients at all (the original
fork computed them and threw them away).

Rank 0 reports the warm-up's timings to the supervisor, which plans (submit.py); every rank
follows the plan it sends back. Rank 0 saves the weights to be predicted with (EMA averages
for the trunk, the live puzzle table) every `progress_every_s` and at the end, so a crash
later costs only the steps since then.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from trm_kaggle import distributed
from trm_kaggle.checkpoint import init_from_checkpoint, load_checkpoint, save_state
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.dataset.sampler import TrainSampler, example_puzzles, gather
from trm_kaggle.errors import NonFiniteError
from trm_kaggle.hardware import default_dtype
from trm_kaggle.kaggle import faults
from trm_kaggle.kaggle.budget import Measured, Plan
from trm_kaggle.kaggle.lora import add_lora, merged_state_dict
from trm_kaggle.kaggle.workers import FinetuneLink, WarmedUp, WorkerSpec, configure_worker
from trm_kaggle.model import TRM
from trm_kaggle.train import Schedule, build_train_step

log = logging.getLogger("trm_kaggle.submit")
PROBES = 2  # timed repetitions per warm-up measurement, after one untimed


def build_model(spec: WorkerSpec, device: torch.device, identifiers: list[str]) -> TRM:
    """The packaged trunk with one embedding row per variant of the hidden tasks (rows the
    package lacks start from its statistics), in bf16 on a GPU, float32 on the CPU, trained
    with the options' objective (a TRM package fine-tuned with DIS gets a zero step embedding)."""
    ckpt = load_checkpoint(spec.model_dir)
    dtype = default_dtype(device)
    config = ckpt.config.model_copy(update={"num_puzzle_identifiers": len(identifiers), "forward_dtype": dtype,
                                            "objective": spec.options.objective or ckpt.config.objective})
    torch.manual_seed(spec.options.seed)
    model = TRM(config)
    if ckpt.has_unnamed_rows:
        log.warning("model %s: its embedding table has no row names: every task starts from the table's "
                    "statistics, as with a slim export", spec.model_dir)
    copied, fresh = init_from_checkpoint(model, ckpt, identifiers, spec.options.new_rows, spec.options.seed,
                                         unnamed_rows="fresh")
    log.info("model %s: %d embedding rows copied by name, %d new (%s)", spec.model_dir, copied, fresh,
             spec.options.new_rows)
    return model.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds per call: the best of PROBES, after one untimed call on a GPU (compilation,
    kernel selection, caches); a CPU has nothing to warm, and its calls are the slowest."""
    if device.type == "cuda":
        fn()
    best = float("inf")
    for _ in range(PROBES):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


class Finetuner:
    def __init__(self, spec: WorkerSpec, world: distributed.Dist, link: FinetuneLink):
        self.spec, self.world, self.options, self.clock, self.link = spec, world, spec.options, spec.clock, link
        self.identifiers = load_identifiers(spec.data_dir)
        self.split = load_split(spec.data_dir, "train")
        self.model = build_model(spec, world.device, self.identifiers)
        o = self.options
        if o.mode == "lora":
            add_lora(self.model, o.lora_rank)  # the base weights stop requiring grad
        self.step_fn = build_train_step(self.model, Schedule.of(o), o.batch_size, world, seed=o.seed, ema_rate=o.ema_rate,
                                        compile=o.compile, before_forward=faults.before_finetune_forward)
        self.sampler = TrainSampler(self.split, o.batch_size, o.seed, world.rank, world.world_size)
        self.done = 0  # fine-tune steps taken (in a dry run, steps charged to the clock: Clock.train_steps)

    # ------------------------------------------------------------------------ warm-up and plan

    def probe_step(self, train_trunk: bool) -> Callable[[], None]:
        """Forward and backward of one training step, leaving no trace (carry and
        gradients restored): what a step costs without taking one."""
        def run() -> None:
            faults.before_probe()
            self.step_fn.probe(self.batch(), train_trunk)
        return run

    def probe_inference(self) -> tuple[Callable[[], None], int]:
        """One eval ACT step over a batch of the test split, as inference runs it; and the
        batch's rows."""
        test = load_split(self.spec.data_dir, "test")
        rows = min(self.infer_batch_size(), test.num_examples)
        batch = {k: v.to(self.world.device) for k, v in
                 gather(test, example_puzzles(test), torch.arange(rows).numpy()).items()}

        @torch.inference_mode()
        def run() -> None:
            self.model.eval()
            self.model(self.model.initial_carry(batch), batch)
        return run, rows

    def infer_batch_size(self) -> int:
        return self.options.infer_batch_per_device(len(self.spec.devices))

    def measure(self) -> Measured:
        """The warm-up's timings (seconds) on this device, or in a dry run the target's predicted ones."""
        return self.clock.warm_up(self.time_warmup)

    def time_warmup(self) -> Measured:
        device = self.world.device
        startup = self.clock.now() - self.spec.spawned_at  # what an inference worker pays before its first chunk
        log.info("warm-up: timing fine-tune steps and an inference step")
        embeddings = timed(self.probe_step(False), device)
        full = timed(self.probe_step(True), device)
        infer, rows = self.probe_inference()
        return Measured(embeddings, full, timed(infer, device) / rows, startup)

    def check_compile(self) -> None:
        """One compiled step on every rank; if it fails on any (a compiler that does not work
        on this image), all ranks train eagerly rather than lose the run."""
        failed = False
        if self.step_fn.forward is not None:
            try:
                self.probe_step(True)()
            except Exception as exc:
                log.warning("torch.compile failed (%s: %s)", type(exc).__name__, exc)
                failed = True
        if distributed.any_rank(failed, self.world.device):
            log.warning("fine-tuning in eager mode")
            self.step_fn.use_eager()

    def receive_plan(self) -> Plan:
        """Rank 0 measures and reports; the supervisor plans; every rank follows its plan."""
        plan = None
        if self.world.is_main:
            self.link.report(WarmedUp(self.measure(), self.model.config.halt_max_steps))
            plan = self.link.receive_plan()
        return distributed.broadcast_from_main(plan, self.world)

    # ------------------------------------------------------------------------ the loop

    def batch(self) -> dict[str, torch.Tensor]:
        return {k: v.to(self.world.device, non_blocking=True) for k, v in self.sampler.next_batch().items()}

    def run(self) -> None:
        self.check_compile()
        plan = self.receive_plan()
        self.step_fn.replan(plan.steps, plan.embeddings_only_steps)
        emb_only = self.options.mode == "emb_only"
        started = last_save = self.clock.now()
        while self.done < plan.steps:
            faults.before_finetune_step(self.world.rank, self.step_fn.step)
            trunk = not emb_only and self.done >= plan.embeddings_only_steps
            try:
                metrics = self.step_fn(self.batch(), train_trunk=trunk)
            except NonFiniteError as exc:  # every rank at once: stop, keep the last weights saved
                log.error("fine-tuning stopped: %s", exc)
                self.write_progress(plan, started, stopped=str(exc))
                return
            self.done += self.clock.train_steps(trunk, plan.steps - self.done, plan.finetune_end,
                                                charge=self.world.is_main)
            if distributed.any_rank(self.clock.now() >= plan.finetune_end, self.world.device):
                log.info("fine-tuning reached its end time at step %d of %d: stopping", self.done, plan.steps)
                break
            if self.clock.now() - last_save >= self.options.progress_every_s:
                self.checkpoint(plan, started, metrics)
                last_save = self.clock.now()
        self.checkpoint(plan, started, None, final=True)

    def checkpoint(self, plan: Plan, started: float, metrics: dict | None, final: bool = False) -> None:
        """Rank 0 saves what inference should use and logs the progress."""
        if not self.world.is_main:
            return
        step = self.done
        with self.step_fn.ema.swapped_in():
            state = merged_state_dict(self.model) if self.options.mode == "lora" else self.model.state_dict()
            state = {k: v.detach().float().cpu() for k, v in state.items()}
        save_state(self.spec.finetuned_dir, self.model.config, state, self.identifiers, step,
                   meta={"planned_steps": plan.steps, "final": final})
        progress = self.write_progress(plan, started, final=final)
        log.info("fine-tune step %d/%d, %.3f s/step%s%s", step, plan.steps, progress["s_per_step"],
                 f", exact {metrics['exact_accuracy'] / max(metrics['count'], 1):.3f}" if metrics else "",
                 " (final)" if final else "")

    def write_progress(self, plan: Plan, started: float, **fields) -> dict:
        """Rank 0's progress, reported to the supervisor: steps, seconds per step and, with
        `stopped`, why fine-tuning ended before its plan."""
        if not self.world.is_main:
            return {}
        elapsed = self.clock.now() - started
        progress = {"step": self.done, "planned": plan.steps, "elapsed_s": round(elapsed, 2),
                    "s_per_step": round(elapsed / max(self.done, 1), 4),
                    "micro_batches": self.step_fn.micro_batches} | fields
        self.link.report(progress)
        return progress


def join_group(rank: int, spec: WorkerSpec) -> distributed.Dist:
    """This worker's place in the fine-tuning group (NCCL on GPUs, gloo on the CPU)."""
    size = len(spec.devices)
    device = configure_worker(rank, size, spec.port, spec.devices[rank], size, spec)
    if size > 1:
        torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{spec.port}",
            rank=rank, world_size=size, device_id=device if device.type == "cuda" else None)
    return distributed.Dist(rank, size, rank, device)


def finetune_worker(rank: int, spec: WorkerSpec, link: FinetuneLink) -> None:
    """A fine-tuning process's entry point (spawned)."""
    world = join_group(rank, spec)
    try:
        Finetuner(spec, world, link).run()
    except BaseException:
        log.exception("fine-tuning failed")
        distributed.teardown(wait_for_peers=False)
        raise SystemExit(1)
    distributed.teardown()  # leave together: gloo aborts a rank whose peer has already gone
