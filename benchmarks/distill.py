"""The distillation yardstick: does TRM-Planner's KD beat compute-matched continued training?

    python benchmarks/distill.py --source nqueens --preset nqueens_trm [--teacher-minutes 8]
        [--minutes 8] [--rollouts 4] [--beam 2] [--search-steps 8] [--keep 2]
        [--mode hard] [--weight 0.25] [--quality 0.5] [--data DIR] [--out benchmarks/results]

Seed 000's claim, tested the way its paper tests it (METHODS.md §2): a teacher (PRESET
trained for --teacher-minutes), then from it, for the same second budget of --minutes each,
(a) a student trained with the TRM loss plus w·L_distill against a trm-teacher-cache of the
teacher, and (b) the teacher trained on without KD: the compute-matched control. Both start
from the teacher's weights with fresh optimizers and the same seed. Test exact accuracy,
steps and seconds of both (learning.py's curves; `comparison` sets the student against the
control), and the cache's build time and size, go to OUT/distill_<source>_<preset>_<device>.json
and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from trm_kaggle.distributed import Dist
from trm_kaggle.planner.cache import CacheSettings, build_cache

from learning import add_run_arguments, compare, curve, device_name, ensure_dataset, write_record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="nqueens", choices=("nqueens", "sudoku"))
    p.add_argument("--preset", default="nqueens_trm")
    p.add_argument("--teacher-minutes", type=float, default=8.0)
    p.add_argument("--minutes", type=float, default=8.0, help="the second budget: student and control each")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--beam", type=int, default=2)
    p.add_argument("--search-steps", type=int, default=8, help="T_max of the cache's rollouts")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--logits", default="none")
    p.add_argument("--mode", default="hard", choices=("hard", "soft"))
    p.add_argument("--weight", type=float, default=0.25)
    p.add_argument("--quality", type=float, default=0.5)
    add_run_arguments(p, Path("runs/distill"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = ensure_dataset(args.source, args.data or Path("data") / args.source)
    runs = args.runs / f"{args.source}_{args.preset}_{int(time.time())}"

    teacher = curve(args.preset, data, runs / "teacher", args.teacher_minutes, args.max_steps, args.eval_every,
                    args.overrides, device, label="teacher", save=True)
    settings = CacheSettings(rollouts=args.rollouts, beam=args.beam, max_steps=args.search_steps, keep=args.keep,
                             logits=args.logits)
    summary = build_cache(Path(teacher["checkpoint"]), data, runs / "cache", settings, Dist(0, 1, 0, device))
    print(f"cache: {summary.examples} examples in {summary.seconds:.0f} s, {summary.bytes_per_example:.0f} bytes "
          f"per example", flush=True)
    start = [f"init_from={teacher['checkpoint']}"]
    control = curve(args.preset, data, runs / "control", args.minutes, args.max_steps, args.eval_every,
                    [*args.overrides, *start], device, label="continued (no KD)")
    student = curve(args.preset, data, runs / "student", args.minutes, args.max_steps, args.eval_every,
                    [*args.overrides, *start, f"distill.cache={runs / 'cache'}", f"distill.mode={args.mode}",
                     f"distill.weight={args.weight}", f"distill.quality={args.quality}"], device,
                    label=f"student ({args.mode} KD, w {args.weight})")
    curves = [control, student]
    record = {"source": args.source, "data": str(data), "device": device_name(device), "preset": args.preset,
              "teacher_minutes": args.teacher_minutes, "minutes": args.minutes, "torch": torch.__version__,
              "teacher": teacher, "cache": {"settings": settings.model_dump(), "summary": vars(summary),
                                            "bytes_per_example": summary.bytes_per_example},
              "curves": curves, "comparison": compare(curves)}
    write_record(record, args.out, f"distill_{args.source}_{args.preset}_{'cpu' if device.type == 'cpu' else 'gpu'}")


if __name__ == "__main__":
    main()
