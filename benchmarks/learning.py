"""Learning curves: does a preset make a TRM solve puzzles it has not seen, and how fast?

    python benchmarks/learning.py --source nqueens --presets nqueens_trm [PRESET ...]
        [--minutes 20] [--max-steps 2000] [--eval-every 100] [--data DIR] [--out benchmarks/results]
        [key=value ...]

Trains each preset (trm-pretrain's own PretrainRun, on this machine's device) on a
`trm-build-data --source SOURCE` dataset (built with its defaults under --data when missing)
until --minutes of training or --max-steps, and evaluates the test split every --eval-every
steps with the EMA weights: test exact accuracy (every labelled token right) against optimizer
steps, training seconds (evaluation time excluded) and network block calls per example (one
call of the shared network f; a training step makes H_cycles·(L_cycles + 1) of them, the unit
of seed 001's "18× fewer forward block calls"). Several presets run one after the other in
one invocation, so methods compare on the same machine. Writes
OUT/learning_<source>_<presets>_<device>.json and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from trm_kaggle.cli.pretrain import load_config
from trm_kaggle.distributed import Dist
from trm_kaggle.pretrain import PretrainRun

RESULTS = Path(__file__).parent / "results"


def ensure_dataset(source: str, data: Path) -> Path:
    if not (data / "build.json").is_file():
        subprocess.run([sys.executable, "-m", "trm_kaggle.cli.build_data", "--source", source, "--out", str(data)],
                       check=True)
    return data


def curve(preset: str, data: Path, run_dir: Path, minutes: float, max_steps: int, eval_every: int,
          overrides: list[str], device: torch.device) -> dict:
    """One preset's learning curve: a point per evaluation."""
    config = load_config([f"preset={preset}", f"data_path={data}", f"run_dir={run_dir}", f"max_steps={max_steps}",
                          "eval_every_epochs=null", *overrides])
    run = PretrainRun(config, Dist(0, 1, 0, device), log=lambda *_: None)
    arch = run.model_config
    calls_per_step = arch.H_cycles * (arch.L_cycles + 1)
    points, trained_s = [], 0.0

    def evaluate() -> None:
        scores = run.evaluate()
        points.append({"step": run.step_fn.step, "seconds": round(trained_s, 1),
                       "block_calls": run.step_fn.step * calls_per_step,
                       "test_exact_accuracy": scores.exact_accuracy[-1],
                       "test_token_accuracy": scores.token_accuracy[-1],
                       "test_exact_accuracy_by_act_step": scores.exact_accuracy})
        print(f"{preset} step {run.step_fn.step} {trained_s:.0f} s: test exact {scores.exact_accuracy[-1]:.3f} "
              f"token {scores.token_accuracy[-1]:.3f}", flush=True)

    evaluate()
    while run.step_fn.step < max_steps and trained_s < minutes * 60:
        start = time.perf_counter()
        run.train_step({k: v.to(device) for k, v in run.sampler.next_batch().items()})
        trained_s += time.perf_counter() - start
        if run.step_fn.step % eval_every == 0:
            evaluate()
    if points[-1]["step"] != run.step_fn.step:
        evaluate()
    return {"preset": preset, "config": config.model_dump(), "block_calls_per_step": calls_per_step,
            "parameters": sum(p.numel() for p in run.model.parameters()), "points": points, "final": points[-1]}


def plot(curves: list[dict], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for x, label, ax in zip(("step", "seconds", "block_calls"),
                            ("optimizer steps", "training seconds", "network block calls per example"), axes):
        for c in curves:
            ax.plot([p[x] for p in c["points"]], [p["test_exact_accuracy"] for p in c["points"]], marker=".",
                    label=c["preset"])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test exact accuracy")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, choices=("nqueens", "sudoku"))
    p.add_argument("--presets", nargs="+", required=True)
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget per preset")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=100, help="optimizer steps between evaluations")
    p.add_argument("--data", type=Path, help="dataset dir (default: data/<source>; built when missing)")
    p.add_argument("--runs", type=Path, default=Path("runs/learning"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("overrides", nargs="*", help="trm-pretrain overrides for every preset, e.g. seed=1")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device).split()[-1].lower() if device.type == "cuda" else "cpu"
    data = ensure_dataset(args.source, args.data or Path("data") / args.source)
    curves = [curve(preset, data, args.runs / f"{args.source}_{preset}_{int(time.time())}", args.minutes,
                    args.max_steps, args.eval_every, args.overrides, device) for preset in args.presets]
    stem = f"learning_{args.source}_{'+'.join(args.presets)}_{name}"
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"source": args.source, "data": str(data), "device": f"{platform.processor() or platform.machine()} "
              f"({torch.get_num_threads()} threads)" if device.type == "cpu" else torch.cuda.get_device_name(device),
              "minutes": args.minutes, "max_steps": args.max_steps, "eval_every": args.eval_every,
              "torch": torch.__version__, "curves": curves}
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2))
    plot(curves, f"{args.source}: test exact accuracy ({record['device']})", args.out / f"{stem}.png")
    for c in curves:
        f = c["final"]
        print(f"{c['preset']}: test exact {f['test_exact_accuracy']:.3f} after {f['step']} steps, {f['seconds']:.0f} s, "
              f"{f['block_calls']} block calls per example")
    print(f"wrote {args.out / stem}.json and .png")


if __name__ == "__main__":
    main()
