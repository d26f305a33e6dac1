"""trm-package's model export: slim by default, faithful with --keep-embeddings."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trm_kaggle.checkpoint import load_checkpoint, sha256_file
from trm_kaggle.cli.eval import main as eval_main
from trm_kaggle.errors import UserError
from trm_kaggle.package import export_model, find_checkpoint

from conftest import FIXTURES, REFERENCE_DATASET

CHECKPOINT_DIR = FIXTURES / "reference_trm" / "checkpoint"


def test_find_checkpoint_by_name_or_path(tmp_path):
    assert find_checkpoint("step_72385", CHECKPOINT_DIR.parent) == CHECKPOINT_DIR / "step_72385"
    assert find_checkpoint(str(CHECKPOINT_DIR / "step_72385")) == CHECKPOINT_DIR / "step_72385"
    with pytest.raises(UserError, match="step_1: no checkpoint of that name under"):
        find_checkpoint("step_1", CHECKPOINT_DIR.parent)
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        for name in ("step_72385", "all_config.yaml"):
            shutil.copy(CHECKPOINT_DIR / name, tmp_path / run / name)
    with pytest.raises(UserError, match="2 checkpoints of that name"):
        find_checkpoint("step_72385", tmp_path)


def test_kept_embeddings_reproduce_the_original(tmp_path, capsys):
    export_model(CHECKPOINT_DIR / "step_72385", tmp_path / "model", keep_embeddings=True)
    code = eval_main(["--ckpt", str(tmp_path / "model"), "--data", str(REFERENCE_DATASET), "--limit", "12",
                      "--dump-logits", str(tmp_path / "x.npz"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    expected = np.load(CHECKPOINT_DIR / "expected.npz")
    np.testing.assert_allclose(np.load(tmp_path / "x.npz")["logits"], expected["logits"], atol=1e-4, rtol=0)


def test_the_slim_export_keeps_the_trunk_and_the_embedding_statistics(tmp_path):
    result = export_model(CHECKPOINT_DIR / "step_72385", tmp_path / "model")
    source, slim = load_checkpoint(CHECKPOINT_DIR / "step_72385"), load_checkpoint(tmp_path / "model")
    assert "puzzle_emb.weights" not in slim.state_dict and slim.identifiers is None
    for key, value in slim.state_dict.items():
        assert torch.equal(value, source.state_dict[key].float()), key
    table = source.state_dict["puzzle_emb.weights"]
    torch.testing.assert_close(slim.embedding_stats["mean"], table[1:].mean(0))
    assert slim.embedding_stats["rows"] == 128
    kept = export_model(CHECKPOINT_DIR / "step_72385", tmp_path / "kept", keep_embeddings=True)
    assert kept.size_bytes - result.size_bytes > table.numel() * 4  # the table (and identifiers) left out
    with pytest.raises(UserError, match="slim export holds no puzzle embeddings"):
        slim.build_model()


def test_keeping_a_table_whose_rows_have_no_names_is_refused_unless_named(tmp_path):
    from trm_kaggle.cli.package import main as package_main

    nameless = tmp_path / "original"
    nameless.mkdir()
    for name in ("step_72385", "all_config.yaml"):
        shutil.copy(CHECKPOINT_DIR / name, nameless / name)
    export_model(nameless / "step_72385", tmp_path / "slim")  # slim: the statistics need no names
    with pytest.raises(UserError, match=r"--keep-embeddings would keep 129 puzzle-embedding rows without names .* "
                                        "pass --identifiers FILE"):
        export_model(nameless / "step_72385", tmp_path / "kept", keep_embeddings=True)
    assert not (tmp_path / "kept").exists()
    assert package_main(["--ckpt", str(nameless / "step_72385"), "--out", str(tmp_path / "bundle"), "--no-wheels",
                         "--keep-embeddings", "--identifiers", str(CHECKPOINT_DIR / "identifiers.json"),
                         "--quiet"]) == 0
    kept = load_checkpoint(tmp_path / "bundle" / "model")
    assert kept.identifiers == json.loads((CHECKPOINT_DIR / "identifiers.json").read_text())
    assert package_main(["--ckpt", str(nameless / "step_72385"), "--out", str(tmp_path / "b2"), "--no-wheels",
                         "--identifiers", str(CHECKPOINT_DIR / "identifiers.json")]) == 2  # names nothing kept
    assert not (tmp_path / "b2").exists()


def test_a_checkpoint_of_ours_exports_its_ema_weights(tmp_path):
    from trm_kaggle.checkpoint import TrainState, save_checkpoint
    from trm_kaggle.optim import EMA

    source = load_checkpoint(CHECKPOINT_DIR / "step_72385")
    model = source.build_model()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    ema.update()
    save_checkpoint(tmp_path / "step_1", model, source.identifiers, step=1,
                    train_state=TrainState(train_step={"ema": ema.state_dict()}))
    result = export_model(tmp_path / "step_1", tmp_path / "model")
    exported = load_checkpoint(tmp_path / "model").state_dict["lm_head.weight"]
    assert result.ema and torch.allclose(exported, source.state_dict["lm_head.weight"] + 0.5)
    # A run that had EMA on but whose state lost it (a renamed key, say) is refused, never
    # exported with its live weights as if they were the averages.
    save_checkpoint(tmp_path / "step_2", model, source.identifiers, step=2, extra_config={"pretrain": {"ema": True}},
                    train_state=TrainState(train_step={"emas": ema.state_dict()}))
    with pytest.raises(UserError, match="the run had EMA on, but its training state holds no EMA averages"):
        export_model(tmp_path / "step_2", tmp_path / "model2")


def test_fine_tuning_starts_from_the_slim_export(tmp_path, capsys):
    """trm-pretrain init_from=<slim export>: the trunk loads, every row starts at the mean."""
    from trm_kaggle.cli.pretrain import load_config
    from trm_kaggle.distributed import Dist
    from trm_kaggle.pretrain import PretrainRun

    export_model(CHECKPOINT_DIR / "step_72385", tmp_path / "model")
    arch = ["arch.hidden_size=64", "arch.num_heads=4", "arch.L_layers=2", "arch.H_cycles=2", "arch.L_cycles=2",
            "arch.expansion=4", "arch.puzzle_emb_ndim=64", "arch.puzzle_emb_len=16", "arch.halt_max_steps=3"]
    config = load_config(["preset=cpu_tiny", f"data_path={REFERENCE_DATASET}", f"run_dir={tmp_path / 'run'}",
                          f"init_from={tmp_path / 'model'}", *arch])
    run = PretrainRun(config, Dist(0, 1, 0, torch.device("cpu")))
    assert "0 rows copied by name, 128 initialised (mean)" in capsys.readouterr().out
    table = load_checkpoint(CHECKPOINT_DIR / "step_72385").state_dict["puzzle_emb.weights"]
    torch.testing.assert_close(run.model.puzzle_emb.weights[5], table[1:].mean(0))
    torch.testing.assert_close(run.model.lm_head.weight, load_checkpoint(tmp_path / "model").state_dict["lm_head.weight"])


def test_dataset_files_manifest_and_credential_refusal(tmp_path):
    import json as json_

    from trm_kaggle.package import check_slug, refuse_credentials, write_dataset_files, write_manifest

    export = export_model(CHECKPOINT_DIR / "step_72385", tmp_path / "model")
    write_dataset_files(tmp_path, "you/trm-arc", export, 72385)
    metadata = json_.loads((tmp_path / "dataset-metadata.json").read_text())
    assert metadata["id"] == "you/trm-arc" and 6 <= len(metadata["title"]) <= 50
    from trm_kaggle.package import dataset_title
    long = dataset_title("you/" + "a" * 50, 72385)
    assert len(long) == 50 and long.endswith(" step 72385")  # a long name is cut, not the step
    manifest = write_manifest(tmp_path)
    assert "model/model.pt" in manifest and "README.md" in manifest
    assert manifest["model/model.pt"]["bytes"] == (tmp_path / "model" / "model.pt").stat().st_size
    assert check_slug("you/abcdef") == "you/abcdef" and check_slug("you/" + "a" * 50)
    for bad in ("noslash", "you/Upper", "you/a", "you/-x-", "you/trm", "you/abcde", "you/" + "a" * 51):
        with pytest.raises(UserError, match="--slug"):
            check_slug(bad)
    refuse_credentials(tmp_path)
    (tmp_path / "model" / "kaggle.json").write_text("{}")
    with pytest.raises(UserError, match="kaggle.json: a Kaggle credential file"):
        refuse_credentials(tmp_path)


# ---------------------------------------------------------------------------- --upload

class HTTPNotFound(OSError):
    """What kaggle's dataset_status raises for an unknown dataset: requests' HTTPError, an
    OSError carrying the response."""
    response = SimpleNamespace(status_code=404)


class FakeKaggleApi:
    """KaggleApi at its boundary: the calls upload_bundle makes, recorded; `fail` raises from
    the named call, as the real one does (authenticate() exits when there are no credentials)."""

    def __init__(self, existing=(), fail: dict | None = None):
        self.existing, self.fail, self.calls = set(existing), fail or {}, []

    def call(self, name, **details):
        self.calls.append((name, details))
        if name in self.fail:
            raise self.fail[name]

    def authenticate(self):
        print("Authentication required to call the Kaggle API.")  # the real one prints help, then exits
        self.call("authenticate")

    def dataset_status(self, slug):
        self.call("status", slug=slug)
        if slug not in self.existing:
            raise HTTPNotFound("404 Client Error: Not Found")
        return "ready"

    def dataset_create_new(self, folder, public=False, quiet=False, convert_to_csv=True, dir_mode="skip"):
        self.call("create", folder=folder, public=public, dir_mode=dir_mode, files=bundle_files(folder))
        return SimpleNamespace(error=None, url="https://www.kaggle.com/datasets/you/trm-arc")

    def dataset_create_version(self, folder, version_notes, quiet=False, convert_to_csv=True,
                               delete_old_versions=False, dir_mode="skip"):
        self.call("version", folder=folder, notes=version_notes, dir_mode=dir_mode, files=bundle_files(folder))
        return SimpleNamespace(error=None, url="https://www.kaggle.com/datasets/you/trm-arc")


def bundle_files(folder: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture
def kaggle(monkeypatch):
    """Replace KaggleApi (and the installed-package check) for trm-package --upload."""
    import trm_kaggle.package as package

    api = FakeKaggleApi()
    monkeypatch.setattr(package, "kaggle_api", lambda: api)
    monkeypatch.setattr(package, "check_upload_possible", lambda: None)
    return api


def package_cli(out: Path, *extra: str) -> list[str]:
    return ["--ckpt", "step_72385", "--runs-dir", str(CHECKPOINT_DIR), "--out", str(out), "--no-wheels",
            "--quiet", *extra]


def test_upload_creates_the_dataset_then_adds_versions(kaggle, tmp_path, capsys):
    from trm_kaggle.cli.package import main
    from trm_kaggle.package import upload_bundle

    out = tmp_path / "X"
    assert main(package_cli(out, "--upload", "-m", "first")) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert "uploaded: created https://www.kaggle.com/datasets/you/trm-arc" in printed.out
    assert "Authentication required" not in printed.out  # kaggle's login help is not ours to print
    (name, create), = [c for c in kaggle.calls if c[0] in ("create", "version")]
    assert name == "create" and create["folder"] == str(out)  # the renamed bundle, not its staging dir
    assert create["dir_mode"] == "zip" and create["public"] is False
    assert "MANIFEST.json" in create["files"] and "model/model.pt" in create["files"]
    kaggle.existing.add("you/trm-arc")
    assert upload_bundle(out, "second run", lambda: kaggle).startswith("new version of")
    name, version = kaggle.calls[-1]
    assert name == "version" and version == {"folder": str(out), "notes": "second run", "dir_mode": "zip",
                                              "files": create["files"]}


def intact(out: Path) -> bool:
    manifest = json.loads((out / "MANIFEST.json").read_text())
    return all(sha256_file(out / f) == entry["sha256"] for f, entry in manifest.items())


@pytest.mark.parametrize("fail, message", [
    ({"authenticate": SystemExit(1)}, "--upload: no Kaggle credentials"),
    ({"status": ConnectionError("Failed to resolve 'api.kaggle.com' key=s3cr3t-kaggle-key")},
     "--upload: ConnectionError: Failed to resolve 'api.kaggle.com' key=***"),
    ({"create": ValueError("The dataset slug must be between 6 and 50 characters")},
     "--upload: ValueError: The dataset slug must be between 6 and 50 characters"),
])
def test_a_failed_upload_leaves_the_bundle_and_says_how_to_upload_it(fail, message, kaggle, tmp_path, capsys,
                                                                     monkeypatch):
    from trm_kaggle.cli.package import main

    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t-kaggle-key")
    kaggle.fail = fail
    out = tmp_path / "X"
    code = main(package_cli(out, "--upload", "-m", "v2 notes"))
    printed = capsys.readouterr()
    err = printed.err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"trm-package: error: {message}"), printed.err
    assert f"the bundle at {out} is complete: upload it later with " \
           f"`kaggle datasets version -p {out} -m 'v2 notes' --dir-mode zip`" in err
    assert "s3cr3t" not in printed.err + printed.out and "Traceback" not in printed.err
    assert intact(out) and "trm-package: uploaded" not in printed.out
    assert [p.name for p in tmp_path.iterdir()] == ["X"]


def test_kaggle_refusing_the_upload_is_an_error(kaggle, tmp_path):
    from trm_kaggle.package import build_bundle, upload_bundle

    build_bundle(CHECKPOINT_DIR / "step_72385", tmp_path / "X", "you/trm-arc", with_wheels=False, progress=False)
    kaggle.dataset_create_new = lambda **kw: SimpleNamespace(error="The requested slug is already in use")
    with pytest.raises(UserError, match="Kaggle refused it: The requested slug is already in use; the bundle"):
        upload_bundle(tmp_path / "X", "notes", lambda: kaggle)


def test_upload_checks_for_credential_files_again(kaggle, tmp_path):
    from trm_kaggle.package import build_bundle, upload_bundle

    build_bundle(CHECKPOINT_DIR / "step_72385", tmp_path / "X", "you/trm-arc", with_wheels=False, progress=False)
    (tmp_path / "X" / "model" / "access_token").write_text("token")
    with pytest.raises(UserError, match="access_token: a Kaggle credential file inside the bundle"):
        upload_bundle(tmp_path / "X", "notes", lambda: kaggle)
    assert kaggle.calls == []


def test_upload_without_the_kaggle_package_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    """Refused before building when kaggle (or six, which kaggle imports undeclared) is missing;
    a kaggle that fails to import at upload time says the same."""
    import importlib.util

    from trm_kaggle.cli.package import main
    from trm_kaggle.package import build_bundle, upload_bundle

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "six" else real_find_spec(name, *a))
    assert main(package_cli(tmp_path / "X", "--upload", "-m", "notes")) == 2
    err = capsys.readouterr().err
    assert "--upload needs the " in err and "pip install 'trm-kaggle[upload]'" in err
    assert not (tmp_path / "X").exists()
    build_bundle(CHECKPOINT_DIR / "step_72385", tmp_path / "X", "you/trm-arc", with_wheels=False, progress=False)
    monkeypatch.setitem(sys.modules, "kaggle", None)  # `import kaggle...` now raises ImportError
    with pytest.raises(UserError, match=r"needs the kaggle package \(kaggle\S* is missing\): pip install 'trm-kaggle\[upload\]'"):
        upload_bundle(tmp_path / "X", "notes")


def test_a_slug_kaggle_would_refuse_at_upload_is_refused_before_anything_is_built(tmp_path, capsys):
    from trm_kaggle.cli.package import main as package_main

    code = package_main(["--ckpt", "step_72385", "--runs-dir", str(tmp_path / "no-runs"), "--out", str(tmp_path / "b"),
                         "--slug", "you/trm", "--no-wheels"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("trm-package: error: --slug 'you/trm': expected OWNER/NAME: OWNER your "
                                        "Kaggle user name (3+ characters), NAME 6-50 characters")
    assert "checkpoint" not in err and not (tmp_path / "b").exists()


def test_force_replaces_an_earlier_bundle_and_nothing_else(tmp_path, capsys):
    from trm_kaggle.cli.package import main as package_main

    args = ["--ckpt", str(CHECKPOINT_DIR / "step_72385"), "--no-wheels", "--quiet", "--force"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    assert package_main([*args, "--out", str(tmp_path / "notes")]) == 2
    assert "notes: not a trm-package bundle (MANIFEST.json)" in capsys.readouterr().err
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    assert package_main([*args, "--out", str(tmp_path / "bundle")]) == 0
    assert package_main([*args, "--out", str(tmp_path / "bundle")]) == 0  # an earlier bundle: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "notes"]


def test_a_bundle_without_wheels_says_so_and_its_readme_lists_only_what_is_there(tmp_path, capsys):
    from trm_kaggle.cli.package import main

    out = tmp_path / "bundle"
    assert main(package_cli(out)) == 0
    said = capsys.readouterr().out
    assert "no wheels (--no-wheels)" in said and not (out / "wheels").exists()
    readme = (out / "README.md").read_text()
    assert "`wheels/`" not in readme and "`model/`" in readme and "`MANIFEST.json`" in readme
