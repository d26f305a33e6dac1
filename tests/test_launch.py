"""pretrain/launch.sh: parses, explains itself, and launches trm-pretrain under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LAUNCH = Path(__file__).parent.parent / "pretrain" / "launch.sh"


def test_launch_script_parses_and_prints_usage():
    assert subprocess.run(["bash", "-n", str(LAUNCH)]).returncode == 0
    shown = subprocess.run([str(LAUNCH), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "usage: pretrain/launch.sh RUN_DIR" in shown.stdout
    assert subprocess.run([str(LAUNCH)], capture_output=True).returncode == 2


def test_launch_runs_a_resumable_cpu_job(mini_dataset, tmp_path):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PRESET": "cpu_tiny",
                        "DATA_DIR": str(mini_dataset), "NPROC_PER_NODE": "1"}
    for steps in (2, 3):  # the second call resumes the first's run
        done = subprocess.run([str(LAUNCH), str(tmp_path / "run"), f"max_steps={steps}"], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout and (tmp_path / "run" / "step_3").is_dir()
