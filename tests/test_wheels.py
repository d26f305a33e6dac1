"""trm-package end to end: the bundle installs offline in a fresh venv beside torch and runs."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from trm_kaggle.cli.package import main
from trm_kaggle.wheels import SPEC_DIR, spec_lines

from conftest import FIXTURES

ROOT = Path(__file__).parent.parent
RUNS = FIXTURES / "reference_trm" / "checkpoint"


def test_the_bundle_spec_is_pyprojects_dependencies_without_torch():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(d for d in deps if not d.startswith("torch")) == sorted(spec_lines("requirements.txt"))
    assert not (SPEC_DIR / "__init__.py").exists()  # it would shadow PyPI's `packaging`


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="--verify needs python3.11")
def test_package_builds_a_bundle_that_installs_offline_and_runs(tmp_path, capsys):
    """Downloads from the package registry (cached under wheels/cache), builds antlr4's wheel,
    then --verify installs with --no-index into a fresh venv beside torch and runs the model."""
    code = main(["--ckpt", "step_72385", "--runs-dir", str(RUNS), "--out", str(tmp_path / "X"),
                 "--python", "3.11", "--slug", "you/trm-arc", "--verify"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "verified: trm-kaggle 0.1.0 (1, 900, 12)" in out.out
    assert f"checkpoint {RUNS / 'step_72385'}" in out.err
    wheels = sorted(p.name for p in (tmp_path / "X" / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels)
    assert any(w.startswith("antlr4_python3_runtime-4.9") for w in wheels)
    assert any(w.startswith("trm_kaggle-") for w in wheels)
    assert not any(w.lower().startswith(("torch", "triton", "nvidia")) for w in wheels)
    manifest = json.loads((tmp_path / "X" / "MANIFEST.json").read_text())
    assert {f"wheels/{w}" for w in wheels} <= set(manifest) and "model/model.pt" in manifest
    assert [p.name for p in tmp_path.iterdir()] == ["X"]


@pytest.mark.parametrize("argv, message", [
    (["--ckpt", "step_1"], "step_1: no checkpoint of that name under"),
    (["--ckpt", "step_72385", "--slug", "nobody"], "--slug 'nobody'"),
])
def test_bad_requests_are_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    code = main([*argv, "--runs-dir", str(RUNS), "--out", str(tmp_path / "X"), "--no-wheels"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
