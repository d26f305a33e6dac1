"""Worker processes: one per device, spawned from the supervisor (the notebook's kernel or
trm-submit), so that a crash, a hang or an OOM in a worker never takes the supervisor, and
with it the submission, down.

Fine-tuning workers form a process group (NCCL on GPUs, gloo on the CPU) over a localhost
rendezvous; their rank 0 reports to the supervisor, which alone plans (FinetuneLink).
Inference workers share nothing but a queue of chunks.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Callable

import torch
import torch.multiprocessing as mp

from trm_kaggle.kaggle.budget import VOTE_RESERVE_S, Deadline, Measured, Plan
from trm_kaggle.kaggle.clock import Clock, WallClock
from trm_kaggle.kaggle.options import SubmitOptions

log = logging.getLogger("trm_kaggle.submit")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable for `spawn`."""

    options: SubmitOptions
    model_dir: Path        # the packaged model
    data_dir: Path         # the hidden tasks' dataset in scratch
    scratch: Path
    deadline: Deadline
    devices: tuple[str, ...]  # one per worker rank, e.g. ("cuda:0", "cuda:1") or ("cpu", "cpu")
    port: int = 0
    spawned_at: float = 0.0  # when the fine-tuning workers were started (to measure start-up)
    clock: Clock = WallClock()  # the supervisor's: a dry run's virtual clock reaches the workers here
    supervisor: int = field(default_factory=os.getpid)  # the process that made the spec (and starts workers)
    # Linux's parent-death signal fires when the *thread* that started a worker ends: it is
    # only safe when that thread is the main one (workers are started where the spec is made).
    from_main_thread: bool = field(default_factory=lambda: threading.current_thread() is threading.main_thread())

    @property
    def inference_end(self) -> float:
        """When the supervisor stops inference: the deadline less the voting reserve."""
        return self.deadline.end - VOTE_RESERVE_S

    @property
    def finetuned_dir(self) -> Path:
        return self.scratch / "finetuned"

    @property
    def plan_path(self) -> Path:
        """The supervisor's record of the plan it sent (not read back by the run)."""
        return self.scratch / "plan.json"

    @property
    def predictions_dir(self) -> Path:
        return self.scratch / "predictions"


@dataclass(frozen=True)
class WarmedUp:
    """Fine-tuning rank 0's first report: what the plan needs to know of the workers."""

    measured: Measured
    act_steps: int  # ACT steps per prediction of the model being fine-tuned


class FinetuneLink:
    """Between fine-tuning rank 0 and the supervisor: reports go up (one WarmedUp, then
    progress dicts from Finetuner.write_progress), the plan comes down once. Two queues,
    handed to the workers when they are spawned."""

    def __init__(self) -> None:
        context = queue_context()
        self.reports, self.plans = context.Queue(), context.Queue()

    def report(self, message: WarmedUp | dict) -> None:
        self.reports.put(message)

    def next_report(self, timeout_s: float) -> WarmedUp | dict | None:
        """The next report, waiting at most `timeout_s` seconds; None when none came."""
        try:
            return self.reports.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def send_plan(self, plan: Plan) -> None:
        self.plans.put(plan)

    def receive_plan(self) -> Plan:
        """The supervisor's plan; waits for it (a supervisor that dies or gives up on the
        worker ends it: die_with_supervisor, stop)."""
        return self.plans.get()


def choose_devices(options: SubmitOptions) -> tuple[str, ...]:
    """One entry per worker: every visible GPU (or `gpus` of them), else CPU workers."""
    cuda = torch.cuda.is_available() and options.device != "cpu"
    if options.device == "cuda" and not cuda:
        from trm_kaggle.errors import UserError
        raise UserError("--device cuda: no CUDA device is visible")
    available = torch.cuda.device_count() if cuda else 1
    count = available if options.gpus == "auto" else int(options.gpus)
    if cuda:
        return tuple(f"cuda:{i}" for i in range(min(count, available)))
    return ("cpu",) * max(count, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_S = 0.5


def die_with_supervisor(supervisor: int, parent_death_signal: bool = True) -> None:
    """End this worker within a second or two of its supervisor's death, whatever it is
    doing (inside a long backward, a sleep, a collective): no orphan keeps a GPU and gigabytes
    of memory busy. Linux: the kernel sends SIGKILL when the parent dies (prctl
    PR_SET_PDEATHSIG); elsewhere a daemon thread watches the parent. Either way, a supervisor
    that died before this call is caught by the check at the end."""
    armed = False
    if parent_death_signal and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if not armed:
        threading.Thread(target=watch_supervisor, args=(supervisor,), daemon=True, name="supervisor-watchdog").start()
    if os.getppid() != supervisor:
        os._exit(3)


def watch_supervisor(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(WATCHDOG_S)
    os._exit(3)


def no_named_semaphores() -> None:
    """Give tqdm a thread lock: its default is a multiprocessing RLock, a named semaphore that
    a worker stopped by the supervisor (SIGTERM, SIGKILL) never unlinks, so Python's resource
    tracker warns of a "leaked semaphore" when the run ends. A worker writes its own bars
    only, so a thread lock is all tqdm needs."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def configure_worker(rank: int, world_size: int, port: int, device: str, cpu_workers: int,
                     spec: WorkerSpec) -> torch.device:
    """This process's rendezvous environment, device and thread count; its log lines tagged;
    its life tied to the supervisor's."""
    die_with_supervisor(spec.supervisor, spec.from_main_thread)
    no_named_semaphores()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format=f"%(asctime)s [worker {rank}] %(message)s", datefmt="%H:%M:%S")
    target = torch.device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cpu_workers))
    return target


def start(target: Callable, args_per_rank: list[tuple]) -> list[BaseProcess]:
    """Spawn one process per argument tuple (spawn: safe with CUDA, works from a notebook)."""
    context = mp.get_context("spawn")
    processes = [context.Process(target=target, args=args, daemon=True) for args in args_per_rank]
    for process in processes:
        process.start()
    return processes


def stop(processes: list[BaseProcess], why: str) -> None:
    """Terminate (then kill) every live worker."""
    live = [p for p in processes if p.is_alive()]
    if live:
        log.info("stopping %d worker(s): %s", len(live), why)
    for p in live:
        p.terminate()
    end = time.time() + 10
    for p in live:
        p.join(max(0.0, end - time.time()))
        if p.is_alive():
            p.kill()
            p.join(5)


def failed(processes: list[BaseProcess]) -> list[int]:
    """Ranks of workers that exited with an error (a crash, an exception, a kill)."""
    return [rank for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]


def queue_context():
    return mp.get_context("spawn")
