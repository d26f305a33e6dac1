"""The run's clock: wall time on Kaggle, a virtual clock under `trm-simulate --dry-run`.

Under a dry run (`TRM_KAGGLE_VIRTUAL_CLOCK` names a JSON file of per-operation costs), time
advances only when an operation is charged: a training step, an inference ACT step of one
example, a vote, a write... by its predicted cost on the target hardware. The supervisor and
every worker share the clock through one file (updated under an exclusive lock), so the
budget logic (step sizing, early stops, partial votes) runs exactly as on Kaggle while a
tiny model computes on the CPU. On Kaggle every `charge` is a no-op and `now` is time.time().
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from pathlib import Path

ENV = "TRM_KAGGLE_VIRTUAL_CLOCK"
_costs: dict[str, float] | None = None


def _config() -> dict | None:
    path = os.environ.get(ENV)
    return json.loads(Path(path).read_text()) if path else None


def virtual() -> bool:
    return ENV in os.environ


def costs() -> dict[str, float]:
    global _costs
    if _costs is None:
        _costs = _config()["costs"]
    return _costs


def _time_file() -> Path:
    return Path(os.environ[ENV]).with_suffix(".time")


def start_virtual(config_path: Path, op_costs: dict[str, float], start: float) -> None:
    """Make this process (and the workers it spawns) run on a virtual clock at `start`."""
    global _costs
    config_path.write_text(json.dumps({"costs": op_costs}))
    config_path.with_suffix(".time").write_bytes(struct.pack("d", start))
    os.environ[ENV] = str(config_path)
    _costs = None


def stop_virtual() -> None:
    global _costs
    os.environ.pop(ENV, None)
    _costs = None


def cut_at(limit: float) -> None:
    """Workers were stopped at `limit`: work they had charged beyond it never happened
    (a dry run charges an operation when it starts, as real time passes while it runs)."""
    if not virtual():
        return
    with open(_time_file(), "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        current = struct.unpack("d", f.read(8))[0]
        f.seek(0)
        f.write(struct.pack("d", min(current, limit)))


def stride(kind: str) -> int:
    """A dry run computes one real step (or prediction) for every `stride` it charges, so
    15,000 steps of a tiny model take seconds; 1 on a real clock."""
    return int(costs().get(f"{kind}_stride", 1)) if virtual() else 1


def now() -> float:
    if not virtual():
        return time.time()
    with open(_time_file(), "rb") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        return struct.unpack("d", f.read(8))[0]


def charge(op: str, count: float = 1.0) -> None:
    """Advance the virtual clock by `count` × the cost of `op` (no-op on a real clock)."""
    if not virtual():
        return
    seconds = costs()[op] * count
    with open(_time_file(), "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        current = struct.unpack("d", f.read(8))[0]
        f.seek(0)
        f.write(struct.pack("d", current + seconds))
