"""A dataset that is not ARC: 64 tokens, a vocabulary of 3, one puzzle identifier (the
original layout, as its Sudoku builder writes it). trm-pretrain and trm-eval take the model's
shape from its dataset.json and score it by exact match per ACT step, with no ARC step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm_kaggle.checkpoint import load_checkpoint
from trm_kaggle.cli.eval import main as eval_main
from trm_kaggle.cli.pretrain import load_config
from trm_kaggle.errors import UserError
from trm_kaggle.evaluate import ExactMatch, dataset_kind, evaluate
from trm_kaggle.pretrain import run_pretraining

SEQ_LEN, VOCAB = 64, 3


def write_split(split_dir: Path, inputs: np.ndarray) -> None:
    """One example per puzzle and per group, every puzzle on the blank row 0, as the
    original's Sudoku builder; the label is the input with 1 and 2 swapped."""
    split_dir.mkdir(parents=True)
    labels = np.where(inputs == 1, 2, 1).astype(np.uint8)
    n = len(inputs)
    arrays = {"inputs": inputs, "labels": labels, "puzzle_identifiers": np.zeros(n, np.int32),
              "puzzle_indices": np.arange(n + 1, dtype=np.int32), "group_indices": np.arange(n + 1, dtype=np.int32)}
    for name, array in arrays.items():
        np.save(split_dir / f"all__{name}.npy", array)
    metadata = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": VOCAB,
                "seq_len": SEQ_LEN, "num_puzzle_identifiers": 1, "total_groups": n, "mean_puzzle_examples": 1.0,
                "total_puzzles": n, "sets": ["all"]}
    (split_dir / "dataset.json").write_text(json.dumps(metadata))


@pytest.fixture(scope="module")
def flips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "flips"
    rng = np.random.default_rng(0)
    write_split(out / "train", rng.integers(1, 3, (48, SEQ_LEN), dtype=np.uint8))
    write_split(out / "test", rng.integers(1, 3, (12, SEQ_LEN), dtype=np.uint8))
    (out / "identifiers.json").write_text(json.dumps(["<blank>"]))
    return out


def pretrain(data: Path, run_dir: Path, *overrides: str) -> Path:
    return run_pretraining(load_config(["preset=cpu_tiny", f"data_path={data}", f"run_dir={run_dir}",
                                        "eval_every_epochs=1", *overrides]))


@pytest.mark.parametrize("embedding", [[], ["arch.puzzle_emb_ndim=0", "arch.puzzle_emb_len=0"]],
                         ids=["puzzle-embedding", "no-puzzle-embedding"])
def test_a_64_token_dataset_trains_and_reports_exact_accuracy(flips, tmp_path, capsys, embedding):
    assert dataset_kind(flips) == "exact_match"
    last = pretrain(flips, tmp_path / "run", "max_steps=12", *embedding)
    ckpt = load_checkpoint(last)
    assert (ckpt.config.seq_len, ckpt.config.vocab_size, ckpt.config.num_puzzle_identifiers) == (SEQ_LEN, VOCAB, 1)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_token_accuracy" in r]
    assert [r["step"] for r in evals] == [6, 12]  # 48 examples, batch 8: an epoch is 6 steps
    scores = json.loads((last / "eval" / "exact_match.json").read_text())
    assert scores["step"] == 12 and scores["examples"] == 12 and len(scores["exact_accuracy"]) == 2
    assert scores["exact_accuracy"][-1] == evals[-1]["eval_exact_accuracy"]

    assert eval_main(["--ckpt", str(last), "--data", str(flips), "--quiet"]) == 0
    out = capsys.readouterr().out
    # The EMA averages, as the run's own evaluation: the same numbers.
    assert "12 predictions (EMA averages)" in out and f"exact accuracy {scores['exact_accuracy'][-1]:.4f}" in out
    assert f"token accuracy {scores['token_accuracy'][-1]:.4f}" in out
    assert "exact accuracy by ACT step: 1:" in out and " 2:" in out
    assert eval_main(["--ckpt", str(last), "--data", str(flips), "--quiet", "--live-weights"]) == 0
    assert "12 predictions (live weights)" in capsys.readouterr().out

    before = {p.name: p.read_bytes() for p in (last / "eval").iterdir()}
    assert pretrain(flips, tmp_path / "run", "max_steps=12", "resume=true", *embedding) == last  # nothing to do
    assert {p.name: p.read_bytes() for p in (last / "eval").iterdir()} == before  # and nothing lost


def test_exact_match_counts_labelled_tokens_per_step():
    from trm_kaggle.inference import Predictions

    exact = np.array([[True, False, False, False], [True, True, True, False]])
    tokens = np.array([[1.0, 0.5, 0.5, 0.0], [1.0, 1.0, 1.0, 0.5]], np.float32)
    scores = ExactMatch.of(Predictions(np.zeros((4, 2)), np.zeros(4), np.arange(4), step_exact=exact,
                                       step_token_accuracy=tokens))
    assert scores.exact_accuracy == [0.25, 0.75] and scores.token_accuracy == [0.5, 0.875]
    assert scores.metrics() == {"eval_exact_accuracy": 0.75, "eval_token_accuracy": 0.875}


def test_a_model_of_another_shape_is_refused_in_one_line(flips, mini_dataset, tmp_path):
    arc = pretrain(mini_dataset, tmp_path / "arc", "max_steps=1", "eval_every_epochs=null")
    ckpt = load_checkpoint(arc)
    before = (ckpt.identifiers, ckpt.config)
    with pytest.raises(UserError, match="seq_len 900, the dataset's is 64"):
        evaluate(ckpt, flips)
    with pytest.raises(UserError, match="was trained on data with vocab_size 12, this dataset.s is 3"):
        pretrain(flips, tmp_path / "init", "max_steps=1", f"init_from={arc}")
    evaluate(ckpt, mini_dataset, limit=2, progress=False, dtype="bfloat16")
    assert (ckpt.identifiers, ckpt.config) == before  # evaluate works on a copy (it used to set the dtype)


def test_the_dataset_decides_the_shape_not_the_config():
    with pytest.raises(UserError, match="arch.seq_len: set by the dataset"):
        load_config(["preset=cpu_tiny", "data_path=d", "run_dir=r", "arch.seq_len=64"])


def test_init_from_keeps_the_one_row_of_a_one_identifier_dataset(flips, tmp_path):
    """On a dataset whose only identifier is <blank>, row 0 is the embedding that trains."""
    from trm_kaggle.distributed import Dist
    from trm_kaggle.pretrain import PretrainRun

    import torch

    last = pretrain(flips, tmp_path / "run", "max_steps=3", "eval_every_epochs=null")
    trained = load_checkpoint(last).state_dict["puzzle_emb.weights"][0]
    assert trained.abs().sum() > 0
    run = PretrainRun(load_config(["preset=cpu_tiny", f"data_path={flips}", f"run_dir={tmp_path / 'init'}",
                                   f"init_from={last}"]), Dist(0, 1, 0, torch.device("cpu")))
    assert torch.equal(run.model.puzzle_emb.weights[0], trained)


def test_bad_tokens_and_identifiers_are_one_line_errors(flips, tmp_path):
    import shutil

    from trm_kaggle.dataset.format import load_split
    from trm_kaggle.dataset.sampler import TrainSampler

    bad = tmp_path / "bad"
    shutil.copytree(flips, bad)
    labels = np.load(bad / "train" / "all__labels.npy")
    labels[5, 7] = VOCAB
    np.save(bad / "train" / "all__labels.npy", labels)
    sampler = TrainSampler(load_split(bad, "train"), 48, seed=0)
    with pytest.raises(UserError, match=r"train/all__labels.npy: example 5, position 7: token 3 is outside 0..2"):
        sampler.next_batch()
    np.save(bad / "test" / "all__puzzle_identifiers.npy", np.full(12, 1, np.int32))
    with pytest.raises(UserError, match=r"test/all__puzzle_identifiers.npy: identifier 1 is outside 0..0"):
        load_split(bad, "test")


def test_trm_package_refuses_a_model_that_cannot_answer_arc(flips, tmp_path):
    from trm_kaggle.package import export_model

    last = pretrain(flips, tmp_path / "run", "max_steps=1", "eval_every_epochs=null")
    # 64 tokens would be an 8x8 ARC canvas (dataset/synthetic.py's), but 3 token values are not ARC's 12
    with pytest.raises(UserError, match="vocab_size 3, ARC.s is 12: the Kaggle notebook runs ARC tasks"):
        export_model(last, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
