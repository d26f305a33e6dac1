"""Crop, undo, vote and pass@K on real ARC grids, as the original evaluator does (TRM_NOTES)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ARC_MINI
from trm_kaggle.arc import kaggle_paths, load_challenges
from trm_kaggle.augment import (COLOUR_OFFSET, EOS, PAD, SEQ_LEN, apply_variant, encode_grid, random_cmap,
                                variant_name)
from trm_kaggle.errors import UserError
from trm_kaggle.submission import score_submission, validate_submission
from trm_kaggle.vote import Votes, build_submission, decode_predictions, pass_at_k, sigmoid



@pytest.fixture(scope="module")
def tasks():
    """The 12 real ARC-AGI-2 evaluation tasks of the fixture, with their solutions."""
    return load_challenges(*kaggle_paths(str(ARC_MINI), "mini_eval"))


def solutions_of(tasks) -> dict[str, list[np.ndarray]]:
    return {t.id: [p.output for p in t.test] for t in tasks}


def noisy_encoding(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The grid encoded at (0, 0) with every PAD cell (all beyond the EOS frame) set to a random
    colour token: what a model may predict there must not change the crop."""
    seq = encode_grid(grid)
    pad = seq == PAD
    seq[pad] = rng.integers(COLOUR_OFFSET, 12, size=int(pad.sum()))
    return seq


@pytest.mark.parametrize("t", range(8))
def test_decode_undoes_every_dihedral_and_colour_map(tasks, t):
    rng = np.random.default_rng(t)
    grid = tasks[10].test[1].output            # 20270e3b: 8x8; use a non-square one too
    wide = tasks[11].test[0].output            # 20a9e565: 2x21
    names, seqs = [], []
    for g, task_id in ((grid, tasks[10].id), (wide, tasks[11].id)):
        cmap = random_cmap(rng)
        seqs.append(noisy_encoding(apply_variant(g, t, cmap), rng))
        names.append(variant_name(task_id, t, cmap))
    decoded = decode_predictions(np.stack(seqs), names)
    np.testing.assert_array_equal(decoded[0], grid)
    np.testing.assert_array_equal(decoded[1], wide)


def test_decode_plain_task_id_is_identity_and_accepts_int64_tokens(tasks):
    grid = tasks[0].test[0].output
    tokens = encode_grid(grid)[None].astype(np.int64)    # what torch's argmax gives
    [decoded] = decode_predictions(tokens, [tasks[0].id])
    np.testing.assert_array_equal(decoded, grid)


def test_empty_crop_is_none_and_keeps_alignment():
    grid = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    all_pad = np.zeros(SEQ_LEN, np.uint8)
    eos_corner = encode_grid(grid)
    eos_corner[0] = EOS                       # the top-left cell is not a colour: nothing to crop
    tokens = np.stack([all_pad, encode_grid(grid), eos_corner])
    decoded = decode_predictions(tokens, ["a", "b", "c"])
    assert decoded[0] is None and decoded[2] is None
    np.testing.assert_array_equal(decoded[1], grid)


def test_decode_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        decode_predictions(np.zeros((2, 899), np.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="2 predictions but 1 variant names"):
        decode_predictions(np.zeros((2, SEQ_LEN), np.uint8), ["a"])
    with pytest.raises(ValueError, match="tokens must be"):
        decode_predictions(np.full((1, SEQ_LEN), 12), ["a"])
    with pytest.raises(UserError, match="variant name 'a|||t9|||0123456789'"):
        decode_predictions(encode_grid(np.ones((2, 2), np.uint8))[None], ["a|||t9|||0123456789"])


A = np.array([[1, 1]], np.uint8)
B = np.array([[2]], np.uint8)
C = np.array([[1], [1]], np.uint8)   # the same cells as A, another shape: a different grid


def test_votes_rank_by_count_before_confidence():
    votes = Votes()
    for q in (-5.0, -5.0, -5.0):
        votes.add("t", 0, A, q)
    for q in (5.0, 5.0):
        votes.add("t", 0, B, q)
    votes.add("t", 0, C, 9.0)
    assert [g.tolist() for g in votes.ranked()[("t", 0)]] == [A.tolist(), B.tolist(), C.tolist()]
    best = votes.candidates("t", 0)[0]
    assert best.count == 3 and best.mean_confidence == pytest.approx(sigmoid(-5.0))


def test_votes_break_count_ties_by_mean_sigmoid_of_q_halt():
    votes = Votes()
    votes.add("t", 0, A, -1.0)      # A is seen first, mean sigmoid 0.269
    votes.add("t", 0, A, -1.0)
    votes.add("t", 0, B, 3.0)       # B: mean of sigmoid(3), sigmoid(-3) = 0.5
    votes.add("t", 0, B, -3.0)
    ranked = votes.ranked()[("t", 0)]
    np.testing.assert_array_equal(ranked[0], B)
    np.testing.assert_array_equal(ranked[1], A)


def test_votes_final_tie_break_is_first_seen_and_deterministic():
    def ranking(order):
        votes = Votes()
        for grid in order:
            votes.add("t", 0, grid, 0.0)
        return [g.tolist() for g in votes.ranked()[("t", 0)]]

    assert ranking([B, A]) == ranking([B, A]) == [B.tolist(), A.tolist()]
    assert ranking([A, B]) == [A.tolist(), B.tolist()]


def test_votes_are_per_test_input_and_skip_empty_crops():
    votes = Votes()
    votes.add_many(["t", "t", "t", "u"], [0, 1, 1, 0], [A, None, B, None], [0.0, 0.0, 0.0, 0.0])
    ranked = votes.ranked()
    assert set(ranked) == {("t", 0), ("t", 1)}      # ("u", 0) had only an empty crop
    assert Votes().ranked() == {}                   # a fresh evaluation starts empty
    with pytest.raises(ValueError, match="NaN"):
        votes.add("t", 0, A, float("nan"))


def test_sigmoid_is_stable_for_large_logits():
    assert sigmoid(1e4) == 1.0 and sigmoid(-1e4) == 0.0 and sigmoid(0.0) == 0.5


def test_pass_at_k_both_definitions_differ_with_uneven_test_counts():
    solutions = {"one": [A], "three": [A, B, C]}
    ranked = {("one", 0): [A, B],          # solved at rank 0
              ("three", 0): [B, A],        # solved at rank 1
              ("three", 1): [A],           # not solved
              }                            # ("three", 2): no candidate at all
    result = pass_at_k(ranked, solutions, ks=(1, 2, 5))
    assert result.per_task == pytest.approx({1: (1 + 0) / 2, 2: (1 + 1 / 3) / 2, 5: (1 + 1 / 3) / 2})
    assert result.per_output == pytest.approx({1: 1 / 4, 2: 2 / 4, 5: 2 / 4})


def test_pass_at_k_rejects_candidates_for_unknown_test_inputs():
    with pytest.raises(ValueError, match="not a test input"):
        pass_at_k({("one", 1): [A]}, {"one": [A]})


def test_build_submission_is_complete_with_duplicate_and_fallback(tasks):
    first, two_tests = tasks[0], tasks[3]             # 0934a4d8 (1 test input), 13e47133 (2)
    ranked = {(first.id, 0): [A, B, C], (two_tests.id, 1): [B]}
    sub = build_submission(tasks, ranked)
    assert list(sub) == [t.id for t in tasks]
    assert all(len(sub[t.id]) == len(t.test) for t in tasks)
    assert sub[first.id][0] == {"attempt_1": A.tolist(), "attempt_2": B.tolist()}
    assert sub[two_tests.id][1] == {"attempt_1": B.tolist(), "attempt_2": B.tolist()}
    fallback = two_tests.test[0].input.tolist()
    assert sub[two_tests.id][0] == {"attempt_1": fallback, "attempt_2": fallback}
    assert validate_submission(sub, tasks) == []


def test_build_submission_rejects_votes_for_unknown_tasks(tasks):
    with pytest.raises(ValueError, match="'nope'"):
        build_submission(tasks, {("nope", 0): [A]})


def test_decode_vote_submit_end_to_end(tasks):
    """Every variant of each solution plus a wrong vote per test input: the vote recovers the
    solutions, pass@1 is 1 both ways and the submission scores 1."""
    rng = np.random.default_rng(0)
    seqs, names, keys = [], [], []
    for task in tasks:
        for i, pair in enumerate(task.test):
            for t in range(8):
                cmap = random_cmap(rng)
                seqs.append(noisy_encoding(apply_variant(pair.output, t, cmap), rng))
                names.append(variant_name(task.id, t, cmap))
                keys.append((task.id, i))
            seqs.append(noisy_encoding(pair.input, rng))   # a wrong answer, one vote
            names.append(task.id)
            keys.append((task.id, i))
    votes = Votes()
    votes.add_many([k[0] for k in keys], [k[1] for k in keys], decode_predictions(np.stack(seqs), names),
                   rng.normal(size=len(keys)))
    ranked = votes.ranked()
    result = pass_at_k(ranked, solutions_of(tasks))
    assert result.per_task[1] == result.per_output[1] == 1.0
    assert score_submission(build_submission(tasks, ranked), solutions_of(tasks)).score == 1.0
