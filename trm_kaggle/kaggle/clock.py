"""The run's clock, injected wherever time is read: wall time on Kaggle (`WallClock`), a
virtual clock under `trm-simulate --dry-run` (`VirtualClock`).

A virtual clock advances only when an operation is charged: a training step, an inference
ACT step of one example, a vote, a write... by its predicted cost on the target hardware. The
supervisor and every worker share it through one file (updated under an exclusive lock; the
clock object travels to the workers inside their `WorkerSpec`), so the budget logic (step
sizing, early stops, partial votes) runs exactly as on Kaggle while a tiny model computes on
the CPU. On a wall clock every `charge` is a no-op and `now` is time.time().

All times are seconds (`now`: seconds since the epoch, or the virtual start plus what was charged).
"""

from __future__ import annotations

import fcntl
import math
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from trm_kaggle.kaggle.budget import Measured


class Clock(Protocol):
    def now(self) -> float:
        """The run's time, in seconds."""

    def charge(self, op: str, count: float = 1.0) -> None:
        """Account for `count` operations `op` (e.g. "write", "vote_prediction") just begun."""

    def stride(self, kind: str) -> int:
        """How many `kind` ("train", "infer") items one item really computed stands for."""

    def cut_at(self, limit: float) -> None:
        """Workers were stopped at `limit` (seconds): time charged beyond it never passed."""

    def past(self, limit: float) -> bool:
        """Whether a worker that just finished a chunk would have been stopped at `limit`
        (seconds) by its supervisor before finishing it."""

    def warm_up(self, measure: Callable[[], Measured]) -> Measured:
        """The warm-up's timings: `measure()` itself, or what it would measure."""

    def train_steps(self, trunk: bool, left: int, until: float, charge: bool) -> int:
        """The fine-tune steps one step just computed stands for (at most `left` steps, none
        begun after `until`, in seconds), charged when `charge` (one rank charges for all)."""


@dataclass(frozen=True)
class WallClock:
    """Time as it passes; workers are stopped by their supervisor, not by the clock."""

    def now(self) -> float:
        return time.time()

    def charge(self, op: str, count: float = 1.0) -> None:
        pass

    def stride(self, kind: str) -> int:
        return 1

    def cut_at(self, limit: float) -> None:
        pass

    def past(self, limit: float) -> bool:
        return False  # the supervisor stops a late worker, mid-chunk

    def warm_up(self, measure: Callable[[], Measured]) -> Measured:
        return measure()

    def train_steps(self, trunk: bool, left: int, until: float, charge: bool) -> int:
        return 1


def train_op(trunk: bool) -> str:
    return "train_step_full" if trunk else "train_step_embeddings"


@dataclass(frozen=True)
class VirtualClock:
    """A dry run's clock: `costs` gives the seconds each charged operation takes on the
    target ("train_step_full", "inference", "write", ...) and the strides ("train_stride",
    "infer_stride"); the time lives in `path` (8 bytes, a double), shared by every process."""

    path: Path
    costs: dict[str, float]

    @classmethod
    def start(cls, path: Path, costs: dict[str, float], at: float) -> "VirtualClock":
        """A virtual clock reading `at` (seconds), its time kept in `path`."""
        path.write_bytes(struct.pack("d", at))
        return cls(path, costs)

    def now(self) -> float:
        with open(self.path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return struct.unpack("d", f.read(8))[0]

    def _update(self, new: Callable[[float], float]) -> None:
        with open(self.path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            current = struct.unpack("d", f.read(8))[0]
            f.seek(0)
            f.write(struct.pack("d", new(current)))

    def charge(self, op: str, count: float = 1.0) -> None:
        """Advance by `count` × the cost of `op` (KeyError for an operation without a cost).
        An operation is charged when it starts, as real time passes while it runs."""
        seconds = self.costs[op] * count
        self._update(lambda current: current + seconds)

    def stride(self, kind: str) -> int:
        """One real step (or prediction) is computed for every `stride` charged, so 15,000
        steps of a tiny model take seconds."""
        return int(self.costs.get(f"{kind}_stride", 1))

    def cut_at(self, limit: float) -> None:
        self._update(lambda current: min(current, limit))

    def past(self, limit: float) -> bool:
        return self.now() > limit  # the stand-in for the supervisor stopping the worker mid-chunk

    def warm_up(self, measure: Callable[[], Measured]) -> Measured:
        """The target's predicted costs, charged as if measured (`measure` is not called)."""
        c = self.costs
        self.charge("warmup")
        return Measured(c["train_step_embeddings"], c["train_step_full"], c["infer_example_step"],
                        c["worker_start"] + c["warmup"])

    def train_steps(self, trunk: bool, left: int, until: float, charge: bool) -> int:
        """The stride, cut so as not to jump past `left` steps or the end time `until` (a
        real run stops within one step of either)."""
        count = 1
        if (stride := self.stride("train")) != 1:
            before_end = math.floor((until - self.now()) / self.costs[train_op(trunk)]) + 1
            count = max(1, min(stride, left, before_end))
        if charge:
            self.charge(train_op(trunk), count)
        return count
