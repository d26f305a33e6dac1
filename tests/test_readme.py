"""The README's commands as a new user types them: every one names a real program and options
it accepts, and the short ones run as written from a fresh checkout (after what `make demo`
leaves, where the README says so)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from trm_kaggle import demo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_MODULES = {  # console script -> module (pyproject.toml [project.scripts])
    "trm-build-data": "build_data", "trm-score": "score", "trm-eval": "eval", "trm-pretrain": "pretrain",
    "trm-package": "package", "trm-submit": "submit", "trm-simulate": "simulate",
    "trm-teacher-cache": "teacher_cache", "trm-checkpoints": "checkpoints", "trm-view": "view"}
PLACEHOLDERS = {"...", "…"}

# Short enough to run here, in README order; each must still be in the README as written.
RUN_AS_WRITTEN = [
    "trm-build-data --source synthetic:recolour,shift --holdout 16 --num-aug 8 --out data/synthetic",
    "trm-build-data --source nqueens --out data/nqueens",
    "trm-pretrain preset=cpu_tiny data_path=runs/demo/data run_dir=runs/tiny max_steps=8",
    "trm-simulate --profile kaggle-4xL4 --challenges runs/demo/evaluation/arc-agi_evaluation_challenges.json "
    "--steps 15000 --batch-size 384 --num-aug 512 --json",
]


def readme_commands(text: str) -> list[tuple[int, list[str], bool]]:
    """(line, argv, is_fragment) of every command in the README's bash blocks: continuation
    lines joined, comments dropped, `torchrun … $(which X) ARGS` as X ARGS, optional `[--a B]`
    groups kept with the first of `x|y` alternatives; a fragment holds a placeholder (`...`, `N`,
    `FILE`, `ID,...`)."""
    commands, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if pending.strip():
                commands.append((start, *normalised(shlex.split(pending, comments=True))))
            pending = ""
    return commands


def normalised(tokens: list[str]) -> tuple[list[str], bool]:
    if tokens and tokens[0] == "torchrun":
        which = next(i for i, t in enumerate(tokens) if t == "$(which")
        tokens = [tokens[which + 1].rstrip(")"), *tokens[which + 2:]]
    fragment = any(t in PLACEHOLDERS or re.fullmatch(r"[A-Z][A-Z_]*(,\.\.\.)?\]?", t) for t in tokens)
    argv = [t.strip("[]").split("|")[0] if t.startswith("[") or t.endswith("]") else t
            for t in tokens if t not in PLACEHOLDERS]
    return argv, fragment


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_and_the_extraction_reads_them_whole():
    assert len(COMMANDS) > 30
    argvs = [" ".join(argv) for _, argv, _ in COMMANDS]
    assert "trm-pretrain preset=arc2_paper data_path=data/arc2-aug1000 run_dir=runs/arc2 resume=true" in argvs
    assert any(a.startswith("trm-teacher-cache --teacher") and "--logits none" in a for a in argvs)


def accepted(argv: list[str], fragment: bool) -> str | None:
    """Why `argv` is not a command its program accepts (None when it is)."""
    program, args = argv[0], argv[1:]
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        return None if all(a in targets for a in args) else f"make: no target among {args}"
    if program == "python" and args[:1] == ["-m"]:
        return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
    if program not in CLI_MODULES:
        return f"{program}: not one of this project's programs"
    module = importlib.import_module(f"trm_kaggle.cli.{CLI_MODULES[program]}")
    if program == "trm-pretrain":
        try:
            (module.check_override_keys if fragment else module.load_config)(args)
        except Exception as exc:  # noqa: BLE001 - the message is the finding
            return f"{type(exc).__name__}: {exc}"
        return None
    parser = module.parser()
    if fragment:  # no complete command: every option it shows must exist
        known = set(subcommand_parser(parser, args)._option_string_actions)
        unknown = [a for a in args if a.startswith("--") and a.split("=")[0] not in known]
        return f"unknown options {unknown}" if unknown else None
    try:
        parser.parse_args(args)
    except SystemExit:
        return "argparse refused it"
    return None


def subcommand_parser(parser, args: list[str]):
    """The parser of `args`' subcommand (trm-view tasks), else `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and args and args[0] in action.choices:
            return action.choices[args[0]]
    return parser


def test_every_readme_command_names_a_program_and_options_it_accepts(capsys):
    problems = [f"README.md:{line}: {' '.join(argv)}: {why}" for line, argv, fragment in COMMANDS
                if (why := accepted(argv, fragment))]
    assert not problems, "\n".join(problems) + "\n" + capsys.readouterr().err


def test_a_misspelt_option_is_caught_by_the_check():
    """The negative control: the check refuses what a user's typo would."""
    assert accepted(["trm-simulate", "--stpes", "15000"], False) == "argparse refused it"
    assert "did you mean max_steps" in accepted(["trm-pretrain", "max_step=8"], True)
    assert accepted(["trm-eval", "--ckpt", "x", "--nope"], True) == "unknown options ['--nope']"
    assert accepted(["make", "dmeo"], False).startswith("make: no target")


def after_make_demo(cwd: Path) -> None:
    """What `make demo` leaves that the README's "after make demo" commands read: its dataset
    and the evaluation challenges file, made by the demo's own functions."""
    out = cwd / demo.parser().parse_args([]).out
    demo.write_evaluation(out)
    defaults = demo.parser().parse_args([])
    subprocess.run(demo.dataset_argv(out, defaults.hidden_tasks, defaults.num_aug) + ["--quiet"], cwd=cwd,
                   check=True, capture_output=True)


def test_the_short_readme_commands_run_as_written(tmp_path):
    written = [" ".join(argv) for _, argv, _ in COMMANDS]
    missing = [command for command in RUN_AS_WRITTEN if command not in written]
    assert not missing, f"no longer in the README as written: {missing}"
    after_make_demo(tmp_path)
    scripts = Path(sys.executable).parent
    for command in RUN_AS_WRITTEN:
        argv = shlex.split(command)
        done = subprocess.run([str(scripts / argv[0]), *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs" / "tiny" / "step_8").is_dir()
    assert (tmp_path / "data" / "nqueens" / "identifiers.json").is_file()


@pytest.mark.parametrize("command", [line for line in demo.NEXT_STEPS.splitlines() if "trm-" in line])
def test_the_demos_next_steps_name_commands_that_parse(command):
    for fragment in re.findall(r"(trm-[a-z-]+(?: --?[\w-]+(?: [\w./-]+)?)*)", command):
        argv = shlex.split(fragment)
        assert accepted(argv, fragment=True) is None, fragment
