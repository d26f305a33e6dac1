"""trm-pretrain: train a TRM. A Hydra app: `trm-pretrain preset=NAME data_path=DIR run_dir=DIR
[key=value ...]`; the same command runs single-process or under torchrun."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trm_kaggle.cli.common import run_cli
from trm_kaggle.config import DATASET_FIELDS, PretrainConfig
from trm_kaggle.errors import UserError

PROG = "trm-pretrain"
EXIT_STOPPED_EARLY = 75  # EX_TEMPFAIL: checkpointed on SIGTERM before the end; run it again to resume
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def presets() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml"))


def usage() -> str:
    return (f"usage: {PROG} preset={{{','.join(presets())}}} data_path=DIR run_dir=DIR "
            "[max_steps=N] [resume=true] [init_from=CKPT] [key=value ...]\nconfig: " + str(CONF_DIR))


def help_text() -> str:
    """The usage line, then every key with its default and meaning (PretrainConfig's field
    docstrings), as `trm-pretrain --help` prints them."""
    rows = [usage(), "", "keys (key=value on the command line; a preset sets some of them first):"]
    for key, default, meaning in described_keys(PretrainConfig):
        rows.append(f"  {key}={'(required)' if default == '???' else default}")
        rows.append(f"      {meaning}")
    return "\n".join(rows)


def described_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, description) of every leaf of a config model."""
    found = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += described_keys(kind, f"{prefix}{name}.")
            continue
        default = "???" if info.is_required() else info.default
        found.append((prefix + name, "null" if default is None else default, info.description or ""))
    return found


def compose(overrides: list[str]) -> dict[str, Any]:
    """The resolved config as a plain dict; Hydra's errors become one-line UserErrors."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_defaults()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"config: {' '.join(str(exc).split())}") from None


def defaults_tree() -> dict[str, Any]:
    """PretrainConfig's defaults as a plain tree; "???" (Hydra's missing value) where the
    command line or a preset must give one."""
    tree: dict[str, Any] = {}
    for name, info in PretrainConfig.model_fields.items():
        default = "???" if info.is_required() else info.default
        tree[name] = default.model_dump() if isinstance(default, BaseModel) else default
    return tree


def register_defaults() -> None:
    """Hydra's base config `trm_defaults` (conf/config.yaml composes it first) from
    PretrainConfig, so that each default is written once, in config.py."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="trm_defaults", node=defaults_tree())


def validate(raw: dict[str, Any]) -> PretrainConfig:
    try:
        return PretrainConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = "unknown key (misspelt?)" if error["type"] == "extra_forbidden" else error["msg"]
        raise UserError(f"config: {where}: {message}") from None


def check_override_keys(overrides: list[str]) -> None:
    """One line for an override of a key that does not exist (Hydra's own message suggests
    `+key=`, which only moves the error), with the nearest key when one is close."""
    keys = set(flat_keys(defaults_tree())) | {"preset"}
    for override in overrides:
        if override.startswith("--"):  # --preset cpu_tiny: Hydra would answer with a lexer error
            flag = override[2:].split("=", 1)[0].replace("-", "_")
            raise UserError(f"{override}: {PROG} takes key=value overrides, not flags: write {flag}=VALUE "
                            f"(e.g. preset=cpu_tiny); {PROG} --help lists the keys")
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("arch.") and key[len("arch."):] in DATASET_FIELDS:
            raise UserError(f"config: {key}: set by the dataset (data_path's train/dataset.json and "
                            "identifiers.json), not by the config")
        if key not in keys and not key.startswith("hydra"):
            near = difflib.get_close_matches(key, sorted(keys), n=1)
            raise UserError(f"config: {key}: unknown key (misspelt?)" + (f"; did you mean {near[0]}?" if near else ""))
        if key == "preset" and override.split("=", 1)[-1] not in presets():
            raise UserError(f"config: {override}: no such preset (presets: {', '.join(presets())})")
        if "=" not in override:
            raise UserError(f"config: {override}: expected key=value (e.g. max_steps=100)")


def flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of a tree's leaves: arch.hidden_size, ..."""
    return [name for key, value in tree.items()
            for name in (flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key])]


def load_config(overrides: list[str]) -> PretrainConfig:
    check_override_keys(overrides)
    return validate(compose(overrides))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: warning: %(message)s")

    def body() -> int:
        from trm_kaggle.pretrain import pretrain

        path, stopped_early = pretrain(load_config(argv))
        if path is not None and os.environ.get("RANK", "0") == "0":
            print(f"{PROG}: last checkpoint {path}" + (" (stopped early by SIGTERM: resume=true continues)"
                                                       if stopped_early else ""))
        # Not 0: a Kubernetes Indexed Job must not count a node that stopped early as done.
        return EXIT_STOPPED_EARLY if stopped_early else 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
