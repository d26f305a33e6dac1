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
one invocation, so methods compare on the same machine; the JSON's `comparison` sets each
later preset against the first at equal wall-clock, at equal block calls, and in block calls
to reach the first's final accuracy. Writes OUT/learning_<source>_<presets>_<device>.json and
a PNG of the curves.
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
from trm_kaggle.model import block_calls
from trm_kaggle.pretrain import PretrainRun

RESULTS = Path(__file__).parent / "results"


def ensure_dataset(source: str, data: Path) -> Path:
    if not (data / "build.json").is_file():
        subprocess.run([sys.executable, "-m", "trm_kaggle.cli.build_data", "--source", source, "--out", str(data)],
                       check=True)
    return data


def curve(preset: str, data: Path, run_dir: Path, minutes: float, max_steps: int, eval_every: int,
          overrides: list[str], device: torch.device, label: str | None = None, save: bool = False) -> dict:
    """One preset's learning curve: a point per evaluation. `label` names it (default: the
    preset); `save` checkpoints the run at its end (the record's `checkpoint`)."""
    label = label or preset
    config = load_config([f"preset={preset}", f"data_path={data}", f"run_dir={run_dir}", f"max_steps={max_steps}",
                          "eval_every_epochs=null", *overrides])
    run = PretrainRun(config, Dist(0, 1, 0, device), log=lambda *_: None)
    calls_per_step, calls_per_pass = block_calls(run.model_config)
    points, trained_s = [], 0.0

    def evaluate() -> None:
        scores = run.evaluate()
        points.append({"step": run.step_fn.step, "seconds": round(trained_s, 1),
                       "block_calls": run.step_fn.step * calls_per_step,
                       "test_exact_accuracy": scores.exact_accuracy[-1],
                       "test_token_accuracy": scores.token_accuracy[-1],
                       "test_exact_accuracy_by_act_step": scores.exact_accuracy})
        print(f"{label} step {run.step_fn.step} {trained_s:.0f} s: test exact {scores.exact_accuracy[-1]:.3f} "
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
    saved = {"checkpoint": str(run.save())} if save else {}
    return {"preset": label, "config": config.model_dump(), "block_calls_per_step": calls_per_step,
            "block_calls_per_example_pass": calls_per_pass, **saved,
            "parameters": sum(p.numel() for p in run.model.parameters()), "points": points, "final": points[-1]}


def accuracy_at(c: dict, x: str, budget: float) -> float:
    """A curve's test exact accuracy at the last evaluation within `budget` of `x`."""
    return max((p for p in c["points"] if p[x] <= budget), key=lambda p: p[x])["test_exact_accuracy"]


def first_reaching(c: dict, accuracy: float) -> dict | None:
    """A curve's first evaluation at or above `accuracy` (None: never)."""
    return next((p for p in c["points"] if p["test_exact_accuracy"] >= accuracy), None)


def compare(curves: list[dict]) -> dict:
    """Each later preset against the first (the reference), in the terms of seed 001's claim
    ("the same accuracy with far fewer block calls"): final accuracies at the equal wall-clock
    budget; accuracies at an equal number of training block calls (the fewer of the two runs'
    totals); and the training block calls and seconds each took to first reach the
    reference's final accuracy, with their ratio."""
    reference, table = curves[0], {}
    target = reference["final"]["test_exact_accuracy"]
    for c in curves[1:]:
        calls = min(reference["final"]["block_calls"], c["final"]["block_calls"])
        ref_hit, hit = first_reaching(reference, target), first_reaching(c, target)
        table[c["preset"]] = {
            "against": reference["preset"],
            "equal_wall_clock": {"seconds": [reference["final"]["seconds"], c["final"]["seconds"]],
                                 "test_exact_accuracy": [target, c["final"]["test_exact_accuracy"]]},
            "equal_block_calls": {"block_calls": calls, "test_exact_accuracy": [accuracy_at(reference, "block_calls", calls),
                                                                                accuracy_at(c, "block_calls", calls)]},
            "to_reach_reference_final": {
                "test_exact_accuracy": target,
                "block_calls": [ref_hit["block_calls"], hit["block_calls"] if hit else None],
                "seconds": [ref_hit["seconds"], hit["seconds"] if hit else None],
                "block_call_ratio": round(ref_hit["block_calls"] / hit["block_calls"], 2) if hit and hit["block_calls"]
                else None}}
    return table


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
    add_run_arguments(p, Path("runs/learning"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device).split()[-1].lower() if device.type == "cuda" else "cpu"
    data = ensure_dataset(args.source, args.data or Path("data") / args.source)
    curves = [curve(preset, data, args.runs / f"{args.source}_{preset}_{int(time.time())}", args.minutes,
                    args.max_steps, args.eval_every, args.overrides, device) for preset in args.presets]
    record = {"source": args.source, "data": str(data), "device": device_name(device), "minutes": args.minutes,
              "max_steps": args.max_steps, "eval_every": args.eval_every, "torch": torch.__version__,
              "curves": curves, "comparison": compare(curves)}
    write_record(record, args.out, f"learning_{args.source}_{'+'.join(args.presets)}_{name}")


def add_run_arguments(p: argparse.ArgumentParser, runs: Path) -> None:
    """--data, --runs, --out and the trm-pretrain overrides, as every yardstick script takes them."""
    p.add_argument("--data", type=Path, help="dataset dir (default: data/<source>; built when missing)")
    p.add_argument("--runs", type=Path, default=runs, help="where the runs go")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    p.add_argument("overrides", nargs="*", help="trm-pretrain overrides for every run, e.g. seed=1")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def write_record(record: dict, out: Path, stem: str) -> None:
    """OUT/STEM.json and .png, and the curves' and comparison's lines on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2))
    curves = record["curves"]
    plot(curves, f"{record['source']}: test exact accuracy ({record['device']})", out / f"{stem}.png")
    for c in curves:
        f = c["final"]
        print(f"{c['preset']}: test exact {f['test_exact_accuracy']:.3f} after {f['step']} steps, {f['seconds']:.0f} s, "
              f"{f['block_calls']} block calls per example")
    for name, row in record["comparison"].items():
        reach = row["to_reach_reference_final"]
        print(f"{name} vs {row['against']}: equal wall-clock {row['equal_wall_clock']['test_exact_accuracy']}; "
              f"equal block calls ({row['equal_block_calls']['block_calls']}) "
              f"{row['equal_block_calls']['test_exact_accuracy']}; block calls to reach {reach['test_exact_accuracy']:.3f}: "
              f"{reach['block_calls']} (ratio {reach['block_call_ratio']})")
    print(f"wrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
