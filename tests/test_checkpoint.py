"""Checkpoints: the original's format and ours load through one function; damage is one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trm_kaggle import checkpoint as ckpt_module
from trm_kaggle.checkpoint import TrainState, load_checkpoint, save_checkpoint
from trm_kaggle.errors import NonFiniteError, UserError

from conftest import FIXTURES

ORIGINAL = FIXTURES / "reference_trm" / "checkpoint"


@pytest.fixture
def original_copy(tmp_path):
    """The original checkpoint's files in a writable directory."""
    for name in ("step_72385", "all_config.yaml", "identifiers.json"):
        shutil.copy(ORIGINAL / name, tmp_path / name)
    return tmp_path / "step_72385"


def test_loads_an_original_checkpoint_with_its_config_and_identifiers():
    ckpt = load_checkpoint(ORIGINAL / "step_72385")
    c = ckpt.config
    assert (c.hidden_size, c.num_heads, c.H_cycles, c.L_cycles, c.L_layers, c.puzzle_tokens) == (64, 4, 2, 2, 2, 16)
    assert (c.num_puzzle_identifiers, c.halt_max_steps, c.forward_dtype) == (129, 3, "float32")
    assert ckpt.original_format and len(ckpt.identifiers) == 129 and ckpt.identifiers[0] == "<blank>"
    assert ckpt.step == 72385  # from the file's name: the original saves no step
    assert ckpt.extra_config["global_batch_size"] == 768
    model = ckpt.build_model()
    assert not model.training


def test_original_keys_load_with_or_without_the_compile_prefix(original_copy):
    state = torch.load(original_copy, weights_only=True)
    torch.save({k.removeprefix("_orig_mod."): v for k, v in state.items()}, original_copy)
    plain = load_checkpoint(original_copy).build_model()
    compiled = load_checkpoint(ORIGINAL / "step_72385").build_model()
    for (k, a), (_, b) in zip(plain.state_dict().items(), compiled.state_dict().items()):
        assert torch.equal(a, b), k


def test_ours_round_trips_and_records_hashes(tmp_path):
    source = load_checkpoint(ORIGINAL / "step_72385")
    model = source.build_model()
    out = save_checkpoint(tmp_path / "run" / "step_5", model, source.identifiers, step=5,
                          extra_config={"lr": 1e-4}, train_state=TrainState(train_step={"step": torch.tensor(5)}))
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model.pt", "config.json", "identifiers.json", "train_state.pt"}
    loaded = load_checkpoint(out)
    assert not loaded.original_format and loaded.step == 5 and loaded.config == source.config
    assert loaded.identifiers == source.identifiers and loaded.extra_config == {"lr": 1e-4}
    assert loaded.train_state().train_step["step"].item() == 5
    for (k, a), (_, b) in zip(loaded.build_model().state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_5"]


def test_a_failed_save_leaves_nothing_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    source = load_checkpoint(ORIGINAL / "step_72385")
    model = source.build_model()
    save_checkpoint(tmp_path / "step_1", model, source.identifiers, step=1)
    before = (tmp_path / "step_1" / "meta.json").read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", fail)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "step_1", model, source.identifiers, step=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step_1"]
    assert (tmp_path / "step_1" / "meta.json").read_text() == before


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" * 100)


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_damaged_original_file_is_one_line(original_copy, how):
    damage(original_copy, how)
    with pytest.raises(UserError, match=r"step_72385: not a readable checkpoint \(truncated or corrupt\?\)") as e:
        load_checkpoint(original_copy)
    assert "\n" not in str(e.value)


def test_a_damaged_checkpoint_of_ours_fails_its_hash(tmp_path):
    source = load_checkpoint(ORIGINAL / "step_72385")
    out = save_checkpoint(tmp_path / "step_1", source.build_model(), source.identifiers, step=1)
    damage(out / "model.pt", "truncate")
    with pytest.raises(UserError, match="model.pt: SHA-256 differs from meta.json"):
        load_checkpoint(out)


def test_weights_that_do_not_fit_name_the_key_and_shapes(original_copy):
    config = (original_copy.parent / "all_config.yaml").read_text()
    (original_copy.parent / "all_config.yaml").write_text(config.replace("expansion: 4", "expansion: 8"))
    with pytest.raises(UserError, match=r"gate_up_proj.weight has shape \(512, 64\), the architecture needs \(1024, 64\)"):
        load_checkpoint(original_copy).build_model()
    (original_copy.parent / "all_config.yaml").write_text(config.replace("L_layers: 2", "L_layers: 3"))
    with pytest.raises(UserError, match="missing L_level.layers.2"):
        load_checkpoint(original_copy).build_model()


def test_missing_pieces_are_named(original_copy, tmp_path):
    (original_copy.parent / "all_config.yaml").unlink()
    with pytest.raises(UserError, match="all_config.yaml: no such file"):
        load_checkpoint(original_copy)
    with pytest.raises(UserError, match="step_9: no such checkpoint"):
        load_checkpoint(tmp_path / "step_9")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="meta.json: no such file"):
        load_checkpoint(tmp_path / "empty_dir")


@pytest.mark.parametrize("tensor", ["puzzle_emb.weights", "lm_head.weight"])
def test_a_nonfinite_tensor_is_never_saved_and_never_loaded(tensor, original_copy, tmp_path):
    source = load_checkpoint(ORIGINAL / "step_72385")
    model = source.build_model()
    save_checkpoint(tmp_path / "run" / "step_1", model, source.identifiers, step=1)
    with torch.no_grad():
        model.state_dict()[tensor][1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=rf"step_2/model.pt: {tensor} holds NaN or inf"):
        save_checkpoint(tmp_path / "run" / "step_2", model, source.identifiers, step=2)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_1"]  # the newest stays finite
    with pytest.raises(NonFiniteError, match=r"train_state.pt: train_step.ema.0 holds NaN"):
        save_checkpoint(tmp_path / "run" / "step_3", source.build_model(), source.identifiers, step=3,
                        train_state=TrainState(train_step={"ema": [torch.tensor([float("inf")])]}))
    # Written by something else (the original code, an older trm-kaggle): refused on load.
    state = torch.load(original_copy, weights_only=True)
    key = next(k for k in state if k.endswith(tensor))
    state[key][0, 0] = float("inf")
    torch.save(state, original_copy)
    with pytest.raises(NonFiniteError, match=rf"step_72385: {tensor} holds NaN or inf"):
        load_checkpoint(original_copy)


def test_a_table_without_row_names_never_starts_a_model_silently(original_copy):
    """init_from_checkpoint refuses unnamed rows; trm-submit's "fresh" starts every row from the
    table's statistics instead (its hidden tasks are new: no row could match them by name)."""
    from trm_kaggle.checkpoint import embedding_stats, init_from_checkpoint
    from trm_kaggle.model import TRM

    (original_copy.parent / "identifiers.json").unlink()
    ckpt = load_checkpoint(original_copy)
    assert ckpt.has_unnamed_rows
    model = TRM(ckpt.config)
    with pytest.raises(UserError, match="rows have no names"):
        init_from_checkpoint(model, ckpt, ["<blank>", "a", "b"] + [f"x{i}" for i in range(126)], "mean")
    copied, fresh = init_from_checkpoint(model, ckpt, ["<blank>", "a", "b"] + [f"x{i}" for i in range(126)], "mean",
                                         unnamed_rows="fresh")
    assert (copied, fresh) == (0, 128)
    mean, _ = embedding_stats(ckpt.state_dict["puzzle_emb.weights"])
    assert torch.equal(model.puzzle_emb.weights[1], mean) and torch.equal(model.puzzle_emb.weights[128], mean)


def test_a_directory_of_original_checkpoints_says_which_file_to_pass(original_copy):
    with pytest.raises(UserError, match=r"a directory of original-TRM checkpoints \(step_72385\); pass the file"):
        load_checkpoint(original_copy.parent)


def test_a_training_state_of_another_version_or_with_unknown_keys_is_refused(tmp_path):
    model = load_checkpoint(ORIGINAL / "step_72385").build_model()
    ids = load_checkpoint(ORIGINAL / "step_72385").identifiers
    path = save_checkpoint(tmp_path / "step_1", model, ids, step=1, train_state=TrainState(train_step={}, elapsed=3.0))
    assert load_checkpoint(path).train_state() == TrainState(train_step={}, elapsed=3.0)
    raw = torch.load(path / "train_state.pt", weights_only=True)
    assert raw["version"] == 1
    for changed, message in (({"version": 2}, "training state version 2"),
                             ({"emas": {}}, r"unknown training-state keys \['emas'\]")):
        with pytest.raises(UserError, match=message):
            ckpt_module.TrainState.from_dict(raw | changed, path / "train_state.pt")
