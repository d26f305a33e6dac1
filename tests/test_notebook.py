"""The Kaggle notebook, executed by a real Jupyter kernel on a simulated Kaggle image: a fresh
venv that sees this environment's packages (torch, numpy, numba, pydantic, hydra-core,
ipykernel, pip) but not trm-kaggle, which the notebook's install cell must install for real
from the bundle's wheels, offline (`pip install --no-index`). Inputs in the 2026 layout hold
real ARC-AGI-2 tasks and a tiny packaged model, as folders or as zips; CPU only."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from trm_kaggle.errors import UserError
from trm_kaggle.kaggle.paths import find_challenges
from trm_kaggle.package import check_slug
from trm_kaggle.wheels import build_own_wheel

from submit_helpers import assert_complete, hidden_tasks, tiny_bundle, write_challenges

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "trm_arc_submission.ipynb"
METADATA = Path(__file__).parent.parent / "packaging" / "kernel-metadata.json"
COMPETITION = Path("competitions") / "arc-prize-2026-arc-agi-2"
KERNEL = "kaggle-image"
SMALL_RUN = dict(budget_hours=0.03, margin_minutes=0.1, num_aug=4, steps=4, batch_size=8, device="cpu", gpus=1)


@pytest.fixture(scope="module")
def image_packages(tmp_path_factory) -> Path:
    """Every package of this venv but trm-kaggle, linked into one folder."""
    folder = tmp_path_factory.mktemp("image-packages")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("trm_kaggle", "trm-kaggle", "__editable__")):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture
def kaggle_image(image_packages, tmp_path) -> Path:
    """A fresh simulated image for each test (an install must not carry over): a venv whose
    Python sees `image_packages`, and a kernelspec for it under the returned JUPYTER_PATH."""
    root = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "kaggle-image.pth").write_text(f"{image_packages}\n")
    check = subprocess.run([str(python), "-c", "import trm_kaggle"], capture_output=True, cwd=root)
    assert check.returncode != 0, "the simulated image must not have trm_kaggle before the install cell"
    spec = root / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "simulated Kaggle image", "language": "python"}))
    return root / "jupyter"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """What trm-package writes, as far as the notebook needs: model/ and wheels/ (trm-kaggle's
    own wheel: the image has every other dependency)."""
    made = tiny_bundle(tmp_path_factory.mktemp("bundle"))
    (made / "wheels").mkdir()
    build_own_wheel(made / "wheels")
    return made


def kaggle_input(tmp_path: Path, tasks) -> Path:
    """/kaggle/input in the 2026 layout with the competition, and a public dataset holding a
    copy of other tasks under the same file name (discovery must not take it)."""
    root = tmp_path / "kaggle" / "input"
    write_challenges(tasks, root / COMPETITION)
    write_challenges(hidden_tasks(6)[4:], root / "datasets" / "someone" / "arc-copy")
    return root


def run_notebook(tmp_path: Path, kaggle_image: Path, monkeypatch, rerun: bool, options: dict) -> tuple[Path, str]:
    """Execute every cell; returns submission.json's path and everything printed. Raises
    CellExecutionError when a cell raises (the notebook's last cell does when it failed
    outside the rerun)."""
    out = tmp_path / "kaggle" / "working" / "submission.json"
    monkeypatch.setenv("JUPYTER_PATH", str(kaggle_image))
    monkeypatch.setenv("TRM_KAGGLE_INPUT", str(tmp_path / "kaggle" / "input"))
    monkeypatch.setenv("TRM_KAGGLE_OUT", str(out))
    monkeypatch.setenv("TRM_KAGGLE_TEMP", str(tmp_path / "kaggle" / "temp"))
    monkeypatch.setenv("TRM_SUBMIT_OPTIONS", json.dumps(options | {"scratch": str(tmp_path / "scratch")}))
    if rerun:
        monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    else:
        monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=400, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
        (tmp_path / "printed.txt").write_text(printed)
    return out, printed


def test_a_folder_bundle_installs_offline_and_the_rerun_submits(kaggle_image, bundle, tmp_path, monkeypatch):
    tasks = hidden_tasks(3)
    root = kaggle_input(tmp_path, tasks)
    shutil.copytree(bundle, root / "datasets" / "you" / "trm-arc")
    out, printed = run_notebook(tmp_path, kaggle_image, monkeypatch, rerun=True, options=SMALL_RUN)
    assert_complete(out, tasks)  # the competition's tasks, not the dataset copy's
    assert f"from {root / COMPETITION / 'arc-agi_test_challenges.json'}" in printed
    assert "installed from" in printed and "trm-kaggle 0.1.0" in printed and "after: torch" in printed
    assert "scoring rerun" in printed and "fine-tune steps: 4 done of 4 planned" in printed
    assert printed.strip().splitlines()[-1].startswith("trm-submit: OK")


def test_a_zipped_bundle_installs_from_temp_and_a_saved_version_runs_short(kaggle_image, bundle, tmp_path,
                                                                            monkeypatch):
    tasks = hidden_tasks(3)
    dataset = kaggle_input(tmp_path, tasks) / "datasets" / "you" / "trm-arc"
    dataset.mkdir(parents=True)
    for folder in ("model", "wheels"):  # as the kaggle client's zip dir mode leaves them
        shutil.make_archive(str(dataset / folder), "zip", root_dir=bundle / folder)
    out, printed = run_notebook(tmp_path, kaggle_image, monkeypatch, rerun=False, options=SMALL_RUN)
    assert_complete(out, tasks)
    assert f"installed from {tmp_path / 'kaggle' / 'temp' / 'bundle-wheels'}" in printed
    assert "short run (not the scoring rerun)" in printed
    assert printed.strip().splitlines()[-1].startswith("trm-submit: OK")


@pytest.mark.parametrize("rerun", [True, False])
def test_no_bundle_leaves_the_fallback_and_says_so_last(rerun, kaggle_image, tmp_path, monkeypatch):
    """In the rerun the notebook must not raise (the file on disk is scored); a saved version
    must not look like a success."""
    tasks = hidden_tasks(2)
    kaggle_input(tmp_path, tasks)
    if rerun:
        out, printed = run_notebook(tmp_path, kaggle_image, monkeypatch, rerun=True, options=SMALL_RUN)
    else:
        with pytest.raises(CellExecutionError, match="FAILED: install: no trm_kaggle wheel"):
            run_notebook(tmp_path, kaggle_image, monkeypatch, rerun=False, options=SMALL_RUN)
        out, printed = tmp_path / "kaggle" / "working" / "submission.json", (tmp_path / "printed.txt").read_text()
    submission = assert_complete(out, tasks)
    assert submission[tasks[0].id][0]["attempt_1"] == tasks[0].test[0].input.tolist()
    assert printed.strip().splitlines()[-1].startswith("trm-submit: FAILED: install: no trm_kaggle wheel")


def test_a_failing_pip_leaves_the_fallback_and_says_why(kaggle_image, tmp_path, monkeypatch):
    tasks = hidden_tasks(2)
    wheels = kaggle_input(tmp_path, tasks) / "datasets" / "you" / "trm-arc" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "trm_kaggle-0.1.0-py3-none-any.whl").write_bytes(b"not a wheel")
    out, printed = run_notebook(tmp_path, kaggle_image, monkeypatch, rerun=True, options=SMALL_RUN)
    assert_complete(out, tasks)
    assert "trm-submit: FAILED: install: pip install --no-index from" in printed.strip().splitlines()[-1]


# ---------------------------------------------------------------------------- discovery, both copies

def first_cell(root: Path, out: Path, competition: str | None, monkeypatch) -> dict:
    """Run the notebook's standard-library first cell as the kernel would; its globals."""
    monkeypatch.setenv("TRM_KAGGLE_INPUT", str(root))
    monkeypatch.setenv("TRM_KAGGLE_OUT", str(out))
    if competition:
        monkeypatch.setenv("TRM_KAGGLE_COMPETITION", competition)
    else:
        monkeypatch.delenv("TRM_KAGGLE_COMPETITION", raising=False)
    namespace: dict = {}
    exec(compile(nbformat.read(NOTEBOOK, as_version=4).cells[1].source, "cell-1", "exec"), namespace)
    return namespace


LAYOUTS = {  # where challenges files are -> the one both rules must choose (None: an error)
    "2026, a dataset copy": (["competitions/arc-prize-2026-arc-agi-2", "datasets/x/copy"], 0, None),
    "2025, two competitions": (["arc-prize-2024", "arc-prize-2025"], 1, None),
    "2025, named competition": (["arc-prize-2024", "arc-prize-2025"], 0, "arc-prize-2024"),
    "2025, a public copy beside it": (["arc-prize-2025", "arc-prize-2025-public-copy"], 0, None),
    "one dataset, no competition": (["datasets/x/tasks"], 0, None),
    "two datasets, no competition": (["datasets/x/a", "datasets/y/b"], None, None),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_notebook_and_trm_submit_find_the_same_challenges(layout, tmp_path, monkeypatch):
    folders, chosen, competition = LAYOUTS[layout]
    root, tasks = tmp_path / "input", hidden_tasks(2)
    for i, folder in enumerate(folders):
        write_challenges(tasks[i % 2:i % 2 + 1], root / folder)
    cell = first_cell(root, tmp_path / "out.json", competition, monkeypatch)
    if chosen is None:
        with pytest.raises(UserError, match="none in a competition's mount"):
            find_challenges(root, competition)
        assert cell["CHALLENGES"] is None and "none in a competition's mount" in cell["PROBLEMS"][0]
        assert not (tmp_path / "out.json").exists()
        return
    expected = root / folders[chosen] / "arc-agi_test_challenges.json"
    assert find_challenges(root, competition) == expected
    assert Path(cell["CHALLENGES"]) == expected and cell["PROBLEMS"] == []
    assert_complete(tmp_path / "out.json", tasks[chosen % 2:chosen % 2 + 1])


def test_both_rules_follow_a_linked_mount_and_stop_at_the_same_depth(tmp_path, monkeypatch):
    root, tasks = tmp_path / "input", hidden_tasks(2)
    write_challenges(tasks[:1], tmp_path / "elsewhere")
    (root / "competitions").mkdir(parents=True)
    (root / "competitions" / "arc-prize-2026-arc-agi-2").symlink_to(tmp_path / "elsewhere")
    write_challenges(tasks[1:], root / "datasets" / "x" / "y" / "deeper")  # 5 levels down: beyond both
    expected = root / "competitions" / "arc-prize-2026-arc-agi-2" / "arc-agi_test_challenges.json"
    assert find_challenges(root) == expected
    assert Path(first_cell(root, tmp_path / "out.json", None, monkeypatch)["CHALLENGES"]) == expected
    (root / "competitions" / "arc-prize-2026-arc-agi-2").unlink()
    with pytest.raises(UserError, match="no arc-agi_test_challenges.json below it"):
        find_challenges(root)
    assert "no arc-agi_test_challenges.json below it" in first_cell(root, tmp_path / "o2.json", None,
                                                                     monkeypatch)["PROBLEMS"][0]


def test_the_kernel_metadata_template_keeps_internet_off_the_gpu_on_and_the_image_pinned():
    metadata = json.loads(METADATA.read_text())
    assert metadata["enable_internet"] is False  # missing means on when pushing
    assert metadata["enable_gpu"] is True and metadata["competition_sources"] and metadata["dataset_sources"]
    assert metadata["code_file"] == NOTEBOOK.name
    assert metadata["docker_image_pinning_type"] == "original"  # a new image must not break the bundle
    # What `kaggle kernels push` checks: a title of 5+ characters that slugifies to the id's name.
    assert len(metadata["title"]) >= 5
    assert re.sub(r"[^a-z0-9]+", "-", metadata["title"].lower()).strip("-") == metadata["id"].split("/")[1]
    for source in metadata["dataset_sources"]:
        check_slug(source.replace("OWNER", "owner"))  # the dataset trm-package would make
