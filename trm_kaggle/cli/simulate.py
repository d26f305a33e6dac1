"""trm-simulate: will this run fit in 12 hours on Kaggle's 4×L4 for the hidden test set?

    trm-simulate --profile kaggle-4xL4 --challenges arc-agi_evaluation_challenges.json \\
        --steps 15000 --batch-size 384 --num-aug 512 [--json]
    trm-simulate --calibrate --calibration runs/calibration.json   # time this machine's device
    trm-simulate --calibration runs/calibration.json ...             # predict with it
    trm-simulate --dry-run --challenges FILE ...                     # trm-submit under a virtual clock

Time on evaluation-sized tasks: the public placeholder's grids are ~1.8× smaller than the
hidden ones (the workload is scaled up to evaluation size and says by how much).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trm_kaggle.cli.common import HelpFormatter, run_cli
from trm_kaggle.kaggle.options import EMBEDDINGS_ONLY_FRACTION as MODES

PROG = "trm-simulate"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--profile", default="kaggle-4xL4", help="kaggle-4xL4, kaggle-2xT4, h100 or cpu")
    p.add_argument("--challenges", type=Path, help="challenges JSON the hidden set is scaled from (default: "
                                                    "ARC-AGI-2 evaluation's shape)")
    p.add_argument("--model", type=Path, help="a packaged model whose architecture to time (default: the paper's)")
    p.add_argument("--objective", choices=["trm", "dis"],
                   help="time fine-tuning with this objective: dis without --model times the arc2_dis preset's "
                        "architecture (seed 001's DIS medium); default: the model's (the paper TRM)")
    p.add_argument("--steps", type=int, default=15_000, help="fine-tune steps to time")
    p.add_argument("--batch-size", type=int, default=384, help="global fine-tune batch (examples per step)")
    p.add_argument("--num-aug", type=int, default=512, help="augmentations voted per test input")
    p.add_argument("--mode", default="emb_first_quarter", choices=sorted(MODES), help="fine-tuning mode (what is trained when)")
    p.add_argument("--budget-hours", type=float, default=12.0, help="the run's time limit (Kaggle: 12 h)")
    p.add_argument("--margin-minutes", type=float, default=20.0, help="kept free before the budget ends")
    p.add_argument("--hidden-tasks", type=int, default=240, help="tasks of the hidden set the file's tasks are scaled to")
    p.add_argument("--cell-scale", type=float, help="grid-cell scaling of the file's tasks (default: up to "
                                                     "evaluation size, ≥ 1)")
    p.add_argument("--calibration", type=Path, help="efficiencies measured by --calibrate on the --profile's kind of "
                                                     "device")
    p.add_argument("--calibration-from-other-device", action="store_true",
                   help="apply a --calibration measured on another kind of device (±50%%, with a warning)")
    p.add_argument("--calibrate", action="store_true", help="time this machine's device and save --calibration")
    p.add_argument("--calibrate-batch", type=int, default=1, help="--calibrate: examples per timed call")
    p.add_argument("--calibrate-calls", type=int, default=1, help="--calibrate: timed calls per measurement")
    p.add_argument("--dry-run", action="store_true", help="run trm-submit with a tiny model under a virtual clock")
    p.add_argument("--dry-run-dir", type=Path, default=Path("runs/dry-run"), help="--dry-run: where its files go")
    p.add_argument("--dry-run-tasks", type=int, help="dry-run only the file's first N tasks (costs scale up)")
    p.add_argument("--inference-slowdown", type=float, default=1.0,
                   help="dry run: inference this many times slower than the warm-up predicts")
    p.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    return p


def model_config(args: argparse.Namespace):
    """The architecture to time: --model's, else the paper TRM's or (--objective dis) the
    arc2_dis preset's; a TRM model timed with --objective dis keeps its recursion, as
    trm-submit --objective dis fine-tunes it."""
    from trm_kaggle.simulate import dis_paper_config, paper_config

    if args.model is None:
        return dis_paper_config() if args.objective == "dis" else paper_config()
    from trm_kaggle.checkpoint import load_checkpoint
    from trm_kaggle.errors import UserError
    from trm_kaggle.kaggle.paths import resolve_model

    config = load_checkpoint(resolve_model(args.model, args.dry_run_dir)).config
    if config.objective == "dis" and args.objective == "trm":
        raise UserError(f"{args.model}: a DIS model fine-tunes with DIS only (leave --objective out)")
    return config.model_copy(update={"objective": args.objective or config.objective})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> int:
        from trm_kaggle import simulate as sim

        config = model_config(args)
        if args.calibrate:
            return calibrate(args, config)
        profile = sim.profile_named(args.profile)
        if args.calibration:
            profile = sim.load_calibration(args.calibration, profile, args.calibration_from_other_device)
        settings = sim.Settings(args.steps, args.batch_size, args.num_aug, MODES[args.mode], args.budget_hours,
                                args.margin_minutes)
        workload = sim.Workload.hidden_from(args.challenges, args.hidden_tasks, args.cell_scale)
        prediction = sim.predict(profile, workload, settings, config)
        if args.dry_run:
            from trm_kaggle.dry_run import DryRunOptions, dry_run

            lines, report = dry_run(prediction, config, args.challenges, args.dry_run_dir,
                                    DryRunOptions(tasks=args.dry_run_tasks, inference_slowdown=args.inference_slowdown))
            prediction.notes += lines
            prediction.outcome = {"steps_planned": report.plan.steps if report.plan else None,
                                  "steps_done": report.steps_done, "chunks_done": report.chunks_done,
                                  "chunks_total": report.chunks_total, "verdict": report.verdict(),
                                  "ok": not report.failures() and report.chunks_done == report.chunks_total}
        print(prediction.to_json() if args.json else "\n".join(sim.report_lines(prediction)))
        return 0

    return run_cli(PROG, body)


def calibrate(args: argparse.Namespace, config) -> int:
    import torch

    from trm_kaggle.calibrate import calibrate as measure, save_calibration
    from trm_kaggle.errors import UserError

    if args.calibration is None:
        raise UserError("--calibrate needs --calibration FILE to save the measurement to")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = measure(config, args.calibrate_batch, args.calibrate_calls, device)
    save_calibration(record, args.calibration)
    print(f"{args.calibration}: {record['device']} peak {record['peak_tflops']:.2f} TFLOP/s; training step "
          f"{record['train_step_s']:.3f} s ({record['train_efficiency']:.1%} of peak), ACT step "
          f"{record['infer_step_s']:.3f} s ({record['infer_efficiency']:.1%}) at batch {record['batch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
