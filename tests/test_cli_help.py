"""--help of every console script: a description for every option and its default shown, so
a new user needs no source to run a tool."""

from __future__ import annotations

import argparse
import importlib

import pytest

CLIS = ["build_data", "eval", "package", "score", "simulate", "submit", "teacher_cache", "checkpoints", "view"]


def parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


@pytest.mark.parametrize("name", CLIS)
def test_every_option_says_what_it_does_and_its_default(name):
    module = importlib.import_module(f"trm_kaggle.cli.{name}")
    for parser in parsers(module.parser()):
        shown = "".join(parser.format_help().split())  # argparse wraps lines, even inside words
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = (action.option_strings or [action.dest])[-1]
            assert action.help, f"{parser.prog} {flag}: no description"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in (action.help or "") or "".join(f"(default: {action.default})".split()) in shown, \
                    f"{parser.prog} {flag}: default {action.default} not shown"
