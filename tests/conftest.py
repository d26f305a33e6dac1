"""Shared fixtures: the real artefacts in tests/fixtures and a dataset built from the same
tasks as the original builder's `reference_trm/dataset_mini`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import settings

from trm_kaggle.dataset.build import BuildOptions, build_dataset

# No deadlines: a per-example time limit is a timing assertion, and the first call of a numba
# function (compiling or loading its cache) is slow on a busy CI machine.
settings.register_profile("trm", deadline=None)
settings.load_profile("trm")

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_DATASET = FIXTURES / "reference_trm" / "dataset_mini"
ARC_MINI = FIXTURES / "arc_mini" / "arc"  # Kaggle-style prefix: arc_{subset}_challenges.json


def mini_options(out: Path, **changes) -> BuildOptions:
    """The options the original builder was run with for dataset_mini (see its README)."""
    fields = dict(source=str(ARC_MINI), subsets=("mini_train", "mini_eval"), test_set="mini_eval",
                  out=out, num_aug=3, seed=42, progress=False)
    return BuildOptions(**(fields | changes))


@pytest.fixture(scope="session")
def mini_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "mini"
    build_dataset(mini_options(out))
    return out


DELETE = object()  # with_change's marker: delete the key instead of setting it


def with_change(obj, path: tuple, value):
    """A deep copy of a JSON-like `obj` with the value at `path` replaced (or deleted)."""
    obj = copy.deepcopy(obj)
    *parents, last = path
    node = obj
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return obj
