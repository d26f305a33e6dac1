"""TRM-Planner (seed 000): the teacher cache's search, selection, storage and resume, and the
student's distillation term, as options of the one loss and training step."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.cli.build_data import main as build_main
from trm_kaggle.cli.pretrain import load_config
from trm_kaggle.cli.teacher_cache import main as cache_main
from trm_kaggle.config import DistillConfig, tiny_model_config
from trm_kaggle.dataset.format import dataset_shape, load_identifiers
from trm_kaggle.distributed import Dist
from trm_kaggle.errors import UserError
from trm_kaggle.losses import IGNORE_LABEL, KD_TOKENS, ACTLoss, Distillation, hard_kd_loss, soft_kd_loss
from trm_kaggle.model import TRM
from trm_kaggle.planner.cache import read_manifest, shard_path
from trm_kaggle.planner.distill import Distiller, TeacherEntries
from trm_kaggle.planner.search import SearchSettings, advance, initial_beam, search
from trm_kaggle.planner.select import js_distances, select_mmr
from trm_kaggle.pretrain import PretrainRun
from trm_kaggle.train import Schedule, TrainStep, build_train_step

CPU = Dist(0, 1, 0, torch.device("cpu"))
SMALL = ["--rollouts", "3", "--beam", "2", "--max-steps", "3", "--keep", "2", "--chunk", "8", "--batch-size", "4",
         "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planner") / "nqueens"
    assert build_main(["--source", "nqueens", "--out", str(out), "--train-size", "20", "--test-size", "4"]) == 0
    return out


def tiny_teacher(data: Path, where: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = TRM(tiny_model_config(dataset_shape(data), puzzle_emb_ndim=0, puzzle_emb_len=0, halt_max_steps=4))
    save_checkpoint(where, model, load_identifiers(data), step=1)
    return where


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    return tiny_teacher(data, tmp_path_factory.mktemp("teacher") / "step_1")


# ---------------------------------------------------------------------------- losses by hand

def test_hard_kd_is_stablemax_cross_entropy_against_the_teachers_tokens():
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]])  # (1, 2, 3)
    tokens = torch.tensor([[0, IGNORE_LABEL]])
    s = [2.0, 1.0, 0.5]  # s(x): x + 1 for x ≥ 0, 1/(1 − x) below
    assert hard_kd_loss(logits, tokens).item() == pytest.approx(-math.log(2.0 / sum(s)))
    assert hard_kd_loss(logits, torch.full((1, 2), IGNORE_LABEL)).item() == 0.0  # no entry: no KD


def test_soft_kd_is_t_squared_kl_of_stablemax_distributions():
    student = torch.tensor([[[1.0, 0.0, -1.0]]])
    teacher = torch.tensor([[[0.0, 1.0, -torch.inf]]])  # a top-k store: the last class absent
    mask = torch.tensor([[True]])
    temperature = 2.0
    q = torch.tensor([1.5, 1.0, 1 / 1.5]); q = q / q.sum()  # StableMax(student / 2)
    p = torch.tensor([1.0, 1.5, 0.0]); p = p / p.sum()      # StableMax(teacher / 2)
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()) if pi > 0)
    assert soft_kd_loss(student, teacher, mask, temperature).item() == pytest.approx(expected)
    assert soft_kd_loss(student, student, mask, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert soft_kd_loss(student, teacher, ~mask, 1.0).item() == 0.0


def test_distillation_off_leaves_the_loss_as_it_was_and_on_adds_w_times_kd():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 5))
    carry = type("C", (), {"halted": torch.ones(2, dtype=torch.bool), "steps": torch.ones(2, dtype=torch.int32),
                           "data": {"labels": labels, KD_TOKENS: torch.randint(0, 4, (2, 5))}})()
    outputs = {"logits": logits, "q_halt_logits": torch.zeros(2)}
    plain, metrics = ACTLoss()(outputs, carry)
    with_kd, kd_metrics = ACTLoss(distillation=Distillation(weight=0.25))(outputs, carry)
    assert "kd_loss" not in metrics
    torch.testing.assert_close(with_kd, plain + 0.25 * hard_kd_loss(logits, carry.data[KD_TOKENS]).sum())
    assert kd_metrics["kd_loss"] == hard_kd_loss(logits, carry.data[KD_TOKENS]).sum().detach()


# ---------------------------------------------------------------------------- search and selection

def test_mmr_takes_the_best_then_the_diverse_candidate_over_the_near_copy():
    best = torch.tensor([[5.0, 0.0, 0.0]])
    logits = torch.stack([best, best + torch.tensor([0.1, 0.0, 0.0]), torch.tensor([[0.0, 0.0, 5.0]])])  # (3, 1, 3)
    distances = js_distances(logits, torch.tensor([True]))
    assert distances[0, 1] < 0.01 < distances[0, 2] and torch.allclose(distances, distances.T)
    scores = torch.tensor([0.9, 0.6, 0.58])  # normalised 1, 0.0625, 0
    assert select_mmr(scores, distances, keep=2, weight=0.7) == [0, 2]  # diversity beats the near-copy
    assert select_mmr(scores, distances, keep=2, weight=1.0) == [0, 1]  # score only: the near-copy
    assert select_mmr(scores, distances, keep=5, weight=0.7) == [0, 2, 1]  # at most all of them
    assert js_distances(logits, torch.tensor([False])).abs().sum() == 0  # no supervised position: 0


def test_a_frozen_beam_state_is_carried_unchanged(data, teacher):
    from trm_kaggle.checkpoint import load_checkpoint
    from trm_kaggle.dataset.format import load_split
    from trm_kaggle.dataset.sampler import example_puzzles, gather

    model = load_checkpoint(teacher).build_model()
    split = load_split(data, "train")
    batch = {k: v for k, v in gather(split, example_puzzles(split), torch.arange(2).numpy()).items()
             if k != "example_index"}
    s = SearchSettings(rollouts=1, beam=6, max_steps=1, noise=0.05, step_penalty=-1.0)  # later steps score higher
    beam = advance(model, initial_beam(model, batch, 6), batch, s, torch.Generator().manual_seed(0))
    assert beam.alive.sum(1).tolist() == [2, 2] and beam.frozen.sum(1).tolist() == [1, 1]
    frozen = beam.frozen & beam.alive
    before = {name: getattr(beam, name)[frozen].clone() for name in ("z_H", "z_L", "steps", "score", "logits")}
    for _ in range(3):
        beam = advance(model, beam, batch, s, torch.Generator().manual_seed(1))
        still = beam.frozen & beam.alive & (beam.steps == 1)
        assert still.sum() == 2  # the step-1 halt copies stay in the beam ...
        for name, value in before.items():  # ... exactly as they were
            assert torch.equal(getattr(beam, name)[still], value), name
    assert int(beam.steps.max()) == 4  # while the continuing states kept stepping


def test_search_gives_r_candidates_per_example_and_noise_makes_them_differ(data, teacher):
    from trm_kaggle.checkpoint import load_checkpoint
    from trm_kaggle.dataset.format import load_split
    from trm_kaggle.dataset.sampler import example_puzzles, gather

    model = load_checkpoint(teacher).build_model()
    split = load_split(data, "train")
    batch = {k: v for k, v in gather(split, example_puzzles(split), torch.arange(3).numpy()).items()
             if k != "example_index"}
    noisy = search(model, batch, SearchSettings(rollouts=4, beam=2, max_steps=3, noise=0.5), torch.Generator().manual_seed(0))
    assert noisy.logits.shape == (3, 4, 64, 3) and noisy.steps.shape == (3, 4)
    assert ((noisy.steps >= 1) & (noisy.steps <= 3)).all()
    assert not torch.allclose(noisy.logits[:, 0], noisy.logits[:, 1])
    still = search(model, batch, SearchSettings(rollouts=2, beam=2, max_steps=3, noise=0.0))
    torch.testing.assert_close(still.logits[:, 0], still.logits[:, 1])  # σ = 0: identical rollouts


# ---------------------------------------------------------------------------- the cache

def test_the_cache_is_compact_and_a_resumed_build_equals_an_uninterrupted_one(data, teacher, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(whole), *SMALL]) == 0
    printed = capsys.readouterr().out
    manifest = read_manifest(whole)
    assert manifest.complete and manifest.chunks == 3 and manifest.summary["examples"] == 20
    assert "20 examples, 40 entries (2 per example)" in printed and "bytes per example" in printed
    shard = torch.load(shard_path(whole, 0), weights_only=True)
    assert shard["tokens"].dtype == torch.uint8 and shard["tokens"].shape == (8, 2, 64)
    assert shard["examples"].tolist() == list(range(8)) and "logits" not in shard  # keyed by example, tokens only
    # interrupted after the first chunk: the other shards and the completion are missing
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    for c in (1, 2):
        shard_path(resumed, c).unlink()
    (resumed / "cache.json").write_text(json.dumps(json.loads((whole / "cache.json").read_text()) | {"complete": False}))
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(resumed), *SMALL]) == 0
    assert "1 resumed" in capsys.readouterr().out
    for c in range(3):
        a, b = torch.load(shard_path(whole, c), weights_only=True), torch.load(shard_path(resumed, c), weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stored_logits_are_supervised_positions_only_in_bf16_or_top_k(data, teacher, tmp_path):
    for logits, key in (("supervised-bf16", "logits"), ("topk:2", "topk_values")):
        out = tmp_path / logits.replace(":", "")
        assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(out), "--logits", logits,
                           *SMALL]) == 0
        shard = torch.load(shard_path(out, 0), weights_only=True)
        assert shard[key].dtype == torch.bfloat16 and len(shard[key]) == 2 * int(shard["supervised"].sum())
        assert shard[key].shape[1] == (3 if key == "logits" else 2)
        entries = TeacherEntries.load(out, data, vocab_size=3)
        first = entries.entry_logits(0, 0)  # its argmax is the cached token at the supervised positions
        assert first.shape == (int(entries.supervised[0]), 3)


def test_a_cache_is_refused_for_another_dataset_or_teacher(data, teacher, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(cache), *SMALL]) == 0
    other = tmp_path / "other"
    assert build_main(["--source", "nqueens", "--out", str(other), "--train-size", "20", "--test-size", "4",
                       "--seed", "1"]) == 0
    with pytest.raises(UserError, match="built from another dataset"):
        TeacherEntries.load(cache, other, vocab_size=3)
    capsys.readouterr()
    other_teacher = tiny_teacher(data, tmp_path / "t2" / "step_1", seed=5)
    assert cache_main(["--teacher", str(other_teacher), "--data", str(data), "--out", str(cache), *SMALL]) == 2
    assert "another teacher_sha256" in capsys.readouterr().err
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "x"), "--logits",
                       "top3", *SMALL]) == 2
    assert "--logits" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the student

def test_sample_one_draws_an_eligible_entry_per_example_and_skips_examples_without_one(data, teacher, tmp_path):
    cache = tmp_path / "cache"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(cache), *SMALL]) == 0
    entries = TeacherEntries.load(cache, data, vocab_size=3)
    entries.loss[:] = 0.1
    entries.loss[0, 0], entries.loss[1] = 9.0, 9.0  # example 0: only entry 1 is good; example 1: none
    distiller = Distiller(entries, DistillConfig(cache=str(cache), quality=0.5))
    step = TrainStep(TRM(tiny_model_config(dataset_shape(data), puzzle_emb_ndim=0, puzzle_emb_len=0)), Schedule(), 4)
    examples = torch.tensor([0, 1, 2, -1])
    seen = set()
    for step.step in range(20):
        entry, has = distiller.choose(step, examples)
        assert has.tolist() == [True, False, True, False] and entry[0] == 1
        seen.add(int(entry[2]))
    assert seen == {0, 1}  # both of example 2's entries get drawn
    step.step = 3
    again = [distiller.choose(step, examples)[0] for _ in range(2)]
    assert torch.equal(*again)  # the same step draws the same entries (resume, ranks)
    from trm_kaggle.dataset.format import load_split
    from trm_kaggle.dataset.sampler import example_puzzles, gather
    split = load_split(data, "train")
    batch = gather(split, example_puzzles(split), examples.clamp_min(0).numpy()) | {"example_index": examples}
    kd = distiller.add_entries(step, batch)[KD_TOKENS]
    assert (kd[1] == IGNORE_LABEL).all() and (kd[3] == IGNORE_LABEL).all() and (kd[0] != IGNORE_LABEL).any()


def test_a_student_run_starts_from_its_teacher_and_logs_kd(data, teacher, tmp_path):
    cache = tmp_path / "cache"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(cache), "--logits",
                       "supervised-bf16", *SMALL]) == 0
    config = load_config(["preset=cpu_tiny", f"data_path={data}", f"run_dir={tmp_path / 'run'}", "arch.puzzle_emb_ndim=0",
                          "arch.puzzle_emb_len=0", "arch.halt_max_steps=4", "global_batch_size=4", "max_steps=3",
                          f"distill.cache={cache}", "distill.mode=soft", "distill.quality=100"])
    logs = []
    run = PretrainRun(config, CPU, log=logs.append)
    assert any(f"init_from {teacher.resolve()}" in line for line in logs)
    metrics = run.train_step(next_batch(run))
    assert metrics["kd_loss"] > 0
    tokens_only = tmp_path / "tokens"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(tokens_only), *SMALL]) == 0
    with pytest.raises(UserError, match="needs logits"):
        Distiller.of(DistillConfig(cache=str(tokens_only), mode="soft"), data, 3)


def next_batch(run: PretrainRun) -> dict[str, torch.Tensor]:
    return run.sampler.next_batch()


def test_distillation_with_two_ranks_draws_what_one_does(data, teacher, tmp_path):
    cache = tmp_path / "cache"
    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(cache), *SMALL]) == 0
    distiller = Distiller(TeacherEntries.load(cache, data, 3), DistillConfig(cache=str(cache), quality=100))
    model = TRM(tiny_model_config(dataset_shape(data), puzzle_emb_ndim=0, puzzle_emb_len=0))
    examples = torch.arange(4)
    one = build_train_step(model, Schedule(), 4, CPU, distiller=distiller)
    halves = [build_train_step(model, Schedule(), 4, Dist(r, 2, r, torch.device("cpu")), distiller=distiller)
              for r in (0, 1)]
    for s in (one, *halves):
        s.step = 7
    whole = distiller.choose(one, examples)[0]
    assert torch.equal(torch.cat([distiller.choose(h, examples[2 * r:2 * r + 2])[0] for r, h in enumerate(halves)]),
                       whole)


def test_the_distillation_yardstick_runs_teacher_cache_student_and_control(tmp_path, data):
    """benchmarks/distill.py end to end at a toy size: a teacher, its cache, a student and the
    compute-matched control from the same teacher, in one JSON with the cache's size."""
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "benchmarks" / "distill.py"
    done = subprocess.run([sys.executable, str(script), "--source", "nqueens", "--preset", "nqueens_trm",
                           "--teacher-minutes", "0.05", "--minutes", "0.05", "--max-steps", "2", "--eval-every", "2",
                           "--rollouts", "2", "--beam", "2", "--search-steps", "2", "--quality", "100",
                           "--data", str(data), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                           "arch.hidden_size=32", "global_batch_size=8", "eval_batch_size=8"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "distill_nqueens_nqueens_trm_cpu.json").read_text())
    control, student = record["curves"]
    assert control["preset"] == "continued (no KD)" and student["preset"].startswith("student (hard KD")
    assert student["config"]["distill"]["cache"] and not control["config"]["distill"]["cache"]
    assert control["config"]["init_from"] == student["config"]["init_from"] == record["teacher"]["checkpoint"]
    assert record["cache"]["summary"]["examples"] == 20 and record["cache"]["bytes_per_example"] > 64
    assert "continued (no KD)" in record["comparison"][student["preset"]]["against"]


def test_two_ranks_build_the_cache_one_process_builds(data, teacher, tmp_path):
    """torchrun with two gloo processes on the CPU: chunk N on rank N mod 2, the same shards."""
    import os
    import subprocess
    import sys

    assert cache_main(["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "one"), *SMALL]) == 0
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "trm_kaggle.cli.teacher_cache",
                           "--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "two"), *SMALL],
                          capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_manifest(tmp_path / "two").complete
    for c in range(3):
        a, b = (torch.load(shard_path(tmp_path / run, c), weights_only=True) for run in ("one", "two"))
        assert all(torch.equal(a[k], b[k]) for k in a)
