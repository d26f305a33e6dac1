"""The wheel set of a Kaggle bundle: every runtime dependency but torch, for one target
Python on manylinux x86_64, plus trm-kaggle's own wheel; and the offline install check.

`pip download --platform` only takes binary wheels and matches each platform tag it is
given literally, so every manylinux tag is named. Source-only packages
(packaging/build-from-source.txt) are built into wheels first. Downloads are cached under
wheels/cache/py3XX, so a second bundle is fast and works offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from trm_kaggle.errors import UserError

PROJECT = Path(__file__).resolve().parent.parent
SPEC_DIR = PROJECT / "packaging"
CACHE = PROJECT / "wheels" / "cache"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")
EXCLUDED = ("torch", "triton", "nvidia")  # the Kaggle image has them


def pip(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run pip; a failure is a UserError carrying pip's own last error line."""
    done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in (done.stderr + done.stdout).splitlines() if l.strip() and "WARNING" not in l]
        raise UserError(f"pip {args[0]} failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}")
    return done


def spec_lines(name: str) -> list[str]:
    path = SPEC_DIR / name
    if not path.is_file():
        raise UserError(f"{path}: no such file (trm-package runs from a trm-kaggle source checkout)")
    return [l.split("#")[0].strip() for l in path.read_text().splitlines() if l.split("#")[0].strip()]


def target_args(python: str) -> list[str]:
    """pip download's target: CPython `python` (e.g. 3.11) on every manylinux x86_64 tag."""
    tag = "cp" + python.replace(".", "")
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", tag]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def collect_wheels(python: str, out: Path) -> list[Path]:
    """Every wheel of the bundle into `out` (flat); returns them."""
    cache = CACHE / f"py{python.replace('.', '')}"
    cache.mkdir(parents=True, exist_ok=True)
    for requirement in spec_lines("build-from-source.txt"):
        pip("wheel", "--no-deps", "--find-links", str(cache), "-w", str(cache), requirement)
    pip("download", *target_args(python), "--find-links", str(cache), "-d", str(cache),
        "-r", str(SPEC_DIR / "requirements.txt"))
    own = Path(tempfile.mkdtemp(prefix="trm-wheel-"))
    try:
        pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(own), str(PROJECT))
        out.mkdir(parents=True, exist_ok=True)
        wheels = [w for w in cache.glob("*.whl") if not w.name.lower().startswith(EXCLUDED)]
        wheels += list(own.glob("*.whl"))
        for wheel in wheels:
            shutil.copy2(wheel, out / wheel.name)
    finally:
        shutil.rmtree(own, ignore_errors=True)
    if any(not w.name.endswith(".whl") for w in out.iterdir()):
        raise UserError(f"{out}: holds something other than wheels")
    return sorted(out.glob("*.whl"))


def verify_install(bundle: Path, python: str, torch_spec: str = "torch==2.13.0") -> str:
    """In a fresh venv of the target Python: torch as Kaggle has it, then trm-kaggle from the
    bundle's wheels only (--no-index), then load bundle/model and run one forward pass.
    Returns what was checked; raises UserError with pip's or Python's own error line."""
    interpreter = shutil.which(f"python{python}")
    if interpreter is None:
        raise UserError(f"--verify: no python{python} on this machine to verify the bundle with")
    work = Path(tempfile.mkdtemp(prefix="trm-verify-"))
    try:
        subprocess.run([interpreter, "-m", "venv", str(work / "venv")], check=True, capture_output=True)
        python_bin = str(work / "venv" / "bin" / "python")
        pip("install", "-q", torch_spec, python=python_bin)
        pip("install", "-q", "--no-index", "--find-links", str(bundle / "wheels"), "trm-kaggle", python=python_bin)
        check = ("import torch, trm_kaggle; from trm_kaggle.checkpoint import load_checkpoint;"
                 f"c = load_checkpoint({str(bundle / 'model')!r});"
                 "from trm_kaggle.model import TRM; m = TRM(c.config.model_copy(update={'forward_dtype': 'float32', "
                 "'num_puzzle_identifiers': 2})).eval();"
                 "state = dict(c.state_dict); state['puzzle_emb.weights'] = m.puzzle_emb.weights;"
                 "m.load_state_dict(state); b = {'inputs': torch.zeros(1, 900, dtype=torch.int32),"
                 "'labels': torch.zeros(1, 900, dtype=torch.int32), 'puzzle_identifiers': torch.ones(1, dtype=torch.int32)};"
                 "carry, out = m(m.initial_carry(b), b); print(trm_kaggle.__version__, tuple(out['logits'].shape))")
        done = subprocess.run([python_bin, "-c", check], capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"--verify: the installed bundle failed: {done.stderr.strip().splitlines()[-1]}")
        return done.stdout.strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
