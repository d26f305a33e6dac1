"""trm-pretrain: presets, a CPU run, exact resume (also after SIGTERM), two ranks = one,
init_from an original checkpoint, keep_last."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trm_kaggle.checkpoint import load_checkpoint
from trm_kaggle.config import TINY_MODEL
from trm_kaggle.cli.pretrain import CONF_DIR, load_config, main
from trm_kaggle.dataset.build import build_dataset
from trm_kaggle.errors import UserError
from trm_kaggle.evaluate import load_tasks
from trm_kaggle.pretrain import PretrainRun, run_pretraining
from trm_kaggle.run_dir import latest_checkpoint
from trm_kaggle.submission import validate_submission
from trm_kaggle.train import TrainStep

from conftest import FIXTURES, REFERENCE_DATASET, mini_options

ORIGINAL_ARCH = ["arch.hidden_size=64", "arch.num_heads=4", "arch.L_layers=2", "arch.H_cycles=2", "arch.L_cycles=2",
                 "arch.expansion=4", "arch.puzzle_emb_ndim=64", "arch.puzzle_emb_len=16", "arch.halt_max_steps=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "data"
    build_dataset(mini_options(out))
    return out


def tiny(data: Path, run_dir: Path, *overrides: str):
    return load_config(["preset=cpu_tiny", f"data_path={data}", f"run_dir={run_dir}", *overrides])


def weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(step_dir).state_dict


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml")))
def test_every_preset_composes_and_validates(preset):
    config = load_config([f"preset={preset}", "data_path=d", "run_dir=r"])
    assert config.preset == preset and config.data_path == "d"


def test_the_presets_hold_their_recipes():
    paper = load_config(["preset=arc2_paper", "data_path=d", "run_dir=r"])
    assert (paper.global_batch_size, paper.lr, paper.puzzle_emb_lr, paper.lr_warmup_steps, paper.ema_rate) == \
        (768, 1e-4, 1e-2, 2000, 0.999)
    assert (paper.arch.H_cycles, paper.arch.L_cycles, paper.epochs) == (3, 4, 100_000)
    post = load_config(["preset=arc2_posttrain", "data_path=d", "run_dir=r", "lr=3e-4"])
    assert (post.global_batch_size, post.lr, post.puzzle_emb_lr, post.embeddings_only_fraction) == (384, 3e-4, 2e-2, 0.25)
    tiny_arch = load_config(["preset=cpu_tiny", "data_path=d", "run_dir=r"]).arch.model_dump()
    assert {k: tiny_arch[k] for k in TINY_MODEL if k != "forward_dtype"} == \
        {k: v for k, v in TINY_MODEL.items() if k != "forward_dtype"}  # the preset is the tests' tiny TRM


@pytest.mark.parametrize("overrides, message", [
    (["lr_warmup=5"], "lr_warmup"),
    (["+lrr=1"], "config: lrr: unknown key (misspelt?)"),
    (["arch.hiden_size=8"], "config: arch.hiden_size: unknown key (misspelt?); did you mean arch.hidden_size?"),
    (["preset=nope"], "config: preset=nope: no such preset (presets: arc2_dis, arc2_paper, arc2_posttrain, cpu_tiny, "),
    (["arch.dis_token_input=previous"], "config: arch: Value error, dis_token_input previous needs objective dis"),
    (["dis.targets=paths"], "config: dis.targets: Input should be 'path' or 'masking'"),
    (["beta2=1"], "config: beta2: Input should be less than 1"),
    (["arch.hiden_size=4"], "hiden_size"),
    (["global_batch_size=0"], "global_batch_size"),
    (["preset=arc3"], "arc3"),
    (["arch.H_cycles=0"], "config: arch.H_cycles: Input should be greater than or equal to 1"),
    (["arch.halt_exploration_prob=2"], "config: arch.halt_exploration_prob: Input should be less than or equal to 1"),
    (["arch.expansion=0"], "config: arch.expansion: Input should be greater than 0"),
    (["arch.hidden_size=30", "arch.num_heads=4"], "config: arch: Value error, hidden_size 30 is not divisible by"),
    (["arch.hidden_size=36", "arch.num_heads=4"], "rope needs an even head dimension, hidden_size / num_heads is 9"),
    (["max_step=8"], "config: max_step: unknown key (misspelt?); did you mean max_steps?"),
    (["--preset", "cpu_tiny"], "--preset: trm-pretrain takes key=value overrides, not flags: write preset=VALUE"),
    (["max_steps"], "config: max_steps: expected key=value"),
])
def test_a_bad_key_or_value_fails_clearly(overrides, message, capsys):
    code = main(["preset=cpu_tiny", "data_path=d", "run_dir=r", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_missing_required_key_is_named(capsys):
    assert main(["preset=cpu_tiny", "run_dir=r"]) == 2
    assert "data_path" in capsys.readouterr().err


def test_a_tiny_run_leaves_its_checkpoint_and_log(data, tmp_path):
    path = run_pretraining(tiny(data, tmp_path / "run", "max_steps=8"))
    assert path == tmp_path / "run" / "step_8"
    files = {p.name for p in path.iterdir()}
    assert {"model.pt", "train_state.pt", "config.yaml", "identifiers.json", "meta.json"} <= files
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 8 and '"step": 8' in log[-1]
    with pytest.raises(UserError, match="holds checkpoints"):
        run_pretraining(tiny(data, tmp_path / "run", "max_steps=8"))


# Deep Improvement Supervision (seed 001) on the tiny model: its per-example target orders ride
# in the carry, so resuming and sharding must keep them exactly as the TRM's carry.
DIS = ["arch.objective=dis", "arch.H_cycles=1", "arch.L_cycles=2", "arch.halt_max_steps=3"]


@pytest.mark.parametrize("objective", [[], DIS], ids=["trm", "dis"])
def test_resume_equals_an_uninterrupted_run(data, tmp_path, objective):
    run_pretraining(tiny(data, tmp_path / "straight", "max_steps=8", *objective))
    run_pretraining(tiny(data, tmp_path / "paused", "max_steps=4", *objective))
    run_pretraining(tiny(data, tmp_path / "paused", "max_steps=8", "resume=true", *objective))
    assert_same_weights(tmp_path / "straight" / "step_8", tmp_path / "paused" / "step_8")
    straight = torch.load(tmp_path / "straight" / "step_8" / "train_state.pt", weights_only=True)
    paused = torch.load(tmp_path / "paused" / "step_8" / "train_state.pt", weights_only=True)
    assert straight["sampler"] == paused["sampler"]
    for a, b in zip(straight["carries"], paused["carries"]):
        assert torch.equal(a["z_H"], b["z_H"]) and torch.equal(a["data"]["inputs"], b["data"]["inputs"])
        assert a["data"].keys() == b["data"].keys() == ({"dis_order"} if objective else set()) | a["data"].keys()
        assert all(torch.equal(a["data"][k], b["data"][k]) for k in a["data"])


def test_sigterm_checkpoints_and_the_run_resumes_exactly(data, tmp_path, monkeypatch):
    run_pretraining(tiny(data, tmp_path / "straight", "max_steps=8"))
    original = TrainStep.__call__

    def preempted_at_3(self, batch, train_trunk=None):
        metrics = original(self, batch, train_trunk)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(TrainStep, "__call__", preempted_at_3)
    # exit 75, not 0: a Kubernetes Indexed Job must not take a node stopped early for a finished one
    assert main(["preset=cpu_tiny", f"data_path={data}", f"run_dir={tmp_path / 'run'}", "max_steps=8"]) == 75
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "step_3"
    monkeypatch.setattr(TrainStep, "__call__", original)
    run_pretraining(tiny(data, tmp_path / "run", "max_steps=8", "resume=true"))
    assert_same_weights(tmp_path / "straight" / "step_8", tmp_path / "run" / "step_8")


def test_keep_last_keeps_the_newest(data, tmp_path):
    run_pretraining(tiny(data, tmp_path / "run", "max_steps=8", "checkpoint_every_steps=2", "keep_last=2"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.jsonl", "step_6", "step_8"]


@pytest.mark.parametrize("objective", [[], DIS], ids=["trm", "dis"])
def test_two_ranks_give_the_weights_of_one(data, tmp_path, objective):
    """torchrun with two gloo processes on the CPU against one process, same global batch."""
    evaluating = ["eval_every_epochs=1", "eval_num_aug=1", *objective]  # rank-split evaluation at step 15
    run_pretraining(tiny(data, tmp_path / "one", "max_steps=16", *evaluating))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "trm_kaggle.cli.pretrain",
                           "preset=cpu_tiny", f"data_path={data}", f"run_dir={tmp_path / 'two'}", "max_steps=16", *evaluating],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_weights(tmp_path / "one" / "step_16", tmp_path / "two" / "step_16", atol=1e-3)
    evals = [json.loads(line) for run in ("one", "two")
             for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if "pass@1" in line]
    assert len(evals) == 2 and evals[0]["pass@1000"] == evals[1]["pass@1000"]


def test_init_from_the_original_checkpoint_copies_rows_by_name(data, tmp_path, capsys):
    original = FIXTURES / "reference_trm" / "checkpoint" / "step_72385"
    other_seed = tmp_path / "data7"
    build_dataset(mini_options(other_seed, seed=7))
    run = PretrainRun(tiny(other_seed, tmp_path / "run", f"init_from={original}", *ORIGINAL_ARCH),
                      _single_process())
    out = capsys.readouterr().out
    source = load_checkpoint(original)
    names = {n: i for i, n in enumerate(source.identifiers)}
    mine = run.identifiers
    shared = [i for i, n in enumerate(mine) if i and n in names]
    assert len(shared) >= 32  # at least every original task's plain id
    assert f"{len(shared)} rows copied by name, {len(mine) - 1 - len(shared)} initialised (mean)" in out
    table, theirs = run.model.puzzle_emb.weights, source.state_dict["puzzle_emb.weights"]
    for i in shared:
        assert torch.equal(table[i], theirs[names[mine[i]]])
    fresh = [i for i in range(1, len(mine)) if i not in set(shared)]
    torch.testing.assert_close(table[fresh[0]], theirs[1:].mean(0))
    for key, value in source.state_dict.items():
        if key != "puzzle_emb.weights":
            assert torch.equal(run.model.state_dict()[key], value), key


def test_init_from_rows_without_names_is_refused_unless_named(data, tmp_path, capsys):
    """The original code saves no identifiers.json: its rows cannot silently start a run."""
    nameless = tmp_path / "original"
    nameless.mkdir()
    for name in ("step_72385", "all_config.yaml"):
        shutil.copy(FIXTURES / "reference_trm" / "checkpoint" / name, nameless / name)
    init = [f"init_from={nameless / 'step_72385'}", *ORIGINAL_ARCH]
    with pytest.raises(UserError, match="its 129 puzzle-embedding rows have no names .* pass init_identifiers=FILE "
                                        r".* or init_rows_by_position=true"):
        PretrainRun(tiny(data, tmp_path / "run", *init), _single_process())
    names = FIXTURES / "reference_trm" / "checkpoint" / "identifiers.json"
    run = PretrainRun(tiny(data, tmp_path / "run2", *init, f"init_identifiers={names}"), _single_process())
    assert "32 rows copied by name, 96 initialised (mean)" in capsys.readouterr().out  # every task's plain id
    theirs = load_checkpoint(FIXTURES / "reference_trm" / "checkpoint" / "step_72385").state_dict["puzzle_emb.weights"]
    first = run.identifiers[1]  # a task's plain id: a row of the original's too
    assert torch.equal(run.model.puzzle_emb.weights[1], theirs[json.loads(names.read_text()).index(first)])
    PretrainRun(tiny(REFERENCE_DATASET, tmp_path / "run3", *init, "init_rows_by_position=true"), _single_process())
    assert "128 rows copied by position, 0 initialised" in capsys.readouterr().out


def test_init_from_a_different_architecture_is_refused(data, tmp_path):
    original = FIXTURES / "reference_trm" / "checkpoint" / "step_72385"
    with pytest.raises(UserError, match="arch.hidden_size is 64, this run's is 32"):
        PretrainRun(tiny(data, tmp_path / "run", f"init_from={original}"), _single_process())


def _single_process():
    from trm_kaggle import distributed
    return distributed.Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_steps_counted_into_the_lr_schedule_and_embeddings_phase(data, tmp_path):
    run = PretrainRun(tiny(data, tmp_path / "run", "embeddings_only_fraction=0.5", "total_steps=8"), _single_process())
    assert run.step_fn.schedule.embeddings_only_steps == 4 and run.total_steps == 8
    before = {k: v.clone() for k, v in run.model.named_parameters()}
    run.stop_step = 4
    run.train()
    assert all(torch.equal(before[k], v) for k, v in run.model.named_parameters())
    assert np.isfinite(run.step_fn.embeddings.param_groups[0]["lr"])


def test_every_key_has_one_default_and_can_be_overridden():
    """The defaults live only in PretrainConfig: every key composes to its default and
    takes an override from the command line, however deep."""
    from trm_kaggle.config import ArchConfig, PretrainConfig

    config = load_config(["data_path=d", "run_dir=r", "preset=cpu_tiny"])
    preset = yaml.safe_load((CONF_DIR / "preset" / "cpu_tiny.yaml").read_text())
    for name, info in PretrainConfig.model_fields.items():
        if not info.is_required() and name not in preset:
            assert getattr(config, name) == info.default, name
        assert info.description, f"{name} has no description"
    assert all(info.description for info in ArchConfig.model_fields.values())
    assert load_config(["data_path=d", "run_dir=r", "arch.rope_theta=500", "beta2=0.9"]).arch.rope_theta == 500


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml")))
def test_a_preset_sets_only_what_differs_from_the_defaults(preset):
    from trm_kaggle.config import PretrainConfig

    def leaves(tree: dict, prefix: str = ""):
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(prefix + key, value)]

    defaults = PretrainConfig(preset="-", data_path="-", run_dir="-").model_dump()
    flat = dict(leaves(defaults))
    set_here = dict(leaves(yaml.safe_load((CONF_DIR / "preset" / f"{preset}.yaml").read_text())))
    assert [key for key, value in set_here.items() if key != "preset" and flat[key] == value] == []


def test_evaluation_during_training_logs_pass_at_k(data, tmp_path):
    run_pretraining(tiny(data, tmp_path / "run", "max_steps=16", "eval_every_epochs=1", "eval_num_aug=1"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "pass@1" in r]
    assert len(evals) == 1 and 0 <= evals[0]["pass@1"] <= 1 and "kaggle_pass@2" in evals[0]
    step_dir = tmp_path / "run" / f"step_{evals[0]['step']}"
    # Beside the checkpoint: the evaluation's complete submission and its pass@K, hashed in meta.json.
    submission = json.loads((step_dir / "eval" / "submission.json").read_text())
    assert validate_submission(submission, load_tasks(data)) == []
    scores = json.loads((step_dir / "eval" / "pass_at_k.json").read_text())
    assert scores["step"] == evals[0]["step"] and scores["per_task"]["1"] == evals[0]["pass@1"]
    assert scores["per_output"]["2"] == evals[0]["kaggle_pass@2"] and scores["num_aug"] == 1
    meta = json.loads((step_dir / "meta.json").read_text())
    assert {"eval/submission.json", "eval/pass_at_k.json"} <= set(meta["sha256"])
    load_checkpoint(step_dir)  # the hashes verify
    (step_dir / "eval" / "pass_at_k.json").write_text("{}")
    with pytest.raises(UserError, match="pass_at_k.json: SHA-256 differs"):
        load_checkpoint(step_dir)
    final = tmp_path / "run" / "step_16"
    assert final != step_dir and not (final / "eval").exists()  # no evaluation at that step


def test_a_divergent_run_stops_with_exit_2_and_its_newest_checkpoint_stays_finite(data, tmp_path, capsys):
    """lr 1e20: the first non-finite step ends the run before it is applied; nothing after the
    last finite step is saved, and that checkpoint is what resume and init_from take."""
    code = main(["preset=cpu_tiny", f"data_path={data}", f"run_dir={tmp_path / 'run'}", "lr=1e20",
                 "puzzle_emb_lr=1e20", "lr_warmup_steps=1", "max_steps=50", "checkpoint_every_steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and "not finite, the run diverged" in err and "Traceback" not in err
    assert "nothing saved: the newest checkpoint is" in err
    saved = sorted((tmp_path / "run").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    assert saved, "the run diverged before its first step"
    assert str(saved[-1]) in err
    assert all(torch.isfinite(t).all() for t in load_checkpoint(saved[-1]).state_dict.values())


def test_metrics_log_each_optimizers_learning_rate_through_the_embeddings_only_phase(data, tmp_path):
    run_pretraining(tiny(data, tmp_path / "run", "total_steps=4", "embeddings_only_fraction=0.5", "lr_warmup_steps=0"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr_trunk" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and "lr" not in steps[0]
    assert [r["lr_trunk"] for r in steps] == [0.0, 0.0, 1e-3, 1e-3]  # the trunk trains from step 3
    assert all(r["lr_puzzle_emb"] == 1e-2 for r in steps)


def test_resume_says_what_it_resumed_or_that_nothing_was_there(data, tmp_path, capsys):
    run_pretraining(tiny(data, tmp_path / "typo", "max_steps=2", "resume=true"))
    said = capsys.readouterr().out
    assert f"no complete checkpoint (step_N/ with meta.json) in {(tmp_path / 'typo').resolve()}" in said
    run_pretraining(tiny(data, tmp_path / "typo", "max_steps=2", "resume=true"))
    said = capsys.readouterr().out
    assert "resumed from" in said and "nothing to train" in said and "no complete checkpoint" not in said


def test_help_lists_every_key_with_its_default_and_meaning(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for preset in (CONF_DIR / "preset").glob("*.yaml"):
        assert preset.stem in shown.splitlines()[0]
    assert "  max_steps=null\n" in shown and "  arch.hidden_size=" in shown and "  distill.weight=0.25\n" in shown
    assert "  data_path=(required)\n" in shown
    lines = shown.splitlines()
    assert lines[lines.index("  lr=0.0001") + 1].strip() == "Trunk learning rate (AdamATan2) after warm-up."
