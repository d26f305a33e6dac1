"""A tiny TRM learns real ARC tasks on the CPU through the whole path: dataset -> sampler ->
model -> ACT loss -> AdamATan2 + sign-SGD -> eval -> vote -> pass@K.

The slowest test of the suite (~1.5 min on 2 cores): it is the one that shows the pieces,
each faithful on its own, also train together."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.config import tiny_model_config
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.dataset.sampler import TrainSampler
from trm_kaggle.evaluate import load_tasks, vote
from trm_kaggle.inference import predict
from trm_kaggle.model import TRM
from trm_kaggle.train import Schedule, TrainStep
from trm_kaggle.vote import pass_at_k

from conftest import ARC_MINI

# Real ARC-AGI-2 training tasks with small outputs (3x3 to 9x9): 11 demonstration pairs.
TASKS = ["00576224", "017c7c7b", "0520fde7", "0692e18c"]
STEPS, BATCH = 400, 8


def few_tasks_dataset(tmp_path: Path) -> Path:
    challenges = json.loads(Path(f"{ARC_MINI}_mini_train_challenges.json").read_text())
    solutions = json.loads(Path(f"{ARC_MINI}_mini_train_solutions.json").read_text())
    Path(f"{tmp_path}/x_few_challenges.json").write_text(json.dumps({t: challenges[t] for t in TASKS}))
    Path(f"{tmp_path}/x_few_solutions.json").write_text(json.dumps({t: solutions[t] for t in TASKS}))
    out = tmp_path / "data"
    build_dataset(BuildOptions(source=str(tmp_path / "x"), subsets=("few",), test_set="few", out=out,
                               num_aug=0, translation=False, progress=False))
    return out


def train_exact_rate(model: TRM, data: Path) -> float:
    """pass@1 over the demonstration pairs, through the evaluator's predict and vote."""
    split = load_split(data, "train")
    ranked = vote(split, load_identifiers(data), predict(model, split, 16, progress=False))
    demos = {t.id: [p.output for p in t.train] for t in load_tasks(data)}
    return pass_at_k(ranked, demos, ks=(1,)).per_output[1]


def test_a_tiny_trm_learns_real_tasks(tmp_path):
    torch.manual_seed(0)
    data = few_tasks_dataset(tmp_path)
    split = load_split(data, "train")
    assert split.num_examples == 11
    config = tiny_model_config(arc_shape(split.metadata.num_puzzle_identifiers), hidden_size=64, puzzle_emb_ndim=64,
                               expansion=4.0, H_cycles=1, halt_max_steps=1)
    model = TRM(config)
    assert train_exact_rate(model, data) == 0
    step = TrainStep(model, Schedule(lr=3e-3, warmup_steps=10, total_steps=STEPS, min_ratio=0.05),
                     global_batch_size=BATCH)
    sampler = TrainSampler(split, BATCH, seed=0)
    table_before = model.puzzle_emb.weights.clone()
    first = step(sampler.next_batch())
    for _ in range(STEPS - 1):
        last = step(sampler.next_batch())
    assert last["lm_loss"] < first["lm_loss"] / 5
    assert last["accuracy"] / last["count"] > 0.9
    assert not torch.equal(model.puzzle_emb.weights[1:5], table_before[1:5])  # sign-SGD moved the rows
    assert torch.equal(model.puzzle_emb.weights[0], table_before[0])  # the blank row never trains
    assert train_exact_rate(model, data) >= 3 / 11
