"""trm-eval: a checkpoint's scores on a dataset split: pass@K on ARC, exact accuracy per ACT step on other
puzzles (and a submission, logits on request)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trm_kaggle.checkpoint import load_checkpoint
from trm_kaggle.cli.common import HelpFormatter, comma_list, run_cli
from trm_kaggle.evaluate import ARCVote, dataset_kind, evaluate, parse_task_ids, summary_lines, write_logits
from trm_kaggle.submission import write_submission
from trm_kaggle.vote import build_submission

PROG = "trm-eval"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="step_N directory (ours) or original step_N file")
    p.add_argument("--data", required=True, type=Path, help="dataset directory (trm-build-data layout)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="which split of --data to evaluate")
    p.add_argument("--limit", type=int, help="only the first N examples")
    p.add_argument("--num-aug", type=int, help="vote over the original plus the first K variants per task")
    p.add_argument("--tasks", metavar="ID,...",
                   help="ARC: evaluate only these tasks of --data's test_puzzles.json (scores and --submission "
                        "hold only them)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per forward pass")
    p.add_argument("--dtype", choices=("float32", "bfloat16"),
                   help="forward dtype (default: the checkpoint's on GPU, float32 on CPU)")
    p.add_argument("--submission", type=Path, help="write a complete submission.json here (ARC test split)")
    p.add_argument("--dump-logits", type=Path, help="write every ACT step's logits and q_halt here (.npz)")
    p.add_argument("--identifiers", type=Path, metavar="FILE",
                   help="names of the checkpoint's embedding rows (the identifiers.json of the dataset it was "
                        "trained on), for a checkpoint saved without them, as the original code saves them")
    p.add_argument("--rows-by-position", action="store_true",
                   help="match a checkpoint's unnamed rows to --data's variants by position (warns; right only "
                        "if it was trained on a dataset numbered exactly like --data)")
    p.add_argument("--live-weights", action="store_true",
                   help="predict with the live weights, not the EMA averages (default when the checkpoint has "
                        "them, as trm-pretrain's evaluations and trm-package)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: warning: %(message)s")

    def body() -> None:
        import torch

        for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--num-aug", args.num_aug)):
            if value is not None and value < (0 if flag == "--num-aug" else 1):
                raise_usage(f"{flag} must be {'>= 0' if flag == '--num-aug' else '>= 1'}, got {value}")
        if args.identifiers and args.rows_by_position:
            raise_usage("--identifiers names the rows, --rows-by-position guesses them: give one")
        if args.submission and (args.split != "test" or dataset_kind(args.data) != "arc"):
            raise_usage(f"--submission: only an ARC dataset's test split has a submission ({args.data} "
                        f"{args.split})")
        for flag, path in (("--submission", args.submission), ("--dump-logits", args.dump_logits)):
            if path is not None and not path.parent.is_dir():  # before minutes of inference, not after
                raise_usage(f"{flag} {path}: {path.parent} is not a directory")
        task_ids = None if args.tasks is None else parse_task_ids(comma_list(args.tasks), args.data)
        dtype = args.dtype or (None if torch.cuda.is_available() else "float32")
        result = evaluate(load_checkpoint(args.ckpt), args.data, args.split, args.num_aug, args.limit,
                          args.batch_size, keep_steps=args.dump_logits is not None,
                          progress=not args.quiet, dtype=dtype, identifiers=args.identifiers,
                          rows_by_position=args.rows_by_position, live_weights=args.live_weights,
                          task_ids=task_ids)
        if args.dump_logits:
            write_logits(args.dump_logits, result.predictions)
        if args.submission and isinstance(result.scores, ARCVote):
            scores = result.scores
            write_submission(args.submission, build_submission(scores.tasks, scores.ranked), scores.tasks)
        print("\n".join(summary_lines(result)))
        for flag, path in (("--submission", args.submission), ("--dump-logits", args.dump_logits)):
            if path is not None:
                print(f"wrote {path} ({flag})")

    return run_cli(PROG, body)


def raise_usage(message: str) -> None:
    from trm_kaggle.errors import UserError
    raise UserError(message)


if __name__ == "__main__":
    sys.exit(main())
