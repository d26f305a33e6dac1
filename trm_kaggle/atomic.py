"""Directories written all or nothing: datasets, checkpoints, Kaggle bundles.

`atomic_dir(out)` yields an empty directory beside `out` to build in; only when the block
succeeds is it renamed into place (an existing `out` is moved aside first and deleted after),
so a crash, a full disk or an exception leaves the old `out` or none, never half of one.
"""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from trm_kaggle.errors import UserError


def process_tag() -> str:
    """'host-pid', naming a temporary path as this process's: pods on a shared volume often
    run with the same pid, so the pid alone would collide."""
    return f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def atomic_dir(out: Path, fsync: bool = False) -> Iterator[Path]:
    """Build `out` in a staging directory beside it (same filesystem, so renames are atomic);
    `fsync`: flush every file before the rename (checkpoints: a power cut must not leave a
    renamed directory of empty files)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    owner = process_tag()
    staging = out.parent / f".{out.name}.partial-{owner}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if fsync:
            fsync_tree(staging)
        old = out.parent / f".{out.name}.old-{owner}"
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_replaceable(out: Path, is_ours: Callable[[Path], bool], what: str, inputs: Iterable[Path] = (),
                      flag: str = "--force") -> None:
    """`--force` deletes an existing `out` once the new one is done: only ever an empty directory
    or one this tool wrote (`is_ours`, e.g. an earlier dataset), never the working directory,
    the inputs or somebody's other files. UserError naming the reason otherwise."""
    if not out.is_dir():
        raise UserError(f"{out}: not a directory; {flag} only replaces an earlier {what}")
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise UserError(f"{out}: holds the current directory; {flag} will not replace it")
    held = [p for p in inputs if target == p.resolve() or target in p.resolve().parents]
    if held:
        raise UserError(f"{out}: holds the input {held[0]}; {flag} will not replace it")
    if any(out.iterdir()) and not is_ours(out):
        raise UserError(f"{out}: not a {what}; {flag} only replaces an earlier one, delete it yourself if you mean to")


def fsync_tree(directory: Path) -> None:
    """fsync every file and directory below `directory`, then `directory` itself."""
    for path in [*sorted(directory.rglob("*"), reverse=True), directory]:  # files before their directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
