"""ARC-format tasks generated from simple rule families: a held-out check a CPU can run.

Real ARC tasks are too hard for minutes of CPU training, so the held-out check (heldout.py,
issue 16) pretrains on many tasks of a few rule families and submits unseen tasks of the same
families. Each task draws its rule's parameter once, then 2-4 demonstration pairs and one test
input of random small grids (3..6 a side). The rule cannot be read off a test input: a model
must learn it from the task's demonstrations into its puzzle-embedding rows, as TRM learns a
task, and a model that has not (zero fine-tune steps, another task's rows) fails.

    recolour   a per-task colour map of a 2-3 colour palette onto distinct colours (any of
               1..9); background 0 stays. Every input holds the whole palette, so the
               demonstrations show the map for every colour the test input has.
    shift      the content moved by a per-task (dr, dc) in -2..2 (not 0, 0), background 0 moved
               in, the grid's size kept; each grid has colours of its own.
    dihedral   a per-task dihedral transform (1..7 of augment.dihedral). Slower to learn: the
               held-out check's 2-minute model does not solve it.

Every test output differs from its input.

    trm-build-data --source synthetic:recolour,shift --holdout 16 --num-aug 8 --out data/synthetic

Subset `training` has --train-size tasks (default 400), `evaluation` --test-size (default
100); task ids are `{family}-{subset}-{index:04d}`, the families taking turns. Every draw comes
from (--seed, subset, index), so a task is the same whatever else is built. The dataset is
then built exactly as ARC's (augmentations, translation, --holdout), on an 8×8 canvas (64
tokens) unless --canvas says otherwise.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from trm_kaggle.arc import Pair, Query, Task
from trm_kaggle.augment import NUM_DIHEDRAL, dihedral
from trm_kaggle.errors import UserError

PREFIX = "synthetic:"
SUBSET_SIZES = {"training": 400, "evaluation": 100}  # default tasks per subset
MIN_SIDE, MAX_SIDE = 3, 6    # grid height and width
CANVAS = 8  # default canvas side: the largest grid, its EOS row and column, and one cell to translate in
MIN_DEMOS, MAX_DEMOS = 2, 4  # demonstration pairs per task
COLOURS = np.arange(1, 10)   # 0 is the background
MAX_SHIFT = 2                # shift: rows and columns moved, each way


def is_synthetic(source: str) -> bool:
    return source.startswith(PREFIX)


def random_grid(rng: np.random.Generator, palette: np.ndarray, must_hold: Sequence[int]) -> np.ndarray:
    """An h x w grid of background and `palette` colours holding each of `must_hold` at least once."""
    h, w = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2)
    grid = rng.choice(np.concatenate([[0], palette]), size=(h, w)).astype(np.uint8)
    cells = rng.choice(h * w, size=len(must_hold), replace=False)
    grid.flat[cells] = must_hold
    return grid


def recolour_rule(rng: np.random.Generator) -> Callable[[np.random.Generator], tuple]:
    """A colour map of a 2-3 colour palette onto distinct colours (any of 1..9); background 0 stays."""
    palette = rng.choice(COLOURS, size=int(rng.integers(2, 4)), replace=False)
    table = np.arange(10, dtype=np.uint8)
    while np.array_equal(table[palette], palette):  # a map that changes something
        table[palette] = rng.choice(COLOURS, size=len(palette), replace=False)

    def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        grid = random_grid(rng, palette, palette)
        return grid, table[grid]
    return pair


def dihedral_rule(rng: np.random.Generator) -> Callable[[np.random.Generator], tuple]:
    """One of the 7 non-identity dihedral transforms (augment.dihedral's numbering)."""
    t = int(rng.integers(1, NUM_DIHEDRAL))
    palette = rng.choice(COLOURS, size=3, replace=False)

    def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        while True:  # a grid the transform leaves as it is would not show the rule
            grid = random_grid(rng, palette, ())
            out = dihedral(grid, t)
            if out.shape != grid.shape or not np.array_equal(grid, out):
                return grid, out
    return pair


def shift_rule(rng: np.random.Generator) -> Callable[[np.random.Generator], tuple]:
    """The grid's content moved by (dr, dc), each -2..2, not both 0 (24 rules: with 8, two
    held-out tasks would often share one, and another task's rows would answer right by
    chance); cells moved in from outside
    are background 0, cells moved out are lost. The grid keeps its size. Each grid has colours
    of its own: a task-wide palette would let a fine-tuned trunk tell the task (and so its
    shift) from the test input's colours alone, without its embedding rows."""
    dr, dc = 0, 0
    while dr == dc == 0:
        dr, dc = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))

    def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        while True:
            grid = random_grid(rng, rng.choice(COLOURS, size=3, replace=False), ())
            out = np.zeros_like(grid)
            h, w = grid.shape
            out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = \
                grid[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
            if not np.array_equal(grid, out):
                return grid, out
    return pair


FAMILIES: dict[str, Callable[[np.random.Generator], Callable]] = {
    "recolour": recolour_rule,
    "shift": shift_rule,
    "dihedral": dihedral_rule,
}


def parse_families(source: str) -> list[str]:
    """The families a `synthetic:a,b` source names; UserError for an unknown or empty list."""
    names = [n.strip() for n in source.removeprefix(PREFIX).split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if not names or unknown:
        problem = f"unknown family {unknown[0]!r}" if unknown else "no family named"
        raise UserError(f"--source {source}: {problem}; families: {', '.join(FAMILIES)}")
    if len(set(names)) != len(names):
        raise UserError(f"--source {source}: a family is named twice")
    return names


def make_task(family: str, task_id: str, rng: np.random.Generator) -> Task:
    pair = FAMILIES[family](rng)
    demos = [pair(rng) for _ in range(int(rng.integers(MIN_DEMOS, MAX_DEMOS + 1)))]
    test_input, test_output = pair(rng)
    return Task(id=task_id, train=[Pair(input=i, output=o) for i, o in demos],
                test=[Query(input=test_input, output=test_output)])


def generate(source: str, subset: str, count: int, seed: int) -> list[Task]:
    """`count` tasks of subset `subset`, the families taking turns (task i is of family
    i mod F), each drawn from (seed, subset, i)."""
    families = parse_families(source)
    if subset not in SUBSET_SIZES:
        raise UserError(f"{source}: subsets are {', '.join(SUBSET_SIZES)}; got {subset!r}")
    if count < 1:
        raise UserError(f"{source}: {subset} needs at least 1 task, got {count}")
    stream = list(SUBSET_SIZES).index(subset)
    tasks = []
    for i in range(count):
        family = families[i % len(families)]
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, i]))
        tasks.append(make_task(family, f"{family}-{subset}-{i:04d}", rng))
    return tasks


def generate_subsets(source: str, subsets: Sequence[str], sizes: dict[str, int] | None,
                     seed: int) -> dict[str, list[Task]]:
    """Each named subset's tasks: `sizes[subset]` of them, else SUBSET_SIZES'."""
    sizes = sizes or {}
    return {subset: generate(source, subset, sizes.get(subset, SUBSET_SIZES.get(subset, 0)), seed)
            for subset in subsets}


def describe(source: str, subsets: dict[str, list[Task]]) -> dict:
    """What build.json records of a generated source (build.json's `seed` draws the tasks)."""
    counts = ", ".join(f"{len(tasks)} {name}" for name, tasks in subsets.items())
    families = parse_families(source)
    return {"source": source, "version": "generated", "title": f"{PREFIX}{','.join(families)} ({counts} tasks)",
            "families": families}
