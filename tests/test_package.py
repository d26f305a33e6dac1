"""trm-package's model export: slim by default, faithful with --keep-embeddings."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from trm_kaggle.checkpoint import load_checkpoint
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


def test_a_checkpoint_of_ours_exports_its_ema_weights(tmp_path):
    from trm_kaggle.checkpoint import save_checkpoint
    from trm_kaggle.optim import EMA

    source = load_checkpoint(CHECKPOINT_DIR / "step_72385")
    model = source.build_model()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    ema.update()
    save_checkpoint(tmp_path / "step_1", model, source.identifiers, step=1,
                    train_state={"train_step": {"ema": ema.state_dict()}})
    result = export_model(tmp_path / "step_1", tmp_path / "model")
    exported = load_checkpoint(tmp_path / "model").state_dict["lm_head.weight"]
    assert result.ema and torch.allclose(exported, source.state_dict["lm_head.weight"] + 0.5)


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
    manifest = write_manifest(tmp_path)
    assert "model/model.pt" in manifest and "README.md" in manifest
    assert manifest["model/model.pt"]["bytes"] == (tmp_path / "model" / "model.pt").stat().st_size
    for bad in ("noslash", "you/Upper", "you/a", "you/-x-"):
        with pytest.raises(UserError, match="--slug"):
            check_slug(bad)
    refuse_credentials(tmp_path)
    (tmp_path / "model" / "kaggle.json").write_text("{}")
    with pytest.raises(UserError, match="kaggle.json: a Kaggle credential file"):
        refuse_credentials(tmp_path)
