"""trm-package end to end: the bundle installs offline in a fresh venv beside torch and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from trm_kaggle import wheels as wheels_module
from trm_kaggle.checkpoint import sha256_file
from trm_kaggle.cli.package import main
from trm_kaggle.errors import UserError
from trm_kaggle.wheels import PLATFORMS, SPEC_DIR, collect_wheels, lock_path, read_lock, spec_lines

from conftest import FIXTURES

ROOT = Path(__file__).parent.parent
RUNS = FIXTURES / "reference_trm" / "checkpoint"


def test_the_bundle_spec_is_pyprojects_dependencies_without_torch():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d for d in deps if not d.startswith("torch")) == sorted(spec_lines("requirements.txt"))
    assert not (SPEC_DIR / "__init__.py").exists()  # it would shadow PyPI's `packaging`
    # --upload's kaggle package is an extra for the packaging machine, never in the bundle.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("kaggle") for d in extras["upload"]) and "six" in extras["upload"]
    assert not any(l.startswith("kaggle") for l in spec_lines("requirements.txt"))


def cpu_torch(python: str) -> str | None:
    """What --verify can install as torch for `python` without a multi-GB download:
    $TRM_VERIFY_TORCH, else torch 2.13.0's CPU build when pip reaches one (a local wheel or a
    CPU index in pip's configuration); None when only PyPI's CUDA build (~0.5 GB + nvidia-*) is there."""
    if os.environ.get("TRM_VERIFY_TORCH"):
        return os.environ["TRM_VERIFY_TORCH"]
    abi = "cp" + python.replace(".", "")
    found = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
                            "--ignore-installed", "--target", "/nonexistent-dry-run", "--only-binary=:all:",
                            "--python-version", python, "--implementation", "cp", "--abi", abi,
                            "--platform", PLATFORMS[-1], "torch==2.13.0+cpu"], capture_output=True)
    return "torch==2.13.0+cpu" if found.returncode == 0 else None


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_package_builds_a_bundle_that_installs_offline_and_runs(python, tmp_path, capsys):
    """Downloads from the package registry (cached under wheels/cache), builds antlr4's wheel,
    follows the committed lock, then --verify installs with --no-index into a fresh venv
    beside torch and runs the model. Without a small CPU torch for `python` the bundle is
    still built and checked, and only --verify is skipped."""
    if shutil.which(f"python{python}") is None:
        pytest.skip(f"no python{python} here to build and verify a bundle for")
    torch = cpu_torch(python)
    verify = ["--verify", "--verify-torch", torch] if torch else []
    code = main(["--ckpt", "step_72385", "--runs-dir", str(RUNS), "--out", str(tmp_path / "X"),
                 "--python", python, "--slug", "you/trm-arc", *verify])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"checkpoint {RUNS / 'step_72385'}" in out.err
    assert f"lock wheels/lock-py{python.replace('.', '')}.txt" in out.out
    assert f"wheels for Python {python}: the " in out.out and "docker_image_pinning_type original" in out.out
    wheels = sorted(p.name for p in (tmp_path / "X" / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels)
    assert any(w.startswith("antlr4_python3_runtime-4.9") for w in wheels)
    assert any(w.startswith("trm_kaggle-") for w in wheels)
    assert not any(w.lower().startswith(("torch", "triton", "nvidia", "kaggle")) for w in wheels)
    abi = "cp" + python.replace(".", "")
    assert all(w.endswith("-py3-none-any.whl") or f"-{abi}-{abi}-" in w for w in wheels), wheels
    locked = sorted(e.wheel for e in read_lock(lock_path(python)))
    assert locked == [w for w in wheels if not w.startswith("trm_kaggle-")]  # the lock is the bundle
    manifest = json.loads((tmp_path / "X" / "MANIFEST.json").read_text())
    assert {f"wheels/{w}" for w in wheels} <= set(manifest) and "model/model.pt" in manifest
    assert [p.name for p in tmp_path.iterdir()] == ["X"]
    if not torch:
        pytest.skip(f"bundle built and checked; --verify skipped: no CPU build of torch 2.13.0 for {abi} "
                    "reachable here (set TRM_VERIFY_TORCH to a wheel or a pip spec)")
    assert "verified: trm-kaggle 0.1.0 installed offline on torch " in out.out
    assert "one forward pass gave logits of shape (1, 900, 12) (batch, positions, vocabulary)" in out.out


# ---------------------------------------------------------------------------- the lock, offline

def tiny_wheel(directory: Path, name: str, version: str, payload: str = "") -> Path:
    """A minimal valid pure-Python wheel (pip download reads only its metadata)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}{payload}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
        z.writestr(f"{dist}/RECORD", "".join(f"{m},,\n" for m in files) + f"{dist}/RECORD,,\n")
    return path


@pytest.fixture
def tiny_index(tmp_path, monkeypatch):
    """A bundle spec requiring `tinypkg>=1` and a wheel cache holding tinypkg 1.0 and 2.0;
    pip is kept off every index, so the real pip resolves from the cache alone."""
    spec, locks = tmp_path / "spec", tmp_path / "locks"
    cache = locks / "cache" / "py311"
    for d in (spec, cache):
        d.mkdir(parents=True)
    (spec / "requirements.txt").write_text("tinypkg>=1\n")
    (spec / "build-from-source.txt").write_text("# none\n")
    for version in ("1.0", "2.0"):
        tiny_wheel(cache, "tinypkg", version)
    monkeypatch.setattr(wheels_module, "SPEC_DIR", spec)
    monkeypatch.setattr(wheels_module, "LOCK_DIR", locks)
    monkeypatch.setattr(wheels_module, "CACHE", locks / "cache")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return cache


def bundled(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.whl") if not p.name.startswith("trm_kaggle-"))


def test_the_lock_is_written_then_pins_the_download(tiny_index, tmp_path):
    first = collect_wheels("3.11", tmp_path / "a", progress=False)
    assert bundled(tmp_path / "a") == ["tinypkg-2.0-py3-none-any.whl"]  # no lock yet: the newest
    assert first.new_lock is not None and not first.lock.exists()  # written only when the bundle is done
    first.save_lock()
    [entry] = read_lock(lock_path("3.11"))
    assert entry.requirement == "tinypkg==2.0" and entry.sha256 == sha256_file(tiny_index / entry.wheel)
    # Pin 1.0 (as a lock written earlier would): the download follows the lock, not the newest.
    one = tiny_index / "tinypkg-1.0-py3-none-any.whl"
    lock_path("3.11").write_text(f"tinypkg==1.0  # {one.name} sha256:{sha256_file(one)}\n")
    pinned = collect_wheels("3.11", tmp_path / "b", progress=False)
    assert bundled(tmp_path / "b") == [one.name] and pinned.new_lock is None
    assert pinned.describe().endswith("followed")
    updated = collect_wheels("3.11", tmp_path / "c", update_lock=True, progress=False)
    assert bundled(tmp_path / "c") == ["tinypkg-2.0-py3-none-any.whl"] and "tinypkg==2.0" in updated.new_lock
    updated.save_lock()
    assert [e.requirement for e in read_lock(lock_path("3.11"))] == ["tinypkg==2.0"]


def test_a_wheel_that_differs_from_the_lock_is_refused(tiny_index, tmp_path):
    collect_wheels("3.11", tmp_path / "a", progress=False).save_lock()
    tiny_wheel(tiny_index, "tinypkg", "2.0", payload="  # other bytes")
    with pytest.raises(UserError, match=r"tinypkg-2.0-py3-none-any.whl: SHA-256 .* differs from"):
        collect_wheels("3.11", tmp_path / "b", progress=False)
    lock_path("3.11").write_text("tinypkg 2.0\n")
    with pytest.raises(UserError, match=r"lock-py311.txt:1: expected `name==version"):
        collect_wheels("3.11", tmp_path / "c", progress=False)


def test_a_lock_that_misses_a_dependency_asks_for_update_lock(tiny_index, tmp_path):
    lock_path("3.11").write_text("otherpkg==1.0  # otherpkg-1.0-py3-none-any.whl sha256:" + "0" * 64 + "\n")
    with pytest.raises(UserError, match="has no tinypkg-2.0-py3-none-any.whl .*--update-lock"):
        collect_wheels("3.11", tmp_path / "a", progress=False)


def test_the_committed_locks_pin_every_bundled_package():
    """wheels/lock-py311.txt and lock-py312.txt: one pin per wheel, a hash for each download."""
    for python in ("3.11", "3.12"):
        entries = read_lock(lock_path(python))
        names = {e.requirement.split("==")[0] for e in entries}
        assert {"numpy", "numba", "hydra-core", "pydantic", "tqdm", "antlr4-python3-runtime"} <= names
        assert not any(n.startswith(("torch", "triton", "nvidia", "kaggle", "trm-kaggle")) for n in names)
        assert all(e.sha256 or e.requirement.startswith("antlr4-python3-runtime==") for e in entries)


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "step_1"], "step_1: no checkpoint of that name under"),
    (["--ckpt", "step_72385", "--slug", "nobody"], "--slug 'nobody'"),
    (["--ckpt", "step_72385", "--python", "3.10"], "--python '3.10': expected"),
    (["--ckpt", "step_72385", "--update-lock"], "--no-wheels builds no wheels: drop --update-lock"),
    (["--ckpt", "step_72385", "-m", "notes"], "-m is --upload's version notes"),
    (["--ckpt", "step_72385", "--upload"], "--upload needs -m NOTES"),
])
def test_bad_requests_are_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    code = main([*argv, "--runs-dir", str(RUNS), "--out", str(tmp_path / "X"), "--no-wheels"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_own_wheel_never_ships_a_module_left_in_build(tmp_path):
    """setuptools builds through build/lib: a stale module there used to ship in the bundle."""
    stale = ROOT / "build" / "lib" / "trm_kaggle" / "stale_module_from_an_old_build.py"
    existed = (ROOT / "build").exists()
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("raise ImportError('an old build')\n")
    try:
        wheel = wheels_module.build_own_wheel(tmp_path)
    finally:
        stale.unlink()
        if not existed:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    names = zipfile.ZipFile(wheel).namelist()
    assert "trm_kaggle/model.py" in names and "trm_kaggle/kaggle/submit.py" in names
    assert not any("stale_module" in n for n in names)
    assert not any("__pycache__" in n for n in names)
