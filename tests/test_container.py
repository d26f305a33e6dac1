"""The pretraining image (pretrain/Dockerfile): pinned, linted, installing exactly the locked
set, and buildable from the files its build context admits. No image is built here (these
machines pull no base image); what a build would do is checked piece by piece."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "pretrain" / "Dockerfile"
LOCK = ROOT / "pretrain" / "requirements.lock"
SPEC = ROOT / "pretrain" / "requirements.in"
IMAGE_ROOT = "/opt/trm-kaggle"  # the Dockerfile's WORKDIR for the project
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def dockerfile_problems(text: str) -> list[str]:
    """What breaks the image's contract: a base not pinned by digest, a pip install other than
    the lock's (hashes, no resolving) and the project's (no dependencies), root at run time,
    an entry point other than launch.sh."""
    problems, steps = [], instructions(text)
    for kind, args in steps:
        if kind == "FROM" and not re.search(r"@sha256:[0-9a-f]{64}\b", args):
            problems.append(f"FROM {args}: not pinned by digest")
        for install in re.findall(r"pip install ([^&;]*)", args) if kind == "RUN" else []:
            words = set(install.split())
            lock = {"--no-deps", "--require-hashes", "-r", "pretrain/requirements.lock"}
            project = {"--no-deps", "--no-build-isolation", "."}
            if words != lock and words != project:
                problems.append(f"pip install {install.strip()}: neither the lock nor the project alone")
    users = [args for kind, args in steps if kind == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append("the image must run as a numeric non-root USER")
    entry = [args for kind, args in steps if kind == "ENTRYPOINT"]
    if entry != [f'["{IMAGE_ROOT}/pretrain/launch.sh"]']:
        problems.append(f"ENTRYPOINT {entry}: not pretrain/launch.sh")
    return problems


def test_the_dockerfile_keeps_its_contract_and_the_checks_have_teeth():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    unpinned = re.sub(r"@sha256:[0-9a-f]{64}", "", text)
    extra = text.replace("RUN useradd", "RUN python -m pip install requests\nRUN useradd")
    resolving = text.replace("--no-deps --require-hashes", "--require-hashes")
    root = text.replace("USER 1000:1000", "USER root")
    for bad, why in ((unpinned, "not pinned"), (extra, "pip install -m"), (resolving, "neither the lock"),
                     (root, "non-root"), (text.replace("launch.sh\"]", "x.sh\"]"), "ENTRYPOINT")):
        assert any(why.split()[0] in p for p in dockerfile_problems(bad)), why


def test_hadolint_passes_the_dockerfile_and_fails_a_careless_one(tmp_path):
    done = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install requests\n")
    done = subprocess.run([HADOLINT, str(careless)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout


def lock_entries() -> dict[str, tuple[str, int, bool]]:
    """name -> (version, number of hashes, has a `# via` line) from the compiled lock."""
    entries, name = {}, None
    for line in LOCK.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            name = canonicalize_name(m.group(1))
            entries[name] = (m.group(2), 0, False)
        elif name and "--hash=sha256:" in line:
            version, hashes, via = entries[name]
            entries[name] = (version, hashes + 1, via)
        elif name and line.strip().startswith("# via"):
            entries[name] = entries[name][:2] + (True,)
    return entries


def test_the_image_spec_is_the_projects_dependencies_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    expected = [r for r in project["project"]["dependencies"] if Requirement(r).name != "torch"]
    expected += extras["data"] + extras["wandb"] + project["build-system"]["requires"]
    spec = [l.strip() for l in SPEC.read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert sorted(map(str, map(Requirement, spec))) == sorted(map(str, map(Requirement, expected)))


def test_the_lock_pins_every_package_of_the_spec_with_hashes_and_nothing_unexplained():
    entries = lock_entries()
    assert "make pretrain-lock" in LOCK.read_text().splitlines()[1]
    assert "torch" not in entries  # the base image's, pinned by its digest
    for line in SPEC.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            version = entries[canonicalize_name(req.name)][0]
            assert req.specifier.contains(version, prereleases=True), (req, version)
    for name, (version, hashes, via) in entries.items():
        assert hashes >= 1 and via, f"{name}=={version}: no hash or not required by anything"


def dockerignore_allowed() -> list[str]:
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "the build context is an allowlist"
    return [l[1:].rstrip("/") for l in lines if l.startswith("!")]


def test_the_image_builds_from_the_files_its_context_admits(tmp_path):
    allowed = dockerignore_allowed()
    copies = [args.split()[:-1] for kind, args in instructions(DOCKERFILE.read_text()) if kind == "COPY"]
    for sources in copies:
        for source in sources:
            assert any(source == a or source.startswith(a + "/") for a in allowed), f"COPY {source}: ignored"
    context = tmp_path / "context"
    context.mkdir()
    for name in allowed:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(
            source, context / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {}))
    for script in ("launch.sh", "build-data.sh"):
        assert (context / "pretrain" / script).stat().st_mode & 0o111, f"{script} not executable"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(context)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = zipfile.ZipFile(next((tmp_path / "wheel").glob("trm_kaggle-*.whl")))
    names = wheel.namelist()
    assert "trm_kaggle/conf/preset/arc2_paper.yaml" in names
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("trm-build-data", "trm-pretrain", "trm-teacher-cache", "trm-checkpoints"):
        assert f"{script} =" in entry_points


@pytest.mark.parametrize("name", ["launch.sh", "build-data.sh"])
def test_the_entry_scripts_parse(name):
    assert subprocess.run(["bash", "-n", str(ROOT / "pretrain" / name)]).returncode == 0
