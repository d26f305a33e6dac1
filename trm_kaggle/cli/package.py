"""trm-package: a checkpoint -> a Kaggle dataset directory (slim model + offline wheels)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trm_kaggle.cli.common import HelpFormatter, run_cli
from trm_kaggle.errors import UserError

PROG = "trm-package"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint path, or a name like step_72385 looked up in --runs-dir")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where a --ckpt given by name is looked up")
    p.add_argument("--out", required=True, type=Path, help="the bundle directory to write (must not exist unless --force)")
    p.add_argument("--python", default="3.11", help="the Kaggle image's Python (3.11: ARC Prize 2025; 3.12: newer)")
    p.add_argument("--slug", default="you/trm-arc", help="the Kaggle dataset id, OWNER/NAME")
    p.add_argument("--keep-embeddings", action="store_true", help="keep the full puzzle-embedding table")
    p.add_argument("--identifiers", type=Path, metavar="FILE",
                   help="names of the embedding rows (the identifiers.json of the training dataset), for a "
                        "checkpoint saved without them; needed with --keep-embeddings")
    p.add_argument("--no-wheels", action="store_true", help="model and metadata only")
    p.add_argument("--update-lock", action="store_true",
                   help="re-resolve the wheels from the index and rewrite wheels/lock-py3XX.txt")
    p.add_argument("--verify", action="store_true", help="install the bundle offline in a fresh venv and run it")
    p.add_argument("--verify-torch", default=os.environ.get("TRM_VERIFY_TORCH", "torch==2.13.0"),
                   help="pip install arguments for --verify's torch, e.g. a CPU wheel's path "
                        "(default: $TRM_VERIFY_TORCH, else torch==2.13.0)")
    p.add_argument("--upload", action="store_true", help="create the Kaggle dataset, or a new version of it")
    p.add_argument("-m", "--message", help="--upload's version notes")
    p.add_argument("--force", action="store_true", help="replace --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before minutes of building."""
    from trm_kaggle.package import check_slug, check_upload_possible

    check_slug(args.slug)
    if args.identifiers and not args.keep_embeddings:
        raise UserError("--identifiers names the rows --keep-embeddings keeps; a slim export keeps none")
    if args.upload and not args.message:
        raise UserError("--upload needs -m NOTES (the version notes)")
    if args.message and not args.upload:
        raise UserError("-m is --upload's version notes; add --upload")
    if args.no_wheels and (args.update_lock or args.verify):
        raise UserError(f"--no-wheels builds no wheels: drop {'--update-lock' if args.update_lock else '--verify'}")
    if args.upload:
        check_upload_possible()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> None:
        from trm_kaggle.package import build_bundle, find_checkpoint, upload_bundle

        check_args(args)
        ckpt = find_checkpoint(args.ckpt, args.runs_dir)
        print(f"{PROG}: checkpoint {ckpt}", file=sys.stderr)
        bundle = build_bundle(ckpt, args.out, args.slug, args.python, args.keep_embeddings,
                              with_wheels=not args.no_wheels, verify=args.verify, force=args.force,
                              update_lock=args.update_lock, verify_torch=args.verify_torch,
                              progress=not args.quiet, identifiers=args.identifiers)
        print(bundle.summary())
        if not args.no_wheels:
            from trm_kaggle.wheels import kaggle_image_note

            print(f"{PROG}: {kaggle_image_note(args.python)}")
        if args.upload:
            print(f"{PROG}: uploaded: {upload_bundle(args.out, args.message)}")

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
