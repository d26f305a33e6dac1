"""trm-package: a checkpoint -> a Kaggle dataset directory (slim model + offline wheels)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trm_kaggle.cli.common import run_cli

PROG = "trm-package"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--ckpt", required=True, help="a checkpoint path, or a name like step_72385 looked up in --runs-dir")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--python", default="3.11", help="the Kaggle image's Python (3.11: ARC Prize 2025; 3.12: newer)")
    p.add_argument("--slug", default="you/trm-arc", help="the Kaggle dataset id, OWNER/NAME")
    p.add_argument("--keep-embeddings", action="store_true", help="keep the full puzzle-embedding table")
    p.add_argument("--no-wheels", action="store_true", help="model and metadata only")
    p.add_argument("--verify", action="store_true", help="install the bundle offline in a fresh venv and run it")
    p.add_argument("--force", action="store_true", help="replace --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> None:
        from trm_kaggle.package import build_bundle, find_checkpoint

        ckpt = find_checkpoint(args.ckpt, args.runs_dir)
        print(f"{PROG}: checkpoint {ckpt}", file=sys.stderr)
        bundle = build_bundle(ckpt, args.out, args.slug, args.python, args.keep_embeddings,
                              with_wheels=not args.no_wheels, verify=args.verify, force=args.force)
        print(bundle.summary())

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
