"""Checkpoint retention beside a trainer: the newest complete checkpoint is never deleted, a
checkpoint being written or of another kind is never touched, and a held one (a sync sidecar
copying it) survives every pruner (seed 002 lost fresh checkpoints to its prune job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trm_kaggle import run_dir as rd
from trm_kaggle.checkpoint import FORMAT, META_FILE
from trm_kaggle.cli.checkpoints import main
from trm_kaggle.errors import UserError


def fake_checkpoint(run: Path, step: int) -> Path:
    path = run / f"step_{step}"
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"weights")
    (path / META_FILE).write_text(json.dumps({"format": FORMAT}))
    return path


@pytest.fixture
def run(tmp_path) -> Path:
    for step in (2, 9, 10):  # by name step_10 sorts before step_9: retention goes by step
        fake_checkpoint(tmp_path, step)
    (tmp_path / ".step_11.partial-host-7").mkdir()   # being written
    (tmp_path / "step_5").mkdir()                      # no meta.json: not a checkpoint of ours
    return tmp_path


def names(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


def test_prune_keeps_the_newest_by_step_and_touches_nothing_else(run):
    gone = rd.prune(run, keep_last=1)
    assert [p.name for p in gone] == ["step_2", "step_9"]
    assert names(run) == {"step_10", ".step_11.partial-host-7", "step_5"}
    with pytest.raises(UserError, match="newest checkpoint is always kept"):
        rd.prune(run, keep_last=0)


def test_a_held_checkpoint_survives_and_an_expired_hold_does_not(run):
    with rd.hold(run / "step_2", "sync"):
        assert [p.name for p in rd.prune(run, keep_last=1)] == ["step_9"]
        assert (run / "step_2").is_dir()
    assert not list((run / rd.HOLDS_DIR).iterdir())  # released
    with rd.hold(run / "step_2", "dead-copier") as held:
        stale = next((run / rd.HOLDS_DIR).iterdir())
        old = time.time() - rd.HOLD_TTL_SECONDS - 1
        os.utime(stale, (old, old))
        assert rd.prune(run, keep_last=1) == [held]


def test_a_hold_taken_between_the_look_and_the_rename_wins(run, monkeypatch):
    real = rd.holders
    calls = []

    def holders_then_a_copier_arrives(checkpoint, ttl_seconds=rd.HOLD_TTL_SECONDS):
        calls.append(checkpoint.name)
        if len(calls) == 2:  # after prune looked and renamed step_2 away
            rd.hold_file(checkpoint, "late").parent.mkdir(exist_ok=True)
            rd.hold_file(checkpoint, "late").write_text("late\n")
        return real(checkpoint, ttl_seconds)

    monkeypatch.setattr(rd, "holders", holders_then_a_copier_arrives)
    gone = rd.prune(run, keep_last=2)
    assert gone == [] and (run / "step_2" / "model.pt").read_bytes() == b"weights"  # given back whole


def test_holding_a_pruned_or_partial_checkpoint_is_refused(run):
    rd.prune(run, keep_last=1)
    for path in (run / "step_2", run / ".step_11.partial-host-7", run / "step_5"):
        with pytest.raises(UserError, match="not a complete checkpoint"):
            with rd.hold(path, "sync"):
                pass


def test_cli_latest_prune_and_hold(run, capsys):
    assert main(["latest", str(run)]) == 0 and capsys.readouterr().out.strip() == str(run / "step_10")
    assert main(["prune", str(run), "--keep-last", "1", "--dry-run"]) == 0
    assert "would remove 2 (step_2, step_9); kept step_10" in capsys.readouterr().out
    assert (run / "step_2").is_dir()
    prune_inside = [sys.executable, "-m", "trm_kaggle.cli.checkpoints", "prune", str(run), "--keep-last", "1"]
    assert main(["hold", str(run / "step_2"), "--who", "sync", "--", *prune_inside]) == 0
    assert names(run) >= {"step_2", "step_10"} and "step_9" not in names(run)
    assert main(["hold", str(run / "step_10"), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert main(["latest", str(run / "nothere")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_the_console_script_is_installed():
    done = subprocess.run([Path(sys.executable).parent / "trm-checkpoints", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "latest" in done.stdout and "hold" in done.stdout


def test_hold_refuses_a_bad_name_or_command_and_releases_on_sigterm(run, capsys, tmp_path):
    assert main(["hold", str(run / "step_2"), "--who", "a/b", "--", "true"]) == 2
    assert main(["hold", str(run / "step_2"), "--", "no-such-command-here"]) == 2
    assert "cannot run no-such-command-here" in capsys.readouterr().err
    assert not list((run / rd.HOLDS_DIR).glob("*"))  # nothing left pinned
    started = tmp_path / "started"
    copier = subprocess.Popen([sys.executable, "-m", "trm_kaggle.cli.checkpoints", "hold", str(run / "step_2"), "--",
                               sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); "
                               "time.sleep(60)"])
    deadline = time.time() + 30
    while not started.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert rd.holders(run / "step_2")
    copier.terminate()  # what Kubernetes sends a sidecar
    assert copier.wait(timeout=30) != 0
    assert not rd.holders(run / "step_2")  # released, and the child did not outlive it


def test_prune_of_a_run_not_started_yet(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "later"), "--keep-last", "2"]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "later"), "--keep-last", "2", "--missing-ok"]) == 0
