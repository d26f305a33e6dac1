"""Directories written all or nothing: datasets, checkpoints, Kaggle bundles.

`atomic_dir(out)` yields an empty directory beside `out` to build in; only when the block
succeeds is it renamed into place (an existing `out` is moved aside first and deleted after),
so a crash, a full disk or an exception leaves the old `out` or none, never half of one.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(out: Path, fsync: bool = False) -> Iterator[Path]:
    """Build `out` in a staging directory beside it (same filesystem, so renames are atomic);
    `fsync`: flush every file before the rename (checkpoints: a power cut must not leave a
    renamed directory of empty files)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if fsync:
            fsync_tree(staging)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def fsync_tree(directory: Path) -> None:
    """fsync every file and directory below `directory`, then `directory` itself."""
    for path in [*sorted(directory.rglob("*"), reverse=True), directory]:  # files before their directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
