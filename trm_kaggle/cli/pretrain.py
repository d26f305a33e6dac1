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
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
USAGE = (f"usage: {PROG} preset={{arc2_paper,arc2_posttrain,cpu_tiny,nqueens_trm,sudoku_trm,synthetic_cpu}} data_path=DIR run_dir=DIR "
         "[max_steps=N] [resume=true] [init_from=CKPT] [key=value ...]\nconfig: " + str(CONF_DIR))


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
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("arch.") and key[len("arch."):] in DATASET_FIELDS:
            raise UserError(f"config: {key}: set by the dataset (data_path's train/dataset.json and "
                            "identifiers.json), not by the config")
        if key not in keys and not key.startswith("hydra"):
            near = difflib.get_close_matches(key, sorted(keys), n=1)
            raise UserError(f"config: {key}: unknown key (misspelt?)" + (f"; did you mean {near[0]}?" if near else ""))
        presets = sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml"))
        if key == "preset" and override.split("=", 1)[-1] not in presets:
            raise UserError(f"config: {override}: no such preset (presets: {', '.join(presets)})")


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
        print(USAGE)
        return 0

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: warning: %(message)s")

    def body() -> None:
        from trm_kaggle.pretrain import run_pretraining

        path = run_pretraining(load_config(argv))
        if path is not None and os.environ.get("RANK", "0") == "0":
            print(f"{PROG}: last checkpoint {path}")

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
