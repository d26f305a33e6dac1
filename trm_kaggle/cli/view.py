"""trm-view: look at tasks, attempts and solutions, and at a run's curves.

    trm-view tasks --challenges arc-agi_test_challenges.json [--submission submission.json]
        [--solutions arc-agi_test_solutions.json] [--tasks ID,...] [--limit N] --out views/
    trm-view curves runs/arc2 --out runs/arc2/curves.png

`tasks` writes one PNG per task (demonstration pairs; each test input with attempt 1, attempt 2
and the solution, attempts marked right or wrong) and an index.html that shows them all.
`curves` plots RUN_DIR/metrics.jsonl: loss, exact accuracy, learning rates, pass@K.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trm_kaggle.cli.common import HelpFormatter, comma_list, run_cli
from trm_kaggle.errors import UserError

PROG = "trm-view"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser("tasks", formatter_class=HelpFormatter, help="a PNG per task and an index.html")
    tasks.add_argument("--challenges", required=True, type=Path, help="Kaggle-style challenges JSON")
    tasks.add_argument("--submission", type=Path, help="a submission.json whose attempts to show")
    tasks.add_argument("--solutions", type=Path, help="the solutions JSON, to show and to mark the attempts")
    tasks.add_argument("--tasks", help="comma-separated task ids to show (default: all, in file order)")
    tasks.add_argument("--limit", type=int, help="show at most the first N tasks")
    tasks.add_argument("--out", required=True, type=Path, help="directory for the PNGs and index.html")
    curves = sub.add_parser("curves", formatter_class=HelpFormatter, help="a PNG of a run's metrics.jsonl")
    curves.add_argument("run_dir", type=Path, help="a trm-pretrain run_dir (or its metrics.jsonl)")
    curves.add_argument("--out", type=Path, help="the PNG to write (default RUN_DIR/curves.png)")
    return p


def show_tasks(args: argparse.Namespace) -> int:
    from trm_kaggle.arc import load_challenges, read_json
    from trm_kaggle.submission import SubmissionError, check_submission, load_solutions
    from trm_kaggle.view import write_task_views

    tasks = load_challenges(args.challenges)
    if args.tasks:
        wanted = comma_list(args.tasks)
        unknown = [t for t in wanted if t not in {task.id for task in tasks}]
        if unknown:
            raise UserError(f"--tasks: {unknown[0]} is not in {args.challenges}")
        tasks = [task for task in tasks if task.id in wanted]
    if args.limit is not None:
        if args.limit < 1:
            raise UserError(f"--limit must be >= 1, got {args.limit}")
        tasks = tasks[:args.limit]
    submission = None
    if args.submission:
        submission, problems = check_submission(read_json(args.submission), tasks if not args.tasks and
                                                args.limit is None else None)
        if problems:
            raise SubmissionError([f"{args.submission}: {problems[0]}"])
    solutions = load_solutions(args.solutions) if args.solutions else None
    rows = write_task_views(tasks, submission, solutions, args.out)
    scored = [r for r in rows if r["right"] is not None]
    score = (f"; {sum(r['right'] for r in scored)} of {sum(r['test_outputs'] for r in scored)} test outputs right"
             if scored else "")
    print(f"{args.out / 'index.html'}: {len(rows)} tasks drawn{score}")
    return 0


def show_curves(args: argparse.Namespace) -> int:
    from trm_kaggle.view import write_curves

    metrics = args.run_dir if args.run_dir.suffix == ".jsonl" else args.run_dir / "metrics.jsonl"
    out = args.out or metrics.parent / "curves.png"
    plotted = write_curves(metrics, out)
    print(f"{out}: {', '.join(plotted) or 'nothing'} against the optimizer step")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_cli(PROG, lambda: show_tasks(args) if args.command == "tasks" else show_curves(args))


if __name__ == "__main__":
    sys.exit(main())
