"""Augmentations and the 900-token encoding: properties over random grids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trm_kaggle.augment import (
    DIHEDRAL_INVERSE, EOS, IDENTITY_CMAP, apply_variant, crop, crop_many, decode, dihedral,
    encode_grid, encode_grids, inverse_cmap, inverse_dihedral, parse_variant_name, random_cmap,
    undo_variant, variant_name)


@st.composite
def grids(draw, max_side: int = 30) -> np.ndarray:
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return draw(arrays(np.uint8, (h, w), elements=st.integers(0, 9)))


@st.composite
def placed_grids(draw) -> tuple[np.ndarray, tuple[int, int]]:
    grid = draw(grids())
    r = draw(st.integers(0, 30 - grid.shape[0]))
    c = draw(st.integers(0, 30 - grid.shape[1]))
    return grid, (r, c)


cmaps = st.permutations(list(range(1, 10))).map(lambda p: np.array([0, *p], dtype=np.uint8))


def reference_encoding(grid: np.ndarray, r: int, c: int) -> np.ndarray:
    """The format as DESIGN §4 states it, written the slow obvious way."""
    canvas = np.zeros((30, 30), dtype=np.uint8)
    h, w = grid.shape
    canvas[r:r + h, c:c + w] = grid + 2
    if r + h < 30:
        canvas[r + h, c:c + w] = EOS
    if c + w < 30:
        canvas[r:r + h, c + w] = EOS
    return canvas.ravel()


@given(placed_grids())
def test_decode_inverts_encode_anywhere_on_the_canvas(placed):
    grid, offset = placed
    assert np.array_equal(decode(encode_grid(grid, offset)), grid)


@given(placed_grids())
def test_encoding_matches_the_stated_format(placed):
    grid, (r, c) = placed
    assert np.array_equal(encode_grid(grid, (r, c)), reference_encoding(grid, r, c))


@given(grids(), st.integers(0, 7))
def test_inverse_dihedral_undoes_each_transform(grid, t):
    assert np.array_equal(inverse_dihedral(dihedral(grid, t), t), grid)


def test_dihedral_numbering_is_the_originals():
    a = np.arange(6).reshape(2, 3)
    expected = [a, np.rot90(a), np.rot90(a, 2), np.rot90(a, 3), np.fliplr(a), np.flipud(a), a.T,
                np.fliplr(np.rot90(a))]
    for t, e in enumerate(expected):
        assert np.array_equal(dihedral(a, t), e), t
        assert np.array_equal(dihedral(dihedral(a, t), DIHEDRAL_INVERSE[t]), a), t


@given(grids(), st.integers(0, 7), cmaps)
def test_a_variant_maps_back_to_the_original(grid, t, cmap):
    assert np.array_equal(undo_variant(apply_variant(grid, t, cmap), t, cmap), grid)


@given(cmaps)
def test_colour_maps_round_trip_and_keep_background(cmap):
    assert np.array_equal(inverse_cmap(cmap)[cmap], IDENTITY_CMAP)
    name = variant_name("abc", 3, cmap)
    task_id, t, parsed = parse_variant_name(name)
    assert (task_id, t) == ("abc", 3) and np.array_equal(parsed, cmap)


def test_random_cmap_keeps_zero_and_permutes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        cmap = random_cmap(rng)
        assert cmap[0] == 0 and sorted(cmap.tolist()) == list(range(10))


@pytest.mark.parametrize("name", ["a|||t8|||0123456789", "a|||t1|||1023456789", "a|||t1|||0123456788"])
def test_bad_variant_names_are_rejected(name):
    with pytest.raises(ValueError, match="variant"):
        parse_variant_name(name)


@settings(max_examples=200)
@given(grids(), st.data())
def test_crop_recovers_the_grid_with_noise_after_the_eos_frame(grid, data):
    """A model's prediction: the grid at (0, 0), its EOS frame, then anything at all."""
    h, w = grid.shape
    seq = encode_grid(grid).reshape(30, 30).copy()
    noise = data.draw(arrays(np.uint8, (30, 30), elements=st.integers(0, 11)))
    outside = np.ones((30, 30), dtype=bool)
    outside[:h + 1, :w + 1] = False
    seq[outside] = noise[outside]
    assert np.array_equal(crop(seq.ravel()), grid)


def test_crop_of_a_sequence_without_a_grid_is_empty():
    assert crop(np.zeros(900, np.uint8)).shape == (0, 0)


@given(st.lists(st.tuples(placed_grids(), st.integers(0, 7), cmaps), min_size=1, max_size=6))
def test_batched_encoding_equals_one_by_one(items):
    """encode_grids (numba, used by the builder) against numpy transforms + the slow encoder."""
    bank = [g for (g, _), _, _ in items]
    sizes = np.array([g.size for g in bank])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ts = np.array([t for _, t, _ in items])
    cmap_rows = np.stack([c for _, _, c in items])
    transformed = [apply_variant(g, t, c) for g, t, c in zip(bank, ts, cmap_rows)]
    offsets = np.array([[min(r, 30 - tg.shape[0]), min(c, 30 - tg.shape[1])]
                        for ((_, (r, c)), _, _), tg in zip(items, transformed)])
    out = np.zeros((len(items) + 1, 900), np.uint8)
    ids = np.append(np.arange(len(items)), -1)
    encode_grids(np.concatenate([g.ravel() for g in bank]), starts, np.array([g.shape[0] for g in bank]),
                 np.array([g.shape[1] for g in bank]), ids, np.append(ts, 0),
                 np.vstack([cmap_rows, IDENTITY_CMAP]), np.vstack([offsets, [0, 0]]), out)
    for n, tg in enumerate(transformed):
        assert np.array_equal(out[n], reference_encoding(tg, *offsets[n])), n
    assert not out[-1].any()
    hs, ws = np.zeros(len(out), np.int64), np.zeros(len(out), np.int64)
    crop_many(out, hs, ws)
    for n, tg in enumerate(transformed):
        if tuple(offsets[n]) == (0, 0):
            assert (hs[n], ws[n]) == tg.shape
