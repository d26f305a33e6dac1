"""What every console script shares: a bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

from trm_kaggle.errors import UserError

EXIT_USAGE = 2


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated option value (--tasks ID,..., --subsets A,B), stripped,
    empty ones dropped, in order and with any repeats (a caller may refuse those)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a CLI body; a UserError (bad input) becomes `prog: error: message`, exit 2.
    Anything else is a bug in this package and keeps its traceback."""
    try:
        return body() or 0
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # every writer here stages and renames, so what was being written is gone, not half there
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: no space left on the device{where}: nothing was left half-written; free some "
              "space or write elsewhere", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help as every console script shows it: the module docstring as written, and each
    option's default after its description unless the description already names it (or there
    is none to show: no value, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"
