"""trm-submit: fine-tune a packaged TRM on the hidden tasks and write submission.json on time.

    trm-submit --model bundle/ --challenges arc-agi_test_challenges.json --out submission.json \\
        --budget-hours 12 --num-aug 512 --mode emb_first_quarter

On Kaggle, --model and --challenges are found under /kaggle/input when left out. The
submission is valid from the first seconds and rewritten atomically as it improves.
*: unless given here, fine-tune settings come from the package's config.yaml (`finetune:`),
then from these defaults.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from trm_kaggle.cli.common import EXIT_USAGE, HelpFormatter, run_cli
from trm_kaggle.errors import UserError

PROG = "trm-submit"


def steps_value(text: str) -> int | str:
    """--steps: a whole number of fine-tune steps, or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of steps or auto") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", type=Path, help="packaged model: trm-package's OUT, OUT/model or a zip (default: discover)")
    p.add_argument("--challenges", type=Path, help="challenges JSON (default: discover arc-agi_test_challenges.json)")
    p.add_argument("--competition", help="the competition's slug when several are mounted (default: the newest)")
    p.add_argument("--out", type=Path, default=Path("submission.json"), help="the submission file, valid from the first second")
    p.add_argument("--input-root", type=Path, default=Path("/kaggle/input"), help="where --model and --challenges are discovered (Kaggle's datasets)")
    p.add_argument("--scratch", type=Path,
                   help="scratch directory, kept (default: a new one under /kaggle/temp or the system's temporary "
                        "directory, removed at the end)")
    p.add_argument("--keep-scratch", action="store_true", default=None,
                   help="keep the scratch directory trm-submit created (to look at its data and weights)")
    p.add_argument("--budget-hours", type=float, default=12.0, help="the run ends within this many hours of its start (Kaggle: 12)")
    p.add_argument("--margin-minutes", type=float, help="kept free before the budget ends (default min(20, 10%%))")
    p.add_argument("--num-aug", type=int, help="augmentations voted per test input (default 512*)")
    p.add_argument("--mode", help="fine-tuning mode (default emb_first_quarter*)",
                   choices=["full", "emb_only", "emb_first_quarter", "emb_first_half", "lora"])
    p.add_argument("--objective", choices=["trm", "dis"],
                   help="fine-tuning objective: trm, or dis (Deep Improvement Supervision) (default: the model's*)")
    p.add_argument("--steps", type=steps_value, default="auto", help="fine-tune steps, or auto (fit the budget)")
    p.add_argument("--max-steps", type=int, help="the most steps auto chooses (default 15000*)")
    p.add_argument("--batch-size", type=int, help="global fine-tune batch (default 384*)")
    p.add_argument("--infer-batch-size", type=int, help="inference batch per device")
    p.add_argument("--lr", type=float, help="trunk learning rate (default 2e-4*)")
    p.add_argument("--puzzle-emb-lr", type=float, help="puzzle-embedding learning rate (default 2e-2*)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: every CUDA GPU, else CPU worker processes")
    p.add_argument("--gpus", default="auto", help="devices to use (CPU: worker processes), or auto")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile on CUDA")
    p.add_argument("--short", action="store_true",
                   help="a short run: at most 15 min, 8 augmentations, 100 steps (what a saved notebook version runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentations and of fine-tuning")
    return p


def options_from(args: argparse.Namespace):
    from trm_kaggle.kaggle.options import SubmitOptions

    fields = {k: v for k, v in vars(args).items() if v is not None and k != "no_compile"}
    fields["compile"] = not args.no_compile
    try:
        return SubmitOptions(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        from trm_kaggle.kaggle import submit

        report = submit(options_from(args))
        print(f"{report.out}")
        if report.failures():  # a valid file of fallbacks is still a failed run: say so, exit 2
            print(f"{PROG}: {report.verdict()}", file=sys.stderr)
            return EXIT_USAGE
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
