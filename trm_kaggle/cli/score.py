"""trm-score: score a submission with the ARC Prize metric.

    trm-score --submission submission.json --solutions arc-agi_evaluation_solutions.json [--json] [--verbose]

A test output counts when either attempt equals its solution; the score is the fraction of
test outputs that count. A malformed submission is an error, as on Kaggle: every problem is
listed on stderr, one per line, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trm_kaggle.arc import read_json
from trm_kaggle.cli.common import HelpFormatter, run_cli
from trm_kaggle.errors import UserError
from trm_kaggle.submission import ScoreResult, SubmissionError, load_solutions, score_submission

PROG = "trm-score"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--submission", required=True, type=Path, help="submission.json to score")
    p.add_argument("--solutions", required=True, type=Path,
                   help="Kaggle-style solutions file: task id -> list of output grids")
    p.add_argument("--json", action="store_true", help='print one line {"score": ..., "correct": ..., "total": ...}')
    p.add_argument("--verbose", action="store_true", help="add each task's correct/total")
    return p


def report(result: ScoreResult, as_json: bool, verbose: bool) -> list[str]:
    """The lines to print: one JSON line, or per-task lines (verbose) then the score."""
    if as_json:
        fields = {"score": result.score, "correct": result.correct, "total": result.total}
        if verbose:
            fields["per_task"] = result.per_task
        return [json.dumps(fields)]
    lines = [f"{task_id} {sum(flags)}/{len(flags)}" for task_id, flags in result.per_task.items()] if verbose else []
    return lines + [f"score {result.score:.4f} ({result.correct}/{result.total} test outputs correct, "
                    f"{len(result.per_task)} tasks)"]


def score(submission: Path, solutions: Path) -> ScoreResult:
    """Score a file; a malformed one prints each problem on stderr before the final error."""
    expected = load_solutions(solutions)
    try:
        return score_submission(read_json(submission), expected)
    except SubmissionError as exc:
        for problem in exc.problems:
            print(f"{PROG}: {submission}: {problem}", file=sys.stderr)
        raise UserError(f"{submission}: malformed submission, {len(exc.problems)} problem(s) listed above") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> None:
        print("\n".join(report(score(args.submission, args.solutions), args.json, args.verbose)))

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
