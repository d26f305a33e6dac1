"""trm-checkpoints: a run directory's checkpoints for the jobs beside a trainer (a sync
sidecar, a prune CronJob), with the same retention rules as trm-pretrain's keep_last.

    trm-checkpoints latest RUN_DIR                         # the newest complete step_N/
    trm-checkpoints prune RUN_DIR --keep-last 3 [--dry-run]
    trm-checkpoints hold RUN_DIR/step_N --who sync -- rsync -a RUN_DIR/step_N/ /backup/step_N/

Retention (trm_kaggle/run_dir.py): the newest complete checkpoint, by step, is never
deleted; a checkpoint being written is a hidden `.step_N.partial-*` that is never listed;
`hold` keeps every pruner off a checkpoint while its command runs (exit code: the command's).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

from trm_kaggle.cli.common import HelpFormatter, run_cli
from trm_kaggle.errors import UserError

PROG = "trm-checkpoints"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    latest = sub.add_parser("latest", formatter_class=HelpFormatter, help="print the newest complete checkpoint's path")
    latest.add_argument("run_dir", type=Path, help="a trm-pretrain run_dir")
    prune = sub.add_parser("prune", formatter_class=HelpFormatter, help="delete all but the newest K complete checkpoints, never a held one")
    prune.add_argument("run_dir", type=Path, help="a trm-pretrain run_dir")
    prune.add_argument("--keep-last", type=int, required=True, metavar="K", help="checkpoints kept (>= 1)")
    prune.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    prune.add_argument("--missing-ok", action="store_true",
                       help="a RUN_DIR that does not exist yet is nothing to prune, not an error (a CronJob)")
    hold = sub.add_parser("hold", formatter_class=HelpFormatter, help="run a command (after --) while no pruner may delete the checkpoint",
                          usage=f"{PROG} hold CHECKPOINT [--who NAME] -- CMD [ARG ...]")
    hold.add_argument("checkpoint", type=Path, help="RUN_DIR/step_N, complete")
    hold.add_argument("--who", default="copy", help="a name for the hold file (default copy)")
    return p


WHO = re.compile(r"[A-Za-z0-9_.-]+")


def prune(args: argparse.Namespace) -> int:
    from trm_kaggle import run_dir

    if not args.run_dir.is_dir():
        if args.missing_ok:
            print(f"{args.run_dir}: no such run directory yet: nothing to prune")
            return 0
        raise UserError(f"{args.run_dir}: no such run directory (--missing-ok if it is not made yet)")
    gone = run_dir.prune(args.run_dir, args.keep_last, dry_run=args.dry_run)
    kept = [path.name + (" (held)" if run_dir.holders(path) else "")
            for _, path in run_dir.checkpoints(args.run_dir) if path not in gone]
    verb = "would remove" if args.dry_run else "removed"
    print(f"{args.run_dir}: {verb} {len(gone)} ({', '.join(p.name for p in gone) or 'none'}); "
          f"kept {', '.join(kept) or 'none'}")
    return 0


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run `cmd`; SIGTERM and SIGINT (a pod being stopped) go on to it, and this returns once
    it ended, so the hold is released instead of pinning the checkpoint for hours."""
    try:
        child = subprocess.Popen(cmd)
    except OSError as exc:
        raise UserError(f"hold: cannot run {cmd[0]}: {exc.strerror}") from None
    forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_args(argv[:cut])
    args.cmd = argv[cut + 1:]

    def body() -> int:
        from trm_kaggle import run_dir

        if args.command == "latest":
            found = run_dir.latest_checkpoint(args.run_dir)
            if found is None:
                raise UserError(f"{args.run_dir}: no complete checkpoint (step_N/ with meta.json)")
            print(found)
            return 0
        if args.command == "prune":
            return prune(args)
        if not args.cmd:
            raise UserError("hold: give the command to run after --")
        if not WHO.fullmatch(args.who):
            raise UserError(f"--who {args.who!r}: letters, digits, '.', '_' and '-' only (it names a file)")
        with run_dir.hold(args.checkpoint, args.who):
            return run_forwarding_signals(args.cmd)

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
