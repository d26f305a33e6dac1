"""The wheel set of a Kaggle bundle: every runtime dependency but torch, for one target
Python on manylinux x86_64, plus trm-kaggle's own wheel; its lock; and the offline install check.

`pip download --platform` only takes binary wheels and matches each platform tag it is
given literally, so every manylinux tag is named. Source-only packages
(packaging/build-from-source.txt) are built into wheels first. Downloads are cached under
wheels/cache/py3XX, so a second bundle is fast and works offline.

wheels/lock-py3XX.txt pins the bundled wheels (`name==version`, a pip constraints file) with
each file's SHA-256 in a comment, so two bundles from the same checkout hold the same bytes.
When every locked wheel is in the cache, the download runs with --no-index (offline);
`update_lock=True` re-resolves from the index and rewrites the lock.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from trm_kaggle.checkpoint import sha256_file
from trm_kaggle.errors import UserError

PROJECT = Path(__file__).resolve().parent.parent
SPEC_DIR = PROJECT / "packaging"
LOCK_DIR = PROJECT / "wheels"
CACHE = LOCK_DIR / "cache"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")
EXCLUDED = ("torch", "triton", "nvidia")  # the Kaggle image has them
DEFAULT_VERIFY_TORCH = "torch==2.13.0"
PYTHON = re.compile(r"3\.(1[1-9]|[2-9][0-9])")  # trm-kaggle requires Python >= 3.11
# Which Kaggle GPU images run which Python (KAGGLE.md): the bundle's wheels must match the
# image the notebook runs on, so the notebook keeps the image it was created on.
KAGGLE_IMAGES = {"3.11": "the ARC Prize 2025 image (Python 3.11, torch 2.6)",
                 "3.12": "the images since December 2025 (Python 3.12, torch 2.8 and later)"}


def kaggle_image_note(python: str) -> str:
    """Which Kaggle image a bundle built for `python` targets, and how to stay on it."""
    image = KAGGLE_IMAGES.get(python, f"a Kaggle image with Python {python}")
    return (f"wheels for Python {python}: {image}; create the notebook on that image and keep it pinned "
            "(kernel-metadata.json: docker_image_pinning_type original)")


def pip(*args: str, python: str = sys.executable, bar: tqdm | None = None) -> str:
    """Run pip and return its output; a failure is a UserError carrying pip's own last error
    line. With `bar`, each package pip starts on ticks it (pip's own output is captured)."""
    process = subprocess.Popen([python, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if bar is not None and line.startswith(("Collecting ", "Processing ")):  # one per package
            what = line.split()[1]
            bar.set_postfix_str((Path(what).name.split("-")[0] if what.endswith(".whl") else what)[:40], refresh=False)
            bar.update()
    if process.wait() != 0:
        errors = [l.strip() for l in lines if l.strip() and "WARNING" not in l]
        raise UserError(f"pip {args[0]} failed: {errors[-1] if errors else 'exit ' + str(process.returncode)}")
    return "".join(lines)


def spec_lines(name: str) -> list[str]:
    path = SPEC_DIR / name
    if not path.is_file():
        raise UserError(f"{path}: no such file (trm-package runs from a trm-kaggle source checkout)")
    return [l.split("#")[0].strip() for l in path.read_text().splitlines() if l.split("#")[0].strip()]


def check_python(python: str) -> str:
    if not PYTHON.fullmatch(python):
        raise UserError(f"--python {python!r}: expected the Kaggle image's CPython version, 3.11 or later (e.g. 3.11, 3.12)")
    return python


def target_args(python: str) -> list[str]:
    """pip download's target: CPython `python` (e.g. 3.11) on every manylinux x86_64 tag."""
    tag = "cp" + python.replace(".", "")
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", tag]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


# ---------------------------------------------------------------------------- the lock

def canonical(name: str) -> str:
    """PEP 503's normalised project name (a wheel file writes '-' as '_')."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(wheel: str) -> tuple[str, str]:
    name, version = wheel.split("-")[:2]
    return canonical(name), version


def lock_path(python: str) -> Path:
    return LOCK_DIR / f"lock-py{python.replace('.', '')}.txt"


@dataclass(frozen=True)
class Locked:
    requirement: str   # name==version
    wheel: str         # the file name
    sha256: str | None  # None for a wheel built here from an sdist (its bytes vary by build)


LOCK_LINE = re.compile(r"(?P<req>\S+==\S+)\s+#\s+(?P<wheel>\S+\.whl)(?:\s+sha256:(?P<sha>[0-9a-f]{64}))?.*")


def read_lock(path: Path) -> list[Locked]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            match = LOCK_LINE.fullmatch(line.strip())
            if match is None:
                raise UserError(f"{path}:{number}: expected `name==version  # file.whl sha256:HEX`; "
                                "rewrite it with --update-lock")
            entries.append(Locked(match["req"], match["wheel"], match["sha"]))
    return entries


def lock_entries(wheels: list[Path], built_here: set[str]) -> list[Locked]:
    entries = []
    for wheel in sorted(wheels, key=lambda w: wheel_name_version(w.name)):
        name, version = wheel_name_version(wheel.name)
        entries.append(Locked(f"{name}=={version}", wheel.name, None if name in built_here else sha256_file(wheel)))
    return entries


def lock_text(python: str, entries: list[Locked]) -> str:
    lines = [f"# The wheels trm-package bundles for CPython {python} on manylinux x86_64 (trm-kaggle's own",
             "# excluded). A pip constraints file; `trm-package --python "
             f"{python} --update-lock` rewrites it."]
    for e in entries:
        lines.append(f"{e.requirement}  # {e.wheel} " + (f"sha256:{e.sha256}" if e.sha256 else
                                                         "built here from the sdist (its hash varies by build)"))
    return "\n".join(lines) + "\n"


def check_against_lock(path: Path, locked: list[Locked], resolved: list[Locked]) -> None:
    """The download must be the lock, byte for byte (but for wheels built here)."""
    by_wheel = {e.wheel: e for e in locked}
    for entry in resolved:
        want = by_wheel.get(entry.wheel)
        if want is None:
            raise UserError(f"{path}: has no {entry.wheel} ({entry.requirement}); packaging/ changed since "
                            "the lock was written: rerun with --update-lock")
        if want.sha256 and want.sha256 != entry.sha256:
            raise UserError(f"{entry.wheel}: SHA-256 {entry.sha256[:12]}… differs from {path}'s "
                            f"{want.sha256[:12]}… (a corrupt cache? delete wheels/cache/ and rerun)")


# ---------------------------------------------------------------------------- collecting

@dataclass
class WheelSet:
    wheels: list[Path]    # everything in the bundle's wheels/, trm-kaggle's own included
    lock: Path
    new_lock: str | None  # the lock's new text when this run (re)wrote it, else None

    def save_lock(self) -> None:
        """Write the lock (atomically): called once the bundle is complete."""
        if self.new_lock is not None:
            partial = self.lock.with_name(self.lock.name + ".partial")
            partial.write_text(self.new_lock)
            partial.replace(self.lock)

    def describe(self) -> str:
        """Which lock pinned the wheels, and what this run does to it (before save_lock)."""
        where = self.lock.relative_to(PROJECT) if self.lock.is_relative_to(PROJECT) else self.lock
        if self.new_lock is None:
            return f"lock {where} followed"
        unchanged = self.lock.is_file() and self.lock.read_text() == self.new_lock
        return f"lock {where} " + ("re-resolved, unchanged" if unchanged else "written")


def built_here_names() -> set[str]:
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r)[0]) for r in spec_lines("build-from-source.txt")}


def collect_wheels(python: str, out: Path, update_lock: bool = False, progress: bool = True) -> WheelSet:
    """Every wheel of the bundle into `out` (flat), pinned by (or re-resolving) the lock."""
    cache = CACHE / f"py{check_python(python).replace('.', '')}"
    cache.mkdir(parents=True, exist_ok=True)
    lock = lock_path(python)
    locked = read_lock(lock) if lock.is_file() and not update_lock else None
    pins = ["-c", str(lock)] if locked is not None else []
    # Offline when the cache already holds every locked wheel: nothing to resolve from the index.
    index = ["--no-index"] if locked and all((cache / e.wheel).is_file() for e in locked) else []
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=4, desc="wheels", unit="stage", disable=None if progress else True) as stages:
        stages.set_postfix_str("building source-only wheels")
        for requirement in spec_lines("build-from-source.txt"):
            pip("wheel", "--no-deps", *index, *pins, "--find-links", str(cache), "-w", str(cache), requirement)
        stages.update()
        stages.set_postfix_str("downloading")
        download(python, cache, out, index + pins, lock if locked is not None else None, progress)
        stages.update()
        resolved = lock_entries(sorted(out.glob("*.whl")), built_here_names())
        if locked is not None:
            check_against_lock(lock, locked, resolved)
        stages.set_postfix_str("building trm-kaggle's wheel")
        build_own_wheel(out)
        stages.update()
        stages.set_postfix_str("checking")
        if any(not w.name.endswith(".whl") for w in out.iterdir()):
            raise UserError(f"{out}: holds something other than wheels")
        stages.update()
    new_lock = lock_text(python, resolved) if locked is None else None
    return WheelSet(sorted(out.glob("*.whl")), lock, new_lock)


def download(python: str, cache: Path, out: Path, pin_args: list[str], lock: Path | None, progress: bool) -> None:
    """pip download straight into `out`, so `out` holds exactly the resolved set (pip copies
    what the cache has and fetches the rest); new files are then added to the cache."""
    expected = len(read_lock(lock)) if lock else None
    with tqdm(total=expected, desc="download", unit="pkg", disable=None if progress else True, leave=False) as bar:
        try:
            pip("download", *target_args(python), *pin_args, "--find-links", str(cache), "-d", str(out),
                "-r", str(SPEC_DIR / "requirements.txt"), bar=bar)
        except UserError as exc:
            if lock is None:
                raise
            raise UserError(f"{exc} (versions pinned by {lock}; --update-lock re-resolves them)") from None
    for wheel in out.glob("*.whl"):
        if wheel.name.lower().startswith(EXCLUDED):
            raise UserError(f"packaging/requirements.txt pulls in {wheel.name}: the Kaggle image has it; "
                            "remove what requires it")
        if not (cache / wheel.name).is_file():
            shutil.copy2(wheel, cache / wheel.name)


OWN_SOURCES = ("pyproject.toml", "README.md", "trm_kaggle")  # what trm-kaggle's wheel is built from


def build_own_wheel(out: Path) -> Path:
    """trm-kaggle's wheel, built from a clean copy of its sources: setuptools builds through
    `build/lib`, so a build in the checkout would ship any module left there from before."""
    work = Path(tempfile.mkdtemp(prefix="trm-wheel-"))
    try:
        source = work / "src"
        source.mkdir()
        for name in OWN_SOURCES:
            if (PROJECT / name).is_dir():
                shutil.copytree(PROJECT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(PROJECT / name, source / name)
        pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "wheel"), str(source))
        (wheel,) = (work / "wheel").glob("*.whl")
        return Path(shutil.copy2(wheel, out / wheel.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- --verify

FORWARD_CHECK = (
    "import sys, torch, trm_kaggle; from trm_kaggle.checkpoint import load_checkpoint;"
    "c = load_checkpoint(sys.argv[1]);"
    "from trm_kaggle.model import TRM; m = TRM(c.config.model_copy(update={'forward_dtype': 'float32', "
    "'num_puzzle_identifiers': 2})).eval();"
    "state = dict(c.state_dict); state['puzzle_emb.weights'] = m.puzzle_emb.weights;"
    "m.load_state_dict(state); n = m.config.seq_len; b = {'inputs': torch.zeros(1, n, dtype=torch.int32),"
    "'labels': torch.zeros(1, n, dtype=torch.int32), 'puzzle_identifiers': torch.ones(1, dtype=torch.int32)};"
    "carry, out = m(m.initial_carry(b), b); s = tuple(out['logits'].shape);"
    "print(f'{trm_kaggle.__version__} installed offline on torch {torch.__version__}, one forward pass gave "
    "logits of shape {s} (batch, positions, vocabulary)')")


def verify_install(bundle: Path, python: str, torch_spec: str = DEFAULT_VERIFY_TORCH, progress: bool = True) -> str:
    """In a fresh venv of the target Python: torch as Kaggle has it (`torch_spec`: pip install
    arguments, e.g. a CPU wheel's path), then trm-kaggle from the bundle's wheels only
    (--no-index), then load bundle/model and run one forward pass. Returns what was checked;
    raises UserError with pip's or Python's own error line."""
    interpreter = shutil.which(f"python{python}")
    if interpreter is None:
        raise UserError(f"--verify: no python{python} on this machine to verify the bundle with")
    work = Path(tempfile.mkdtemp(prefix="trm-verify-"))
    try:
        with tqdm(total=4, desc="verify", unit="stage", disable=None if progress else True) as stages:
            stages.set_postfix_str(f"python{python} venv")
            subprocess.run([interpreter, "-m", "venv", str(work / "venv")], check=True, capture_output=True)
            python_bin = str(work / "venv" / "bin" / "python")
            stages.update()
            stages.set_postfix_str("installing torch")
            pip("install", "-q", *shlex.split(torch_spec), python=python_bin)
            stages.update()
            stages.set_postfix_str("installing the bundle offline")
            pip("install", "-q", "--no-index", "--find-links", str(bundle / "wheels"), "trm-kaggle", python=python_bin)
            stages.update()
            stages.set_postfix_str("one forward pass")
            done = subprocess.run([python_bin, "-c", FORWARD_CHECK, str(bundle / "model")], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise UserError(f"--verify: the installed bundle failed: {done.stderr.strip().splitlines()[-1]}")
            stages.update()
        return done.stdout.strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
