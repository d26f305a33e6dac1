"""What every console script shares: a bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable

from trm_kaggle.errors import UserError

EXIT_USAGE = 2


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a CLI body; a UserError (bad input) becomes `prog: error: message`, exit 2.
    Anything else is a bug in this package and keeps its traceback."""
    try:
        return body() or 0
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
