"""trm-submit's parts: discovery on Kaggle's layouts, the budget plan, the inference order, LoRA."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.config import TINY_MODEL, tiny_model_config
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.format import load_split
from trm_kaggle.errors import UserError
from trm_kaggle.kaggle import paths
from trm_kaggle.kaggle.budget import Measured, plan_finetune, plan_lines
from trm_kaggle.kaggle.submit import Report
from trm_kaggle.kaggle.infer import round_order
from trm_kaggle.kaggle.lora import add_lora, merged_state_dict
from trm_kaggle.model import TRM

from submit_helpers import hidden_tasks, tiny_bundle, write_challenges


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.mark.parametrize("competition, dataset", [
    ("arc-prize-2025", "trm-arc"),                                         # 2025: /kaggle/input/<slug>/
    ("competitions/arc-prize-2026-arc-agi-2", "datasets/you/trm-arc"),      # 2026 layout
])
def test_discovery_finds_the_challenges_and_the_bundle(competition, dataset, bundle, tmp_path):
    root = tmp_path / "input"
    write_challenges(hidden_tasks(2), root / competition)
    shutil.copytree(bundle / "model", root / dataset / "model")
    assert paths.find_challenges(root) == root / competition / "arc-agi_test_challenges.json"
    assert paths.find_model(root, tmp_path) == root / dataset / "model"


def test_a_zipped_bundle_is_unpacked_into_scratch(bundle, tmp_path):
    root, scratch = tmp_path / "input", tmp_path / "scratch"
    (root / "trm-arc").mkdir(parents=True)
    scratch.mkdir()
    with zipfile.ZipFile(root / "trm-arc" / "bundle.zip", "w") as zf:
        for f in (bundle / "model").iterdir():
            zf.write(f, f"model/{f.name}")
    with zipfile.ZipFile(root / "trm-arc" / "wheels.zip", "w") as zf:  # beside it, as kaggle's zip mode leaves it
        zf.writestr("trm_kaggle-0.1.0-py3-none-any.whl", b"a wheel")
    found = paths.find_model(root, scratch)
    assert found.is_relative_to(scratch) and (found / "meta.json").is_file()
    assert [p.name for p in scratch.iterdir()] == ["bundle-bundle"]  # the wheels were not unpacked


def test_discovery_errors_name_what_is_missing(bundle, tmp_path):
    with pytest.raises(UserError, match="no arc-agi_test_challenges.json below it"):
        paths.find_challenges(tmp_path)
    with pytest.raises(UserError, match="no packaged model below it"):
        paths.find_model(tmp_path, tmp_path)
    for name in ("a", "b"):
        shutil.copytree(bundle / "model", tmp_path / name / "model")
    with pytest.raises(UserError, match="2 packaged models"):
        paths.find_model(tmp_path, tmp_path)


def test_wheels_for_another_python_are_named_but_not_refused(tmp_path):
    """trm_kaggle already imports here, so a mismatch is a warning, not fallback answers."""
    (tmp_path / "numpy-2.0.0-cp39-cp39-manylinux_2_17_x86_64.whl").write_bytes(b"")
    assert re.search(r"wheels built for cp39, this is Python 3\.\d+: trm_kaggle imports, so the run goes on",
                     paths.python_mismatch(tmp_path))
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / f"numpy-2.0.0-{here}-{here}-manylinux_2_17_x86_64.whl").write_bytes(b"")
    assert paths.python_mismatch(tmp_path) is None


MEASURED = Measured(step_s_embeddings=0.5, step_s_full=1.0, infer_s_per_example_step=0.001, startup_s=30)


def test_auto_steps_leave_inference_its_predicted_time():
    # 10 s hand-over + (30 s start-up + 10,000 examples x 16 ACT steps x 1 ms / 4 devices) x 1.25
    plan = plan_finetune(MEASURED, now=0, deadline=10_000, examples=10_000, act_steps=16, devices=4,
                         embeddings_only_fraction=0.25, steps="auto", max_steps=100_000)
    assert plan.predicted_inference_s == pytest.approx(10 + (30 + 40) * 1.25)
    assert plan.finetune_end == pytest.approx(10_000 - plan.predicted_inference_s - plan.reserve_s)
    mean_step = 0.25 * 0.5 + 0.75 * 1.0
    assert plan.steps == int(plan.finetune_end / mean_step)
    assert plan.embeddings_only_steps == plan.steps // 4
    assert plan.predicted_finetune_s <= plan.finetune_end


def test_auto_steps_are_capped_and_never_negative():
    capped = plan_finetune(MEASURED, 0, 1e6, 100, 16, 1, 0.0, "auto", max_steps=15_000)
    assert capped.steps == 15_000 and "capped" in capped.why
    late = plan_finetune(MEASURED, 0, 10, 10_000, 16, 1, 0.0, "auto", max_steps=15_000)
    assert late.steps == 0
    fixed = plan_finetune(MEASURED, 0, 100, 100, 16, 1, 0.0, 500, max_steps=15_000)
    assert fixed.steps == 500 and "stop early" in fixed.why


def test_a_budget_too_small_says_so_with_signed_times():
    late = plan_finetune(MEASURED, now=81, deadline=97, examples=10_000, act_steps=16, devices=1,
                         embeddings_only_fraction=0.0, steps="auto", max_steps=15_000)
    lines = plan_lines(late, start=0)
    assert "+-" not in " ".join(lines) and "must end by -" in lines[1] and "(before the start)" in lines[1]
    assert "budget is too small on this device" in lines[2]
    assert len(plan_lines(plan_finetune(MEASURED, 0, 1e6, 100, 16, 1, 0.0, "auto", 15_000), 0)) == 2
    report = Report(out=Path("s.json"), start=0, deadline=97, plan=late, test_inputs=15, finetune_started=True)
    assert report.verdict() == ("FAILED: budget too small on this device: no fine-tune step and no inference chunk "
                                "fit; the submission holds fallbacks only (15 test inputs)")


def test_inference_order_gives_every_test_input_its_original_first(tmp_path):
    tasks = hidden_tasks(3)
    build_dataset(BuildOptions(source="x", subsets=("h",), test_set="h", out=tmp_path / "d", num_aug=4,
                               progress=False), {"h": tasks})
    split = load_split(tmp_path / "d", "test")
    order = round_order(split, num_aug=2)
    inputs = sum(len(t.test) for t in tasks)
    assert len(order) == 3 * inputs and len(set(order.tolist())) == len(order)
    puzzles = np.searchsorted(split.puzzle_indices, order, side="right") - 1
    originals = puzzles[:inputs]
    assert set(originals.tolist()) == set(split.group_indices[:-1].tolist())  # round 0: each task's original


def test_lora_starts_at_the_packaged_model_and_merges_back():
    torch.manual_seed(0)
    config = tiny_model_config(arc_shape(3))
    plain, lora = TRM(config).eval(), TRM(config).eval()
    lora.load_state_dict(plain.state_dict())
    trainable = add_lora(lora, rank=4)
    assert trainable and all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
    batch = {"inputs": torch.randint(0, 12, (2, 900)), "labels": torch.zeros(2, 900, dtype=torch.long),
             "puzzle_identifiers": torch.tensor([1, 2])}
    out = lambda m: m(m.initial_carry(batch), batch)[1]["logits"]  # noqa: E731
    torch.testing.assert_close(out(lora), out(plain))  # B = 0: exactly the packaged model
    with torch.no_grad():
        for p in trainable:
            p.normal_(0, 0.1)
    merged = TRM(config).eval()
    merged.load_state_dict(merged_state_dict(lora))
    torch.testing.assert_close(out(merged), out(lora), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out(merged), out(plain))


def test_the_packages_fine_tune_recipe_applies_unless_given_explicitly(bundle, tmp_path):
    import yaml

    from trm_kaggle.kaggle.options import FINETUNE_KEYS, SubmitOptions, with_package_defaults
    from trm_kaggle.package import FINETUNE_RECIPE

    recipe = yaml.safe_load((bundle / "model" / "config.yaml").read_text())
    written = FINETUNE_RECIPE | {"objective": "trm"}  # a TRM package fine-tunes as a TRM
    assert recipe["finetune"] == written and recipe["model"]["hidden_size"] == TINY_MODEL["hidden_size"]
    assert list(written) == list(FINETUNE_KEYS)  # every setting trm-submit takes from a package
    packaged = with_package_defaults(SubmitOptions(out=tmp_path / "s.json"), recipe["finetune"])
    assert {k: getattr(packaged, k) for k in FINETUNE_KEYS} == written
    recipe["finetune"] |= {"lr": 5e-4, "mode": "full"}
    given = SubmitOptions(out=tmp_path / "s.json", mode="lora")
    merged = with_package_defaults(given, paths.package_finetune(bundle / "model") | recipe["finetune"])
    assert (merged.lr, merged.mode, merged.batch_size) == (5e-4, "lora", 384)
    with pytest.raises(UserError, match="unknown key lrr"):
        with_package_defaults(given, {"lrr": 1.0})
    assert with_package_defaults(given, {"warmup_steps": 7}).lr_warmup_steps == 7  # a package made before the rename
    with pytest.raises(UserError, match="warmup_steps and lr_warmup_steps both set"):
        with_package_defaults(given, {"warmup_steps": 7, "lr_warmup_steps": 9})
    with pytest.raises(UserError, match=r"^config.yaml finetune: beta2: Input should be less than 1$"):
        with_package_defaults(given, {"beta2": 1.5})


def test_a_compiled_model_that_fails_hands_inference_to_the_eager_one(tmp_path, caplog):
    from trm_kaggle.kaggle.infer import predict_chunk

    tasks = hidden_tasks(2)
    build_dataset(BuildOptions(source="x", subsets=("h",), test_set="h", out=tmp_path / "d", num_aug=1,
                               progress=False), {"h": tasks})
    split = load_split(tmp_path / "d", "test")
    model = TRM(tiny_model_config(arc_shape(split.metadata.num_puzzle_identifiers))).eval()

    class BrokenCompile(torch.nn.Module):
        config = model.config
        initial_carry = model.initial_carry

        def forward(self, *args):
            raise RuntimeError("ptxas not found")

    rows = np.arange(split.num_examples)
    predictions, batch, runner = predict_chunk(BrokenCompile(), model, split, rows, 4, torch.device("cpu"))
    assert runner is model and len(predictions.example_index) == len(rows)
    assert "compiled inference failed (RuntimeError: ptxas not found): predicting eagerly" in caplog.text
    with pytest.raises(RuntimeError):  # the eager model failing is a real failure
        predict_chunk(BrokenCompile(), BrokenCompile(), split, rows, 4, torch.device("cpu"))


STOPPED_WORKER = """
import sys, time
from trm_kaggle.kaggle import workers

def child(quiet_lock):
    if quiet_lock:
        workers.no_named_semaphores()
    from tqdm import tqdm
    for _ in tqdm(range(1), disable=True):  # even a disabled bar takes tqdm's lock
        pass
    time.sleep(60)

if __name__ == "__main__":
    processes = workers.start(child, [(sys.argv[1] == "1",)])
    time.sleep(2)
    workers.stop(processes, "test")
"""


@pytest.mark.parametrize("quiet_lock", [True, False])
def test_a_stopped_worker_leaks_no_semaphore(quiet_lock, tmp_path):
    """A worker stopped by the supervisor (SIGTERM) after a progress bar: with
    no_named_semaphores nothing is left for the resource tracker; without (the negative
    control) it warns of a leaked semaphore at exit."""
    script = tmp_path / "stopped_worker.py"
    script.write_text(STOPPED_WORKER)
    done = subprocess.run([sys.executable, str(script), "1" if quiet_lock else "0"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("leaked semaphore" in done.stderr) != quiet_lock, done.stderr
