"""trm-pretrain's run: data, model, the training loop, evaluation, checkpoints and resume.

One process per GPU (or one on the CPU); every rank builds the same model from the seed,
takes its slice of each global batch, and applies identical updates, so rank 0's copy is
the one saved. A checkpoint holds everything resuming needs, including each rank's ACT
carry: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trm_kaggle import __version__, distributed, hardware
from trm_kaggle.checkpoint import (
    TrainState, check_same_architecture, init_from_checkpoint, load_checkpoint, load_weights, name_rows, save_checkpoint)
from trm_kaggle.config import PretrainConfig
from trm_kaggle.dataset.format import dataset_shape, load_identifiers, load_split
from trm_kaggle.dataset.sampler import TrainSampler
from trm_kaggle.errors import NonFiniteError, UserError
from trm_kaggle.evaluate import Scores, dataset_kind, score, scores_step_by_step, select_examples
from trm_kaggle.inference import Predictions, predict
from trm_kaggle.losses import is_loss_sum
from trm_kaggle.model import TRM, flops_per_example
from trm_kaggle.planner.distill import Distiller
from trm_kaggle.run_dir import MetricsLog, latest_checkpoint, prune
from trm_kaggle.train import Schedule, build_train_step

STEP_METRICS = ("lr_trunk", "lr_puzzle_emb", "grad_norm")  # TrainStep's own, per step
EVAL_DIR = "eval"  # step_N/eval/: what the evaluation at that step predicted and scored


class PretrainRun:
    def __init__(self, config: PretrainConfig, world: distributed.Dist, log=print):
        self.config, self.world = config, world
        self.log = log if world.is_main else (lambda *a, **k: None)
        self.data, self.run_dir = Path(config.data_path), Path(config.run_dir)
        self.eval_files: dict[str, bytes] = {}  # the last evaluation's, saved with the next checkpoint
        self.split = load_split(self.data, "train")
        self.identifiers = load_identifiers(self.data)
        self.model_config = config.arch.to_model_config(dataset_shape(self.data), world.device.type == "cuda")
        self.sampler = TrainSampler(self.split, config.global_batch_size, config.seed, world.rank, world.world_size)
        self.total_steps = config.total_steps or max(
            1, config.epochs * self.sampler.examples_per_epoch // config.global_batch_size)
        self.stop_step = min(self.total_steps, config.max_steps or self.total_steps)
        resume_from = self.find_resume_point()
        self.distiller = Distiller.of(config.distill, self.data, self.model_config.vocab_size) \
            if config.distill.cache else None
        torch.manual_seed(config.seed)
        self.model = TRM(self.model_config)
        init_from = config.init_from or (self.distiller.entries.teacher if self.distiller else None)
        if resume_from is None and init_from:  # a student starts from its teacher unless told otherwise
            self.initialise_from(Path(init_from))
        self.model.to(world.device)
        self.step_fn = build_train_step(self.model, self.schedule(), config.global_batch_size, world, seed=config.seed,
                                        ema_rate=config.ema_rate if config.ema else None, compile=config.compile,
                                        dis=config.dis, distiller=self.distiller)
        self.elapsed = 0.0
        self.resumed_from = resume_from
        if resume_from is not None:
            self.restore(resume_from)
        elif config.resume:  # a typo in run_dir must not restart a rented run from scratch unnoticed
            self.log(f"resume=true: no complete checkpoint (step_N/ with meta.json) in {self.run_dir.resolve()}: "
                     "starting at step 0")
        self.stop_requested = False
        self.stopped_early = False  # SIGTERM stopped it before its stop step (trm-pretrain exits 75)
        self.metrics = MetricsLog(self.run_dir, self.start_wandb()) if world.is_main else None

    # ------------------------------------------------------------------------ set-up

    def schedule(self) -> Schedule:
        return Schedule.of(self.config, self.total_steps,
                           math.floor(self.config.embeddings_only_fraction * self.total_steps))

    def find_resume_point(self) -> Path | None:
        """Rank 0's newest checkpoint; every rank must see the same one (multi-node runs need
        run_dir on a shared filesystem to resume)."""
        latest = latest_checkpoint(self.run_dir)
        if latest is not None and not self.config.resume:
            raise UserError(f"{self.run_dir}: holds checkpoints (newest {latest.name}); "
                            "continue with resume=true or choose a new run_dir")
        if not self.config.resume:
            return None
        chosen = distributed.broadcast_from_main(None if latest is None else latest.name, self.world)
        if chosen != (None if latest is None else latest.name):
            raise UserError(f"{self.run_dir}: rank {self.world.rank} sees {latest.name if latest else 'no checkpoint'}, "
                            f"rank 0 sees {chosen}: put run_dir on a filesystem every node shares")
        return latest

    def initialise_from(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        ids, by_position = self.config.init_identifiers, self.config.init_rows_by_position
        how = "by position" if by_position and ckpt.has_unnamed_rows and not ids else "by name"
        name_rows(ckpt, Path(ids) if ids else None, self.identifiers if by_position else None,
                  against=f"{self.data}/identifiers.json", flags=("init_identifiers=FILE", "init_rows_by_position=true"))
        copied, fresh = init_from_checkpoint(self.model, ckpt, self.identifiers, self.config.init_new_rows,
                                             self.config.seed)
        self.log(f"init_from {path}: trunk loaded; puzzle embeddings: {copied} rows copied {how}, "
                 f"{fresh} initialised ({self.config.init_new_rows})")

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.identifiers != self.identifiers:
            raise UserError(f"{path}: its identifiers differ from {self.data}/identifiers.json: not this run's dataset")
        check_same_architecture(self.model, ckpt)
        load_weights(self.model, {k: v.to(self.world.device) for k, v in ckpt.state_dict.items()}, path)
        state = ckpt.train_state()
        if state is None or state.global_batch_size != self.config.global_batch_size:
            saved = "no training state" if state is None else f"global_batch_size {state.global_batch_size}"
            raise UserError(f"{path}: was saved with {saved}, this run has global_batch_size "
                            f"{self.config.global_batch_size}: resuming exactly needs the same global batch")
        self.step_fn.load_state_dict(state.train_step)
        try:
            self.sampler.load_state_dict(state.sampler)
        except ValueError as exc:
            raise UserError(f"{path}: {exc}: not this run's dataset or seed") from None
        self.step_fn.load_carry(state.carries, self.world.world_size, self.world.device)
        if len(state.rng) == self.world.world_size:
            set_rng_state(state.rng[self.world.rank])
        self.elapsed = float(state.elapsed)
        self.log(f"resumed from {path} at step {self.step_fn.step}")

    def start_wandb(self) -> Any:
        settings = self.config.wandb
        if not settings.enabled:
            return None
        try:
            import wandb
        except ImportError:
            raise UserError("wandb.enabled=true needs wandb: pip install 'trm-kaggle[wandb]'") from None
        return wandb.init(project=settings.project, entity=settings.entity, name=settings.name,
                          config=self.config.model_dump(), resume="allow")

    # ------------------------------------------------------------------------ the loop

    def train(self) -> Path | None:
        """Train to `stop_step` (or SIGTERM); checkpoint at the end. Returns the last checkpoint.
        A run resumed at or past its stop step has nothing to do: it says so and returns the
        checkpoint it resumed from, untouched (re-saving it would drop its evaluation files)."""
        if self.resumed_from is not None and self.step_fn.step >= self.stop_step:
            self.log(f"{self.resumed_from} is at step {self.step_fn.step}, the run stops at {self.stop_step}: "
                     "nothing to train (raise max_steps or total_steps to continue)")
            return self.resumed_from
        self.log(f"training steps {self.step_fn.step} -> {self.stop_step} of {self.total_steps} "
                 f"({self.sampler.examples_per_epoch} examples per epoch of {self.split.num_examples} training examples: "
                 f"an epoch takes one example per group of a task's variants, as the original; "
                 f"global batch {self.config.global_batch_size}, "
                 f"{self.world.world_size} rank(s), {self.model_config.forward_dtype})")
        previous = signal.signal(signal.SIGTERM, self.request_stop)
        saved, sums, window_start, window_steps = None, {}, time.perf_counter(), 0
        try:
            while self.step_fn.step < self.stop_step:
                epoch_before = int(self.sampler.epoch_progress)
                batch = {k: v.to(self.world.device, non_blocking=True) for k, v in self.sampler.next_batch().items()}
                metrics = self.train_step(batch)
                saved, window_steps = None, window_steps + 1
                sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
                if self.step_fn.step % self.config.log_every_steps == 0 or self.step_fn.step == self.stop_step:
                    now = time.perf_counter()
                    self.elapsed += now - window_start
                    self.report(sums, window_steps, now - window_start)
                    sums, window_start, window_steps = {}, now, 0
                if self.eval_due(epoch_before):
                    self.evaluate()
                    saved = self.save()
                elif self.config.checkpoint_every_steps and self.step_fn.step % self.config.checkpoint_every_steps == 0:
                    saved = self.save()
                if distributed.any_rank(self.stop_requested, self.world.device):
                    self.stopped_early = self.step_fn.step < self.stop_step
                    self.log(f"stop requested (SIGTERM): checkpointing at step {self.step_fn.step}"
                             + (f" of {self.stop_step}; run the same command with resume=true to continue"
                                if self.stopped_early else ""))
                    break
            return saved or self.save()
        finally:
            signal.signal(signal.SIGTERM, previous)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One training step; a non-finite loss or gradient ends the run, saving nothing, so
        the newest checkpoint stays the last finite one (resume, init_from, trm-package)."""
        try:
            return self.step_fn(batch)
        except NonFiniteError as exc:
            newest = latest_checkpoint(self.run_dir)
            raise NonFiniteError(f"{exc}; nothing saved: the newest checkpoint is "
                                 f"{newest if newest else 'none'}") from None

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def eval_due(self, epoch_before: int) -> bool:
        every = self.config.eval_every_epochs
        return bool(every) and int(self.sampler.epoch_progress) // every > epoch_before // every

    def report(self, sums: dict[str, float], steps: int, seconds: float) -> None:
        examples_per_s = steps * self.config.global_batch_size / max(seconds, 1e-9)
        record = {"step": self.step_fn.step, "epoch": round(self.sampler.epoch_progress, 4),
                  "examples_per_s": round(examples_per_s, 2), **window_means(sums, steps, self.config.global_batch_size,
                                                                            self.world)}
        mfu = self.mfu(examples_per_s)
        if mfu is not None:
            record["mfu"] = round(mfu, 4)
        record["eta_s"] = round((self.stop_step - self.step_fn.step) * self.config.global_batch_size
                                / max(examples_per_s, 1e-9))
        if self.metrics:
            self.metrics.write(record)
        self.log(f"step {record['step']}/{self.stop_step} epoch {record['epoch']:.2f} loss {record['loss']:.4f} "
                 f"exact {record['exact_accuracy']:.3f} {examples_per_s:.1f} ex/s"
                 + (f" MFU {mfu:.1%}" if mfu is not None else "") + f" ETA {record['eta_s']} s")

    def mfu(self, examples_per_s: float) -> float | None:
        return hardware.mfu(examples_per_s, flops_per_example(self.model_config)[0],
                            self.world.device, self.world.world_size)

    def evaluate(self) -> Scores | None:
        """The test split's scores with the EMA weights, by the dataset's kind (pass@K for
        ARC, exact accuracy per ACT step otherwise): every rank predicts its share of the
        examples, rank 0 scores, logs and keeps the files for the next checkpoint. Returns
        the scores on rank 0, None on the others."""
        scores = None
        test = load_split(self.data, "test")
        examples = select_examples(test, self.config.eval_num_aug, None)
        mine = np.array_split(examples, self.world.world_size)[self.world.rank]
        kind = dataset_kind(self.data)
        ema = self.step_fn.ema
        with ema.swapped_in() if ema else contextlib.nullcontext():
            part = predict(self.model, test, self.config.eval_batch_size, mine, device=self.world.device,
                           progress=False, score_steps=scores_step_by_step(kind, "test"))
        parts = distributed.gather_to_main(part, self.world)
        if self.world.is_main:
            scores = score(kind, self.data, test, "test", self.identifiers, Predictions.concat(parts))
            self.log_eval(scores)
            about = {"step": self.step_fn.step, "examples": len(examples), "num_aug": self.config.eval_num_aug}
            self.eval_files = {f"{EVAL_DIR}/{name}": content for name, content in scores.files(about).items()}
        distributed.barrier()
        return scores

    def log_eval(self, scores: Scores) -> None:
        metrics = scores.metrics()
        if metrics:
            self.metrics.write({"step": self.step_fn.step, "epoch": round(self.sampler.epoch_progress, 4), **metrics})
        self.log(f"eval step {self.step_fn.step}: " + "; ".join(scores.lines()))

    # ------------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        step = self.step_fn.step
        carries = distributed.gather_to_main(self.step_fn.carry_state(), self.world)
        rngs = distributed.gather_to_main(rng_state(), self.world)
        path = self.run_dir / f"step_{step}"
        if self.world.is_main:
            state = TrainState(train_step=self.step_fn.state_dict(), sampler=self.sampler.state_dict(),
                               carries=carries, rng=rngs, elapsed=self.elapsed,
                               global_batch_size=self.config.global_batch_size, world_size=self.world.world_size)
            config_yaml = yaml.safe_dump(self.config.model_dump(), sort_keys=False).encode()
            save_checkpoint(path, self.model, self.identifiers, step,
                            extra_config={"pretrain": self.config.model_dump()}, train_state=state,
                            extra_files={"config.yaml": config_yaml} | self.eval_files,
                            meta={"wall_seconds": round(self.elapsed, 1), "version": __version__,
                                  "git_commit": git_commit()})
            self.eval_files = {}  # an evaluation's files go with the checkpoint of its step only
            for old in prune(self.run_dir, self.config.keep_last):
                self.log(f"keep_last={self.config.keep_last}: removed {old.name}")
            self.log(f"saved {path}")
        distributed.barrier()
        return path


def window_means(sums: dict[str, float], steps: int, global_batch_size: int,
                 world: distributed.Dist) -> dict[str, float]:
    """A logging window's metrics from its per-step sums: the step's own values (`lr_*`,
    `grad_norm`, the same on every rank) averaged over steps; the loss's terms (`loss`,
    `*_loss`) per example seen; its other metrics per sequence that halted (`count`), summed
    over ranks first. See losses.ACTLoss for the names."""
    own = {k: v / max(steps, 1) for k, v in sums.items() if k in STEP_METRICS}
    totals = distributed_sums({k: v for k, v in sums.items() if k not in STEP_METRICS}, world)
    count = max(totals.pop("count", 0.0), 1.0)
    return own | {k: v / (steps * global_batch_size if is_loss_sum(k) else count) for k, v in totals.items()}


def distributed_sums(values: dict[str, float], world: distributed.Dist) -> dict[str, float]:
    if not world.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    torch.distributed.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def git_commit() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_pretraining(config: PretrainConfig) -> Path | None:
    """Train; the last checkpoint written (or resumed from, when nothing was left to do)."""
    return pretrain(config)[0]


def pretrain(config: PretrainConfig) -> tuple[Path | None, bool]:
    """(last checkpoint, stopped early): whether a SIGTERM stopped every rank before the stop
    step, so that a supervisor (a Kubernetes Job, a shell loop) starts it again."""
    world = distributed.setup()
    try:
        run = PretrainRun(config, world)
        last = run.train()
    except BaseException:
        distributed.teardown(wait_for_peers=False)
        raise
    distributed.teardown()
    return last, run.stopped_early
