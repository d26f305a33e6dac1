"""trm-submit end to end on real ARC-AGI-2 tasks, CPU worker processes, a tiny model: the
submission is valid and complete on every path, including every fault the run must survive.

Faults are injected through TRM_KAGGLE_FAULTS (trm_kaggle.kaggle.faults) because workers are
separate processes. These tests take a few minutes in all: each run spawns real workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from trm_kaggle.cli.submit import main as submit_main
from trm_kaggle.kaggle import SubmitOptions, submit
from trm_kaggle.submission import current_umask

from submit_helpers import assert_complete, hidden_tasks, tiny_bundle, write_challenges


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def four_tasks(tmp_path_factory):
    tasks = hidden_tasks(4)
    challenges, _ = write_challenges(tasks, tmp_path_factory.mktemp("hidden"))
    return tasks, challenges


def run(bundle, four_tasks, tmp_path, faults: str = "", **changes):
    """One in-process submit() on the four tasks with short, fixed settings."""
    tasks, challenges = four_tasks
    fields = dict(out=tmp_path / "out" / "submission.json", model=bundle, challenges=challenges,
                  scratch=tmp_path / "scratch", budget_hours=0.05, margin_minutes=0.1, num_aug=3, steps=6,
                  batch_size=8, infer_batch_size=4, device="cpu", gpus=1, progress_every_s=0.5, write_every_s=0)
    os.environ["TRM_KAGGLE_FAULTS"] = faults
    try:
        report = submit(SubmitOptions(**(fields | changes)))
    finally:
        os.environ.pop("TRM_KAGGLE_FAULTS")
    return report, assert_complete(fields["out"] if "out" not in changes else changes["out"], tasks)


def test_a_clean_run_fine_tunes_predicts_every_chunk_and_votes(bundle, four_tasks, tmp_path):
    report, _ = run(bundle, four_tasks, tmp_path, mode="emb_first_half")
    assert report.error is None and report.events == []
    assert report.steps_done == 6 and report.plan.embeddings_only_steps == 3
    assert report.chunks_done == report.chunks_total > 1
    assert list(report.phases) == ["setup", "data", "finetune", "inference"]


@pytest.mark.parametrize("mode", ["full", "emb_only", "lora"])
def test_every_mode_completes(mode, bundle, four_tasks, tmp_path):
    report, _ = run(bundle, four_tasks, tmp_path, mode=mode, steps=3)
    assert report.error is None and report.steps_done == 3 and report.chunks_done == report.chunks_total


def test_cuda_oom_in_inference_retries_with_a_smaller_batch(bundle, four_tasks, tmp_path, capfd):
    report, _ = run(bundle, four_tasks, tmp_path, faults="infer_oom:times=2,above=1")
    assert report.error is None and report.chunks_done == report.chunks_total
    assert "CUDA out of memory: inference batch now 1" in capfd.readouterr().err


def test_a_dying_fine_tune_worker_costs_neither_the_run_nor_the_submission(bundle, four_tasks, tmp_path):
    report, _ = run(bundle, four_tasks, tmp_path, faults="finetune_crash:rank=1,step=3", gpus=2, steps=50)
    assert any("fine-tuning: worker(s) [1] exited with code(s) [17]" in e for e in report.events)
    assert report.chunks_done == report.chunks_total and report.error is None


def test_a_dying_inference_worker_leaves_its_chunks_to_the_others(bundle, four_tasks, tmp_path):
    # Worker 0 is slowed so that it cannot take every chunk before worker 1 has started (as on a
    # busy 2-core CI machine, where worker 1 then never crashed).
    report, _ = run(bundle, four_tasks, tmp_path, faults="infer_crash:rank=1;slow_chunk:rank=0,seconds=3", gpus=2)
    assert any("inference: worker(s) [1] exited" in e for e in report.events)
    assert report.chunks_done == report.chunks_total and report.error is None


def test_a_second_run_in_the_same_scratch_uses_nothing_the_first_left(bundle, four_tasks, tmp_path, capfd):
    """An earlier run's fine-tuned weights and prediction chunks in the scratch directory (an
    interactive session run twice) are removed, not taken for this run's: here a second run
    whose fine-tuning fails before saving anything predicts with the package, and predicts
    every chunk anew instead of voting with the first run's."""
    run(bundle, four_tasks, tmp_path)
    assert (tmp_path / "scratch" / "finetuned" / "meta.json").is_file()
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scratch" / "predictions").glob("chunk_*.npz")}
    assert first
    capfd.readouterr()
    report, _ = run(bundle, four_tasks, tmp_path, faults="finetune_error:step=0", progress_every_s=3600)
    assert "no fine-tuned weights: inference with the packaged model" in capfd.readouterr().err
    assert report.steps_done is None and report.chunks_done == report.chunks_total
    second = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scratch" / "predictions").glob("chunk_*.npz")}
    assert second.keys() == first.keys() and all(second[name] > first[name] for name in first)


def test_a_scratch_directory_made_by_the_run_is_removed_unless_kept(bundle, four_tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    for keep in (False, True):
        report, _ = run(bundle, four_tasks, tmp_path, scratch=None, keep_scratch=keep, steps=1, num_aug=1)
        assert report.error is None
        left = list((tmp_path / "tmp").glob("trm-submit-*"))
        assert len(left) == int(keep), left
    assert (left[0] / "data" / "identifiers.json").is_file()  # kept whole
    out = tmp_path / "out" / "submission.json"
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # readable by a teammate, not 0600


def test_an_exception_in_fine_tuning_infers_with_the_packaged_model(bundle, four_tasks, tmp_path, capfd):
    # No periodic save before the fault (a slow step on a busy machine used to save at step 1).
    report, _ = run(bundle, four_tasks, tmp_path, faults="finetune_error:step=2", progress_every_s=3600)
    assert any("fine-tuning: worker(s) [0] exited with code(s) [1]" in e for e in report.events)
    assert report.steps_done is None and report.chunks_done == report.chunks_total
    assert "no fine-tuned weights: inference with the packaged model" in capfd.readouterr().err
    assert report.failures() == ["fine-tuning produced no weights (the packaged model predicted)"]
    assert report.lines()[0].startswith("trm-submit: FAILED: fine-tuning produced no weights")


def test_a_diverging_fine_tune_stops_and_predicts_with_finite_weights(bundle, four_tasks, tmp_path, capfd):
    """lr 1e20: the first non-finite step ends fine-tuning; nothing non-finite is saved or voted."""
    report, _ = run(bundle, four_tasks, tmp_path, lr=1e20, puzzle_emb_lr=1e20, lr_warmup_steps=0, steps=50,
                    progress_every_s=3600)
    stopped = [e for e in report.events if e.startswith("fine-tuning stopped early: step ")]
    assert stopped and "not finite, the run diverged" in stopped[0]
    assert stopped[0].endswith("inference uses the packaged model")
    assert report.steps_done is None and report.chunks_done == report.chunks_total and report.answered > 0
    assert "fine-tuning produced no weights (the packaged model predicted)" in report.failures()


def test_cuda_oom_in_fine_tuning_splits_the_batch_and_goes_on(bundle, four_tasks, tmp_path, capfd):
    report, _ = run(bundle, four_tasks, tmp_path, faults="finetune_oom:times=2,above=2")
    assert report.steps_done == 6 and report.failures() == []
    assert any("each step ran in 4 micro-batches per device" in e for e in report.events)
    assert "CUDA out of memory in a training step of 8 rows: now 2 micro-batches" in capfd.readouterr().err


def test_a_run_that_predicts_nothing_exits_2_and_says_why(bundle, four_tasks, tmp_path, capsys, caplog,
                                                          monkeypatch):
    """As with torch 2.4 before the fix: every inference worker dies. The file is valid, the
    run is a failure."""
    tasks, challenges = four_tasks
    monkeypatch.setenv("TRM_KAGGLE_FAULTS", "infer_crash")  # every worker, at its first chunk
    code = submit_main(["--model", str(bundle), "--challenges", str(challenges), "--out", str(tmp_path / "s.json"),
                        "--scratch", str(tmp_path / "scratch"), "--device", "cpu", "--gpus", "2", "--steps", "2",
                        "--batch-size", "8", "--num-aug", "2", "--budget-hours", "0.05"])
    assert code == 2
    assert_complete(tmp_path / "s.json", tasks)
    err = capsys.readouterr().err
    assert "no inference worker is left" in caplog.text
    assert "trm-submit: FAILED: inference produced no predictions: all" in err.strip().splitlines()[-1]


def test_late_fine_tuning_stops_at_its_end_time(bundle, four_tasks, tmp_path):
    report, _ = run(bundle, four_tasks, tmp_path, faults="slow_step:seconds=1", budget_hours=0.02, steps=1000)
    assert "fine-tuning will stop early" in report.plan.why
    assert 0 < report.steps_done < 1000 and report.chunks_done > 0
    assert sum(report.phases.values()) < report.deadline - report.start


def test_late_inference_votes_with_the_chunks_done_in_time(bundle, four_tasks, tmp_path):
    report, submission = run(bundle, four_tasks, tmp_path, faults="slow_chunk:seconds=2", budget_hours=0.01, steps=2,
                            infer_batch_size=1)
    assert 0 < report.chunks_done < report.chunks_total
    assert any(f"{report.chunks_done} of {report.chunks_total} chunks predicted in time" in e for e in report.events)
    assert sum(report.phases.values()) < 0.01 * 3600


def test_workers_stopped_mid_run_leave_no_leaked_semaphore(bundle, four_tasks, tmp_path):
    """The CLI whose inference worker the deadline stops mid-chunk (after its first progress
    bar): the run ends without Python's resource-tracker warning (see the negative control in
    test_submit_parts: a worker with tqdm's default lock leaks one)."""
    _, challenges = four_tasks
    process = cli(["--model", str(bundle), "--challenges", str(challenges), "--out", str(tmp_path / "s.json"),
                   "--budget-hours", "0.01", "--margin-minutes", "0.1", "--num-aug", "3", "--steps", "2",
                   "--batch-size", "8", "--infer-batch-size", "1", "--device", "cpu", "--scratch", str(tmp_path / "s")],
                  env=os.environ | {"TRM_KAGGLE_FAULTS": "slow_chunk:seconds=2"})
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log
    assert "chunks predicted in time; voting with those" in log  # a worker was stopped
    assert "leaked semaphore" not in log and "resource_tracker" not in log, log


def test_an_exception_while_voting_leaves_the_last_written_submission(bundle, four_tasks, tmp_path):
    report, _ = run(bundle, four_tasks, tmp_path, faults="vote_error", steps=1)
    assert report.error and "injected fault: voting fails" in report.error
    assert report.writes == 1  # the fallback, and it is what stands


def test_a_bundle_for_another_python_runs_and_warns(bundle, four_tasks, tmp_path):
    """trm_kaggle imports, so the model answers (refusing it used to give fallbacks only)."""
    wrong = tmp_path / "bundle"
    (wrong / "wheels").mkdir(parents=True)
    (wrong / "wheels" / "numpy-2.0.0-cp39-cp39-manylinux_2_17_x86_64.whl").write_bytes(b"")
    os.symlink(bundle / "model", wrong / "model")
    report, _ = run(wrong, four_tasks, tmp_path, steps=2)
    assert any("wheels built for cp39" in e and "the run goes on" in e for e in report.events)
    assert report.failures() == [] and report.answered > 0  # the model answers (an untrained one, not all)


def test_unreadable_challenges_are_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "c.json").write_text("{")
    code = submit_main(["--challenges", str(tmp_path / "c.json"), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and "c.json: not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()


# ---------------------------------------------------------------------------- the CLI, for real

def cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trm_kaggle.cli.submit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture(scope="module")
def sixteen_tasks(tmp_path_factory):
    tasks = hidden_tasks(16)
    challenges, solutions = write_challenges(tasks, tmp_path_factory.mktemp("hidden16"))
    return tasks, challenges, solutions


def test_cli_on_16_real_tasks_ends_within_its_3_minute_budget(bundle, sixteen_tasks, tmp_path):
    """The issue's command: --budget-hours 0.05 --num-aug 8 --device cpu, steps auto."""
    tasks, challenges, solutions = sixteen_tasks
    out = tmp_path / "submission.json"
    process = cli(["--model", str(bundle), "--challenges", str(challenges), "--out", str(out), "--budget-hours",
                   "0.05", "--num-aug", "8", "--device", "cpu", "--batch-size", "32", "--scratch", str(tmp_path / "s")])
    log, _ = process.communicate(timeout=400)
    assert process.returncode == 0, log
    # The run's own account of its budget, not the test's stopwatch (which also counts the
    # interpreter's start on a machine whose other core may be busy).
    total, deadline = map(float, re.search(r"total\s+([\d.]+)\s+\(deadline at (\d+) s\)", log).groups())
    assert total <= deadline < 180, log
    assert_complete(out, tasks)
    assert "inference chunks:" in log and "fine-tune steps:" in log
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert plan["steps"] > 10  # auto filled the budget with fine-tuning


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def alive(processes: list[psutil.Process]) -> list[str]:
    """Those still running (a zombie is dead: only its exit status is left)."""
    running = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return running


# (what the supervisor is doing when it is killed, the fault that holds it there, what says it is there)
KILL_MOMENTS = {
    "mid-probe": ("slow_probe:seconds=120", "warm-up: timing"),  # the worker sleeps inside a probe
    "mid-step": ("slow_step:seconds=120", "plan.json"),           # ... inside its first step
    "mid-inference": ("", "predictions/chunk_00000.npz"),
}


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_sigkill_of_the_supervisor_leaves_a_valid_file_and_no_worker_alive(moment, bundle, sixteen_tasks, tmp_path):
    """Workers die with their supervisor whatever they are doing (not only between steps)."""
    tasks, challenges, _ = sixteen_tasks
    fault, marker = KILL_MOMENTS[moment]
    out, scratch = tmp_path / "submission.json", tmp_path / "s"
    process = cli(["--model", str(bundle), "--challenges", str(challenges), "--out", str(out), "--budget-hours",
                   "0.03", "--num-aug", "8", "--device", "cpu", "--batch-size", "16", "--infer-batch-size", "2",
                   "--scratch", str(scratch)], env=os.environ | {"TRM_KAGGLE_FAULTS": fault})
    printed: list[str] = []
    threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True).start()
    deadline = time.time() + 150
    while not (marker in "".join(printed) or (scratch / marker).exists()) and process.poll() is None \
            and time.time() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before the moment to kill it:\n" + "".join(printed)
    time.sleep(1)  # into the probe or step
    workers = descendants(process.pid)
    assert workers, "no worker process to watch"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert_complete(out, tasks)
    time.sleep(5)
    assert alive(workers) == [], "worker processes outlived their supervisor"
