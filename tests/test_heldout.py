"""The held-out check (trm_kaggle/heldout.py): trm-build-data -> trm-pretrain -> trm-package ->
trm-submit -> trm-score on generated ARC-format tasks the model never saw solves most of them,
and each negative control — rows matched to the wrong variants, the vote's inverse
augmentation off by one transform, zero fine-tune steps — scores near zero with the same
package. A silent learning bug would fail the first test; a check that cannot fail would fail
one of the others.

About 5 minutes on 2 cores: one pretraining, four submissions."""

from __future__ import annotations

import json

import pytest

from trm_kaggle import heldout
from trm_kaggle.heldout import MOST, NEAR_ZERO, Score, problems

# ~5 minutes alone on 2 cores; twice that under load, past the suite's 15-minute default.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout")
    return heldout.run_check(out, controls=True), out


def test_the_real_path_solves_most_held_out_tasks(scores):
    by_name, out = scores
    assert by_name["real"].total == heldout.HELD_OUT
    assert by_name["real"].value >= MOST, by_name
    assert json.loads((out / "scores.json").read_text())["scores"]["real"]["correct"] == by_name["real"].correct


@pytest.mark.parametrize("control", [c.name for c in heldout.CONTROLS])
def test_each_negative_control_scores_near_zero(scores, control):
    by_name, _ = scores
    assert by_name[control].value <= NEAR_ZERO, by_name
    assert by_name["real"].correct - by_name[control].correct >= 10, by_name


def test_the_verdict_fails_loudly_on_either_side():
    good = {"real": Score(16, 16), "no_finetune": Score(0, 16)}
    assert problems(good) == []
    assert "learning is broken" in problems(good | {"real": Score(11, 16)})[0]
    assert "no_finetune solved 3/16" in problems(good | {"no_finetune": Score(3, 16)})[0]
