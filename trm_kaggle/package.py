"""trm-package: from a checkpoint to the model directory of a Kaggle dataset.

The export keeps what the offline notebook needs: the trunk in float32 (EMA weights when
the checkpoint has them) and, instead of the puzzle-embedding table, the statistics new
tasks start from. The paper checkpoint's 2.3 GiB are almost all table rows of training
variants that never appear on Kaggle; `keep_embeddings=True` keeps them (and the
identifiers) for continued pretraining or a fidelity check.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from trm_kaggle import __version__
from trm_kaggle.atomic import atomic_dir, check_replaceable
from trm_kaggle.augment import CANVAS, arc_shape, canvas_side
from trm_kaggle.checkpoint import (
    META_FILE, STATS_FILE, TABLE, averaged_state, embedding_stats, load_checkpoint, name_rows, save_state,
    sha256_file)
from trm_kaggle.errors import UserError

DEFAULT_RUNS_DIR = Path("runs")

# The fine-tuning recipe every package carries (config.yaml's `finetune:`), which trm-submit
# applies wherever its user set nothing (kaggle.options.with_package_defaults; the keys are its
# FINETUNE_KEYS). It is the ARC Prize 2025 TRM entry's post-training recipe (TRM_NOTES,
# "Post-training recipe"), written out here rather than read back from trm-submit's current
# defaults, so that a package states what it was packaged for whatever those defaults become.
# Units: max_steps and lr_warmup_steps in optimizer steps, batch_size global over all devices.
# The last key, `objective`, is the packaged model's own (a DIS model fine-tunes with DIS).
FINETUNE_RECIPE = {"mode": "emb_first_quarter", "num_aug": 512, "max_steps": 15_000, "batch_size": 384,
                   "lr": 2e-4, "puzzle_emb_lr": 2e-2, "weight_decay": 0.1, "puzzle_emb_weight_decay": 0.1,
                   "beta1": 0.9, "beta2": 0.95, "lr_warmup_steps": 200, "lr_min_ratio": 1.0, "ema_rate": 0.999,
                   "lora_rank": 16, "new_rows": "mean"}


def is_checkpoint(path: Path) -> bool:
    """Ours (a directory with meta.json) or the original's (a file beside all_config.yaml)."""
    if path.is_dir():
        return (path / META_FILE).is_file()
    return path.is_file() and (path.parent / "all_config.yaml").is_file()


def find_checkpoint(name: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """`name` as a path, else the one checkpoint called `name` under `runs_dir`."""
    path = Path(name)
    if path.exists():
        if not is_checkpoint(path):
            raise UserError(f"{path}: not a checkpoint (ours: a step_N/ directory with meta.json; "
                            "the original's: a step_N file with all_config.yaml beside it)")
        return path
    if not runs_dir.is_dir():
        raise UserError(f"{name}: no such file, and no runs directory {runs_dir} to look in")
    found = sorted(p for p in runs_dir.rglob(name) if is_checkpoint(p))
    if not found:
        raise UserError(f"{name}: no checkpoint of that name under {runs_dir}")
    if len(found) > 1:
        raise UserError(f"{name}: {len(found)} checkpoints of that name under {runs_dir}: "
                        + ", ".join(str(p) for p in found) + "; give its path")
    return found[0]


@dataclass
class ModelExport:
    path: Path
    source: Path
    ema: bool
    kept_rows: int
    size_bytes: int
    canvas: int = CANVAS  # the side of the canvas it encodes grids on: ARC's 30, or a smaller dataset's


def export_model(ckpt_path: Path, out: Path, keep_embeddings: bool = False,
                 identifiers: Path | None = None) -> ModelExport:
    """Write the Kaggle model directory (our checkpoint format, loadable by load_checkpoint).
    `identifiers` names the rows of a checkpoint saved without them; with `keep_embeddings` the
    rows must have names (a table nobody can match by name is refused: checkpoint.name_rows)."""
    ckpt = load_checkpoint(ckpt_path)
    if TABLE not in ckpt.state_dict:
        raise UserError(f"{ckpt_path}: already a slim export; package the checkpoint it came from")
    try:  # ARC's 30x30, or the smaller canvas of an ARC-format dataset (dataset/synthetic.py)
        canvas = canvas_side(ckpt.config.seq_len)
    except ValueError:
        canvas = CANVAS
    mismatch = arc_shape(ckpt.num_rows, canvas).mismatch(ckpt.config)
    if mismatch:  # the notebook answers ARC tasks: 900 tokens of 12 values
        mismatch = mismatch.replace("the dataset's", "ARC's")
        raise UserError(f"{ckpt_path}: {mismatch}: the Kaggle notebook runs ARC tasks, this model cannot answer them")
    if identifiers is not None:
        name_rows(ckpt, identifiers)
    if keep_embeddings and ckpt.has_unnamed_rows:
        raise UserError(f"{ckpt_path}: --keep-embeddings would keep {ckpt.num_rows} puzzle-embedding rows without "
                        "names (no identifiers.json beside it), which nothing could match by name later; pass "
                        "--identifiers FILE (the identifiers.json of the dataset it was trained on), or package "
                        "it slim")
    state, ema = averaged_state(ckpt)
    state = {k: v.float() for k, v in state.items()}
    table = state[TABLE]
    mean, std = embedding_stats(table)
    torch_files = {STATS_FILE: {"mean": mean, "std": std, "rows": len(table) - 1}}
    if not keep_embeddings:
        del state[TABLE]
    source_file = ckpt_path if ckpt_path.is_file() else ckpt_path / "model.pt"
    meta = {"source": str(ckpt_path.resolve()), "source_sha256": sha256_file(source_file),
            "source_step": ckpt.step, "ema": ema, "package_version": __version__,
            "date": datetime.date.today().isoformat()}
    # The model's objective is the one it fine-tunes with (a DIS model with DIS, seed 001).
    finetune = FINETUNE_RECIPE | {"objective": ckpt.config.objective}
    recipe = yaml.safe_dump({"model": ckpt.config.model_dump(), "finetune": finetune}, sort_keys=False)
    save_state(out, ckpt.config, state, ckpt.identifiers if keep_embeddings else None, ckpt.step,
               torch_files=torch_files, extra_files={"config.yaml": recipe.encode()}, meta=meta)
    size = sum(f.stat().st_size for f in out.iterdir())
    return ModelExport(out, ckpt_path, ema, len(table) if keep_embeddings else 0, size, canvas)


# ---------------------------------------------------------------------------- dataset metadata

# The kaggle client refuses a dataset slug or title outside 6..50 characters, but only at upload,
# after the whole build (kaggle_api_extended.dataset_create_new; public report Kaggle/kaggle-cli#321).
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,}/[a-z0-9][a-z0-9-]{4,48}[a-z0-9]")
TITLE_LENGTH = (6, 50)
CREDENTIAL_NAMES = {"kaggle.json", "access_token"}
MANIFEST = "MANIFEST.json"


def check_slug(slug: str) -> str:
    """`slug` if Kaggle will take it as a dataset id (OWNER/NAME, NAME 6-50 characters of a-z,
    0-9 and '-', not starting or ending with '-'); UserError otherwise, before any work."""
    if not SLUG.fullmatch(slug):
        raise UserError(f"--slug {slug!r}: expected OWNER/NAME: OWNER your Kaggle user name (3+ characters), NAME "
                        "6-50 characters of a-z, 0-9 and '-', not starting or ending with '-' (the kaggle client "
                        "refuses other dataset names, but only at upload)")
    return slug


def dataset_title(slug: str, step: int | None) -> str:
    """The dataset's title, `TRM NAME step N`, cut to 50 characters (Kaggle takes 6 to 50)."""
    suffix = f" step {step}" if step is not None else ""
    title = f"TRM {slug.split('/')[1]}"[:TITLE_LENGTH[1] - len(suffix)] + suffix  # a long name, not the step, is cut
    if not TITLE_LENGTH[0] <= len(title) <= TITLE_LENGTH[1]:
        raise UserError(f"dataset title {title!r}: Kaggle takes {TITLE_LENGTH[0]}-{TITLE_LENGTH[1]} characters")
    return title


def refuse_credentials(out: Path) -> None:
    """No Kaggle credential file may ever travel inside a bundle."""
    found = [p for p in out.rglob("*") if p.name in CREDENTIAL_NAMES]
    if found:
        raise UserError(f"{found[0]}: a Kaggle credential file inside the bundle; remove it, it would be published")


def write_manifest(out: Path) -> dict[str, dict]:
    """MANIFEST.json: SHA-256 and size of every file of the bundle (but itself)."""
    entries = {str(p.relative_to(out)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
               for p in sorted(out.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (out / MANIFEST).write_text(json.dumps(entries, indent=2) + "\n")
    return entries


WHEELS_LINE = """- `wheels/`: every Python package the offline notebook installs (`pip install --no-index
  --find-links wheels trm-kaggle`); torch comes with the Kaggle image.
"""


def write_dataset_files(out: Path, slug: str, export: ModelExport, step: int | None, with_wheels: bool = True) -> None:
    """dataset-metadata.json (kaggle CLI / KaggleApi) and the dataset page's README.md,
    which lists what the bundle holds (no `wheels/` line for a --no-wheels bundle)."""
    metadata = {"title": dataset_title(check_slug(slug), step), "id": slug,
                "licenses": [{"name": "apache-2.0"}]}
    (out / "dataset-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    slim = "slim: the trunk and the puzzle-embedding statistics" if not export.kept_rows else \
        f"with the full puzzle-embedding table ({export.kept_rows} rows) and identifiers.json"
    (out / "README.md").write_text(f"""# {metadata['title']}

A Tiny Recursive Model for the ARC Prize, packaged by trm-kaggle {__version__} on
{datetime.date.today().isoformat()} from `{export.source.name}`{' (EMA weights)' if export.ema else ''}.

- `model/`: the model ({slim}); load it with `trm_kaggle.checkpoint.load_checkpoint`.
{WHEELS_LINE if with_wheels else ""}- `MANIFEST.json`: SHA-256 and size of every file.

The notebook fine-tunes `model/` on the hidden tasks' demonstration pairs (new tasks' puzzle
embeddings start from the statistics stored with it), then votes over augmentations.
""")


# ---------------------------------------------------------------------------- the bundle

@dataclass
class Bundle:
    out: Path
    export: ModelExport
    wheels: list[Path]
    lock: str | None  # which lock pinned the wheels, and whether this run wrote it
    verified: str | None

    def summary(self) -> str:
        files = [p for p in self.out.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        wheels = sum(w.stat().st_size for w in self.wheels)
        return (f"{self.out}: {len(files)} files, {size / 1e6:.1f} MB (model {self.export.size_bytes / 1e6:.1f} MB"
                f"{', EMA' if self.export.ema else ''}; {len(self.wheels)} wheels {wheels / 1e6:.1f} MB"
                + (f", {self.lock}" if self.lock else "") + ")"
                + (f"; verified: trm-kaggle {self.verified}" if self.verified else "")
                + ("; no wheels (--no-wheels): the notebook needs trm-kaggle installed some other way"
                   if not self.wheels else "")
                + (f"; canvas {self.export.canvas}x{self.export.canvas}: it answers only tasks whose grids fit it, "
                   "the others get the fallback"
                   if self.export.canvas < CANVAS else ""))


def build_bundle(ckpt: Path, out: Path, slug: str, python: str = "3.11", keep_embeddings: bool = False,
                 with_wheels: bool = True, verify: bool = False, force: bool = False, update_lock: bool = False,
                 verify_torch: str | None = None, progress: bool = True, identifiers: Path | None = None) -> Bundle:
    """The whole Kaggle dataset directory, built beside `out` and renamed into place; the
    wheel lock is (re)written only once the bundle is complete."""
    from trm_kaggle.wheels import DEFAULT_VERIFY_TORCH, check_python, collect_wheels, verify_install

    check_slug(slug)
    check_python(python)
    if out.exists() and not force:
        raise UserError(f"{out}: already exists (use --force to replace it)")
    if out.exists():
        check_replaceable(out, lambda d: (d / MANIFEST).is_file(), f"trm-package bundle ({MANIFEST})", [ckpt])
    with atomic_dir(out) as staging:
        export = export_model(ckpt, staging / "model", keep_embeddings, identifiers)
        wheels = collect_wheels(python, staging / "wheels", update_lock, progress) if with_wheels else None
        write_dataset_files(staging, slug, export, load_checkpoint(staging / "model").step, with_wheels)
        refuse_credentials(staging)
        write_manifest(staging)
        verified = (verify_install(staging, python, verify_torch or DEFAULT_VERIFY_TORCH, progress)
                    if verify and wheels else None)
    if wheels is None:
        return Bundle(out, export, [], None, verified)
    lock = wheels.describe()
    wheels.save_lock()
    return Bundle(out, export, [out / "wheels" / w.name for w in wheels.wheels], lock, verified)


# ---------------------------------------------------------------------------- --upload

UPLOAD_EXTRA = "pip install 'trm-kaggle[upload]'"


def check_upload_possible() -> None:
    """Before a long build: is the kaggle package (and `six`, which kaggle 2.x imports without
    declaring it) installed? Only a spec lookup: importing kaggle would authenticate."""
    from importlib.util import find_spec

    missing = [name for name in ("kaggle", "six") if find_spec(name) is None]
    if missing:
        raise UserError(f"--upload needs the {' and '.join(missing)} package(s): {UPLOAD_EXTRA}")


def kaggle_api():
    """A KaggleApi, imported only now: importing the kaggle package authenticates (and in 1.x
    exits the process when there are no credentials)."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi()


def dataset_exists(api, slug: str) -> bool:
    """Whether `slug` exists, as kaggle's own dataset_create_new decides it (an HTTP error
    status means no), except that bad credentials (401) and network failures propagate."""
    try:
        api.dataset_status(slug)
    except OSError as exc:  # requests' HTTPError and ConnectionError are OSErrors
        response = getattr(exc, "response", None)
        if response is not None and getattr(response, "status_code", None) != 401:
            return False
        raise
    return True


def send_bundle(api, out: Path, slug: str, notes: str) -> tuple[bool, object]:
    """(whether the dataset existed, kaggle's response); folders go up zipped (the default
    dir_mode silently skips them)."""
    if dataset_exists(api, slug):
        return True, api.dataset_create_version(folder=str(out), version_notes=notes, dir_mode="zip")
    return False, api.dataset_create_new(folder=str(out), public=False, dir_mode="zip")


def redact(text: str, api) -> str:
    """`text` without any credential value this process knows (an error may quote one)."""
    config = getattr(api, "config_values", None) or {}
    secrets = [os.environ.get(k) for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")] + \
        [config.get(k) for k in ("key", "token")]
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def upload_bundle(out: Path, notes: str, api_factory=None) -> str:
    """Create the Kaggle dataset of `out` (its dataset-metadata.json id) or a new version of
    it. Any failure leaves `out` as it is and says how to upload it by hand. Returns what was
    done. `api_factory` replaces KaggleApi (tests)."""
    refuse_credentials(out)  # again: the directory may have changed since the build
    slug = json.loads((out / "dataset-metadata.json").read_text())["id"]
    where = shlex.quote(str(out))
    later = (f"the bundle at {out} is complete: upload it later with `kaggle datasets version -p {where} "
             f"-m {shlex.quote(notes)} --dir-mode zip` (`kaggle datasets create -p {where} --dir-mode zip` if new)")
    api = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # kaggle prints its login help there
            api = (api_factory or kaggle_api)()
            api.authenticate()
        existed, response = send_bundle(api, out, slug, notes)
    except ImportError as exc:
        raise UserError(f"--upload needs the kaggle package ({exc.name or exc} is missing): {UPLOAD_EXTRA}; "
                        f"{later}") from None
    except SystemExit:  # KaggleApi.authenticate() exits when it finds no credentials
        raise UserError("--upload: no Kaggle credentials (KAGGLE_API_TOKEN, ~/.kaggle/access_token, "
                        f"KAGGLE_USERNAME + KAGGLE_KEY or ~/.kaggle/kaggle.json); {later}") from None
    except (OSError, ValueError) as exc:  # network and HTTP failures; kaggle's own validation
        reason = redact(f"{type(exc).__name__}: {exc}", api)
        raise UserError(f"--upload: {reason[:300] + '…' if len(reason) > 300 else reason}; {later}") from None
    if getattr(response, "error", None):
        raise UserError(f"--upload: Kaggle refused it: {redact(str(response.error), api)}; {later}")
    url = getattr(response, "url", None) or f"https://www.kaggle.com/datasets/{slug}"
    return f"{'new version of' if existed else 'created'} {url}"
