"""Where things are on Kaggle: found by looking, never by a fixed path.

Layouts seen so far (KAGGLE.md): ARC Prize 2025 mounts the competition at
`/kaggle/input/arc-prize-2025/` and datasets at `/kaggle/input/<slug>/`; competitions since
2026 use `/kaggle/input/competitions/<slug>/` and `/kaggle/input/datasets/<owner>/<slug>/`.
Whether Kaggle unpacks a dataset uploaded with `dir_mode="zip"` is not documented, so a
bundle is accepted as a folder or as a zip (unpacked into scratch).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

from trm_kaggle.errors import UserError

CHALLENGES_NAME = "arc-agi_test_challenges.json"
MODEL_MARKER = "meta.json"  # a model directory (checkpoint.META_FILE)
SEARCH_DEPTH = 4            # /kaggle/input/datasets/<owner>/<slug>/model/meta.json


def walk(root: Path, depth: int) -> list[Path]:
    """Every path under `root` down to `depth` levels, sorted (deterministic choices)."""
    found, level = [], [root]
    for _ in range(depth):
        level = sorted(child for d in level if d.is_dir() for child in d.iterdir())
        found += level
    return found


COMPETITION_2025 = re.compile(r"arc-prize-\d{4}")  # /kaggle/input/arc-prize-2025/


def competition_slug(path: Path, input_root: Path) -> str | None:
    """The competition whose own mount holds `path`: `competitions/<slug>/` (2026 layout) or
    `arc-prize-YYYY/` (2025 layout, where datasets sit beside it); None for anything else
    (a dataset, or a copy of the file nested deeper)."""
    parts = path.relative_to(input_root).parts
    if len(parts) == 3 and parts[0] == "competitions":
        return parts[1]
    if len(parts) == 2 and COMPETITION_2025.fullmatch(parts[0]):
        return parts[0]
    return None


def find_challenges(input_root: Path, competition: str | None = None) -> Path:
    """The hidden test set: `arc-agi_test_challenges.json` in the competition's own mount,
    never a copy in an attached dataset (the scoring rerun swaps only the competition's).
    Several competitions mounted: `competition` names one, else the newest (ARC Prize slugs
    sort by year). No competition mount: the one file found; several is an error naming them.
    The notebook's first cell applies the same rule with the standard library alone."""
    found = [p for p in walk(input_root, SEARCH_DEPTH) if p.name == CHALLENGES_NAME and p.is_file()]
    if not found:
        raise UserError(f"{input_root}: no {CHALLENGES_NAME} below it (add the competition as an input, "
                        "or pass --challenges)")
    mounts = {slug: p for p in found if (slug := competition_slug(p, input_root))}
    if competition:
        if competition not in mounts:
            raise UserError(f"{input_root}: competition {competition} is not mounted "
                            f"(found {', '.join(map(str, found))})")
        return mounts[competition]
    if mounts:
        return mounts[max(mounts)]
    if len(found) > 1:
        raise UserError(f"{input_root}: {len(found)} {CHALLENGES_NAME} files and none in a competition's mount: "
                        f"{', '.join(map(str, found))}; name one with --challenges")
    return found[0]


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_MARKER).is_file() and (path / "config.json").is_file()


def model_in(path: Path) -> Path | None:
    """The model directory of a bundle directory (`bundle/model`) or the directory itself."""
    for candidate in (path, path / "model"):
        if is_model_dir(candidate):
            return candidate
    return None


def unpack(archive: Path, scratch: Path) -> Path:
    """A zipped bundle unpacked into scratch (members must stay inside it)."""
    target = scratch / f"bundle-{archive.stem}"
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=scratch))
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not (staging / member).resolve().is_relative_to(staging.resolve()):
                        raise UserError(f"{archive}: member {member} would unpack outside the folder")
                zf.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise UserError(f"{archive}: not a readable zip: {exc}") from None
        staging.rename(target)
    return target


def model_in_zip(archive: Path, scratch: Path) -> Path | None:
    """The model directory inside a zipped bundle or model folder (unpacked into scratch);
    None for a zip that holds none, such as the wheels.zip beside model.zip that the kaggle
    client's zip dir mode leaves (unpacked only when it holds a model)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            if not any(Path(name).name == MODEL_MARKER for name in zf.namelist()):
                return None
    except zipfile.BadZipFile as exc:
        raise UserError(f"{archive}: not a readable zip: {exc}") from None
    path = unpack(archive, scratch)
    return model_in(path) or next((d for d in walk(path, 2) if is_model_dir(d)), None)


def resolve_model(path: Path, scratch: Path) -> Path:
    """--model as given: a model dir, a bundle dir holding `model/`, or a zip of either."""
    if path.is_file() and zipfile.is_zipfile(path):
        found = model_in_zip(path, scratch)
    else:
        found = model_in(path)
    if found is None:
        raise UserError(f"{path}: not a packaged model (expected model/meta.json and model/config.json; "
                        "build one with trm-package)")
    return found


def find_model(input_root: Path, scratch: Path) -> Path:
    """The one packaged model under the input root (folder or zip)."""
    candidates = [d for d in walk(input_root, SEARCH_DEPTH) if is_model_dir(d)]
    if not candidates:
        zips = [z for z in walk(input_root, SEARCH_DEPTH) if z.suffix == ".zip" and z.is_file() and zipfile.is_zipfile(z)]
        candidates = [found for z in zips if (found := model_in_zip(z, scratch)) is not None]
    if not candidates:
        raise UserError(f"{input_root}: no packaged model below it (add the trm-package dataset as an input, "
                        "or pass --model)")
    if len(candidates) > 1:
        raise UserError(f"{input_root}: {len(candidates)} packaged models: "
                        + ", ".join(map(str, candidates)) + "; pass --model")
    return candidates[0]


def package_finetune(model_dir: Path) -> dict:
    """The fine-tune settings the package recommends (config.yaml's `finetune:`), if any."""
    import yaml

    path = model_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finetune = raw.get("finetune") if isinstance(raw, dict) else None
    if finetune is not None and not isinstance(finetune, dict):
        raise UserError(f"{path}: finetune: expected a mapping of settings")
    return finetune or {}


def find_wheels(model_dir: Path) -> Path | None:
    """The bundle's wheels folder beside its model folder, if any."""
    wheels = model_dir.parent / "wheels"
    return wheels if wheels.is_dir() else None


def default_scratch() -> Path:
    """/kaggle/temp on Kaggle (not kept, not counted in /kaggle/working's 20 GB), else tmp."""
    kaggle_temp = Path("/kaggle/temp")
    base = kaggle_temp if kaggle_temp.is_dir() and os.access(kaggle_temp, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="trm-submit-", dir=base))


def python_mismatch(wheels: Path | None) -> str | None:
    """Why the bundle's wheels were built for another CPython than this one, or None. Only a
    warning: trm_kaggle is already importable here (the image had every compiled
    dependency), so refusing would turn a working run into fallback answers."""
    if wheels is None:
        return None
    tags = {w.name.split("-")[-3] for w in wheels.glob("*.whl") if w.name.split("-")[-3].startswith("cp3")}
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    if tags and here not in tags:
        return (f"{wheels}: wheels built for {', '.join(sorted(tags))}, this is Python {sys.version_info.major}."
                f"{sys.version_info.minor}: trm_kaggle imports, so the run goes on; rebuild with trm-package "
                "--python matching the image, or pin the notebook's image (README)")
    return None


def check_torch(minimum: str = "2.4") -> None:
    import torch

    have = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    need = tuple(int(x) for x in minimum.split("."))
    if have < need:
        raise UserError(f"torch {torch.__version__} is older than {minimum}, which trm-kaggle needs")
