"""Run the project's console scripts one after another as the stages of a bigger job (`make
demo`, the held-out check), each announced with its command and timed, so a newcomer sees
every real command that ran and how long it took."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def tool(name: str) -> str:
    """The path of one of this environment's console scripts (trm-build-data, ...)."""
    return str(Path(sys.executable).parent / name)


def step(title: str, command: list[str], capture: bool = False, env: dict[str, str] | None = None) -> str:
    """Run `command` (with `env` added to the environment); its stdout when `capture`, else "".
    SystemExit naming the stage when it fails (its captured output printed first)."""
    shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    print(f"\n=== {title}\n$ {shown + ' ' if shown else ''}{' '.join(command)}", flush=True)
    start = time.time()
    done = subprocess.run(command, text=True, capture_output=capture, env=os.environ | (env or {}))
    if done.returncode != 0:
        if capture:
            print(done.stdout, done.stderr, file=sys.stderr)
        raise SystemExit(f"{title} failed (exit {done.returncode})")
    print(f"--- {title}: {time.time() - start:.0f} s", flush=True)
    return done.stdout if capture else ""
