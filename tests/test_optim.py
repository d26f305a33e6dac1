"""optim.py against updates computed by hand in float64 numpy, on tiny tensors."""

from __future__ import annotations

import copy
import io
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trm_kaggle.distributed import teardown
from trm_kaggle.layers import PuzzleEmbedding
from trm_kaggle.optim import EMA, AdamATan2, SignSGDEmbedding, lr_at, set_lr

BETAS, WD = (0.9, 0.95), 0.1


def roundtrip(obj):
    """Through torch.save/load as a checkpoint does: nothing is shared with the original."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------ AdamATan2

def adam_atan2_reference(param, grads, lrs, betas=BETAS, wd=WD):
    """The update in float64; a None gradient skips the step, and the tensor's count with it."""
    p = param.double().numpy()
    m, v, t = np.zeros_like(p), np.zeros_like(p), 0
    for grad, lr in zip(grads, lrs):
        if grad is None:
            continue
        g, lr, t = grad.double().numpy(), float(lr), t + 1
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - lr / (1 - betas[0] ** t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - betas[1] ** t))
    return p


def random_grads(shape, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(steps)]


def test_adam_atan2_matches_hand_computation_over_three_steps():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen), torch.randn(2, 2, generator=gen)]
    params = [nn.Parameter(t.clone()) for t in start]
    grads = [random_grads((5, 3), 3, 1), random_grads((4,), 3, 2), random_grads((2, 2), 3, 3)]
    for step_grads in grads[0]:
        step_grads[0] = 0.0  # a row without gradient: atan2(0, 0) = 0, only decay, no NaN
    grads[2][1] = None  # no gradient on step 2: skipped, so its step 3 is its t = 2
    lrs = [1e-2, torch.tensor(5e-3), 2e-2]  # changed every step, float or 0-dim tensor
    optimizer = AdamATan2(params, lr=0.0, betas=BETAS, weight_decay=WD)
    for step, lr in enumerate(lrs):
        optimizer.param_groups[0]["lr"] = lr
        for param, param_grads in zip(params, grads):
            param.grad = param_grads[step]
        optimizer.step()
    for param, first, param_grads in zip(params, start, grads):
        expected = adam_atan2_reference(first, param_grads, lrs)
        np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=1e-5, atol=1e-7)
    assert optimizer.state[params[2]]["step"] == 2


def test_adam_atan2_skips_params_without_grad_and_lr_zero_changes_nothing():
    used, unused = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(3))
    before_used, before_unused = used.detach().clone(), unused.detach().clone()
    optimizer = AdamATan2([used, unused], lr=0.0)
    used.grad = torch.randn(3)
    optimizer.step()
    assert torch.equal(unused, before_unused) and unused not in optimizer.state
    assert torch.equal(used, before_used)  # lr 0: no decay, no step; the moments still move
    optimizer.param_groups[0]["lr"] = 1e-2
    optimizer.step()
    assert not torch.equal(used, before_used) and optimizer.state[used]["step"] == 2


def test_adam_atan2_resumes_bit_identically_from_state_dict():
    gen = torch.Generator().manual_seed(4)
    start = [torch.randn(6, 2, generator=gen), torch.randn(2, generator=gen)]
    grads = [random_grads(t.shape, 4, 10 + i) for i, t in enumerate(start)]

    def run(params, optimizer, steps):
        for step in steps:
            for param, param_grads in zip(params, grads):
                param.grad = param_grads[step]
            optimizer.param_groups[0]["lr"] = 1e-2 * (step + 1)
            optimizer.step()

    straight = [nn.Parameter(t.clone()) for t in start]
    straight_optimizer = AdamATan2(straight)
    run(straight, straight_optimizer, range(4))

    first = [nn.Parameter(t.clone()) for t in start]
    first_optimizer = AdamATan2(first)
    run(first, first_optimizer, range(2))
    saved = roundtrip({"params": [p.detach() for p in first], "optimizer": first_optimizer.state_dict()})
    resumed = [nn.Parameter(t) for t in saved["params"]]
    resumed_optimizer = AdamATan2(resumed)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    run(resumed, resumed_optimizer, range(2, 4))

    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(straight_optimizer.state[a][key], resumed_optimizer.state[b][key])
        assert resumed_optimizer.state[b]["step"] == 4


# ---------------------------------------------------------------------- SignSGDEmbedding

class FakeEmbedding(nn.Module):
    """The contract of SignSGDEmbedding: a table buffer, and a leaf copy of the batch's rows."""

    def __init__(self, num: int = 10, dim: int = 4):
        super().__init__()
        self.register_buffer("weights", torch.randn(num, dim, generator=torch.Generator().manual_seed(7)))
        self.local_weights: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.local_ids = ids
        self.local_weights = self.weights[ids].detach().requires_grad_(True)
        return self.local_weights


def sign_sgd_reference(table, ids, grads, lr, wd):
    """The table after one step, float64: gradients summed per id, touched rows updated."""
    table = table.double().numpy().copy()
    summed = {}
    for i, g in zip(ids.tolist(), grads.double().numpy()):
        summed[i] = summed.get(i, 0.0) + g
    for i, g in summed.items():
        table[i] = table[i] * (1 - lr * wd) - lr * np.sign(g)
    return table, sorted(summed)


def check_table(table, before, expected, touched):
    """Touched rows as computed by hand; every other row bit-identical."""
    actual = table[touched].double().numpy()
    np.testing.assert_allclose(actual, expected[touched], rtol=1e-6, atol=1e-7)
    untouched = [i for i in range(len(table)) if i not in touched]
    assert torch.equal(table[untouched], before[untouched])


IDS = torch.tensor([3, 5, 3])
GRADS = torch.tensor([[1.0, -2.0, 1.5, 2.0],  # row 3, first occurrence
                      [2.0, -1.0, 0.5, -3.0],
                      [-3.0, 1.0, -1.5, 1.0]])  # row 3 again: the sum flips signs, and is 0 once


def test_sign_sgd_updates_touched_rows_with_summed_gradient_sign():
    embedding = FakeEmbedding()
    before = embedding.weights.clone()
    optimizer = SignSGDEmbedding(embedding, lr=0.05, weight_decay=WD)
    (embedding(IDS) * GRADS).sum().backward()
    optimizer.step()
    expected, touched = sign_sgd_reference(before, IDS, GRADS, 0.05, WD)
    assert touched == [3, 5]
    check_table(embedding.weights, before, expected, touched)


def test_sign_sgd_without_gradient_changes_nothing():
    embedding = FakeEmbedding()
    optimizer = SignSGDEmbedding(embedding)
    optimizer.step()  # no forward pass yet
    embedding(IDS)
    optimizer.step()  # forward, no backward
    (embedding(IDS) * GRADS).sum().backward()
    optimizer.zero_grad()
    assert embedding.local_weights.grad is None
    before = embedding.weights.clone()
    optimizer.step()
    assert torch.equal(embedding.weights, before)


def test_sign_sgd_drives_the_real_puzzle_embedding():
    embedding = PuzzleEmbedding(10, 4, torch.float32).train()
    embedding.weights.copy_(FakeEmbedding().weights)
    before = embedding.weights.clone()
    optimizer = SignSGDEmbedding(embedding, lr=0.05, weight_decay=WD)
    (embedding(IDS.int()) * GRADS).sum().backward()
    optimizer.step()
    expected, touched = sign_sgd_reference(before, IDS, GRADS, 0.05, WD)
    check_table(embedding.weights, before, expected, touched)


DIST_IDS = [torch.tensor([3, 5, 3]), torch.tensor([5, 8, 1])]
DIST_GRADS = [GRADS, torch.tensor([[-5.0, 1.0, 2.0, -0.5],  # row 5's sum differs in sign from
                                   [1.0, 1.0, 1.0, 1.0],  # rank 0's own gradient at 0 and 2
                                   [0.0, -1.0, 2.0, -3.0]])]


def _distributed_step(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    try:
        embedding = FakeEmbedding()
        optimizer = SignSGDEmbedding(embedding, lr=0.05, weight_decay=WD)
        (embedding(DIST_IDS[rank]) * DIST_GRADS[rank]).sum().backward()
        optimizer.step()
        torch.save(embedding.weights, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown()  # a barrier first: without it destroy_process_group hung in 3 of 6 runs on torch 2.6


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")
def test_sign_sgd_gathers_gradients_of_all_ranks(tmp_path):
    mp.spawn(_distributed_step, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    before = FakeEmbedding().weights
    expected, touched = sign_sgd_reference(before, torch.cat(DIST_IDS), torch.cat(DIST_GRADS), 0.05, WD)
    assert touched == [1, 3, 5, 8]
    for rank in range(2):
        check_table(torch.load(tmp_path / f"rank{rank}.pt"), before, expected, touched)


def test_sign_sgd_state_dict_holds_only_hyper_parameters():
    optimizer = SignSGDEmbedding(FakeEmbedding(), lr=0.03, weight_decay=0.2)
    other = SignSGDEmbedding(FakeEmbedding())
    other.load_state_dict(roundtrip(optimizer.state_dict()))
    assert other.param_groups == [{"lr": 0.03, "weight_decay": 0.2}]
    with pytest.raises(ValueError):
        other.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1}]})


# ----------------------------------------------------------------------------- schedule

def test_lr_warmup_counts_the_first_step_as_one():
    assert lr_at(0, 1e-4, 2000, 10_000, 1.0) == 0.0
    assert lr_at(1, 1e-4, 2000, 10_000, 1.0) == 1e-4 / 2000
    assert lr_at(1000, 1e-4, 2000, 10_000, 1.0) == pytest.approx(0.5e-4, rel=1e-12)
    assert lr_at(2000, 1e-4, 2000, 10_000, 0.1) == 1e-4  # cosine starts at the full rate


def test_lr_cosine_decays_to_min_ratio_and_stays_there():
    base, warmup, total, ratio = 2e-4, 100, 1100, 0.1
    assert lr_at(600, base, warmup, total, ratio) == pytest.approx(base * (ratio + (1 - ratio) * 0.5))
    assert lr_at(350, base, warmup, total, ratio) == pytest.approx(
        base * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi / 4))))
    assert lr_at(total, base, warmup, total, ratio) == pytest.approx(ratio * base)
    assert lr_at(total + 500, base, warmup, total, ratio) == pytest.approx(ratio * base)
    lrs = [lr_at(step, base, warmup, total, ratio) for step in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lr_is_constant_after_warmup_with_min_ratio_one():
    assert {lr_at(step, 1e-4, 10, 50, 1.0) for step in range(10, 80)} == {1e-4}
    assert lr_at(0, 1e-4, 0, 50, 1.0) == 1e-4  # no warmup: full rate from the start


def test_set_lr_drives_both_optimizers():
    trunk = AdamATan2([nn.Parameter(torch.zeros(2))])
    puzzle = SignSGDEmbedding(FakeEmbedding())
    lrs = set_lr([puzzle, trunk], [1e-2, 1e-4], 5, warmup_steps=10, total_steps=100, min_ratio=1.0)
    assert lrs == [1e-2 * 5 / 10, 1e-4 * 5 / 10]
    assert puzzle.param_groups[0]["lr"] == lrs[0] and trunk.param_groups[0]["lr"] == lrs[1]
    with pytest.raises(ValueError):
        set_lr([trunk], [1e-4, 1e-2], 5, warmup_steps=10, total_steps=100, min_ratio=1.0)


# ---------------------------------------------------------------------------------- EMA

class Tiny(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.linear = nn.Linear(3, 2).to(dtype)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("table", torch.arange(4.0))


def perturb(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.add_(torch.randn(tensor.shape, generator=gen).to(tensor.dtype))


def test_ema_matches_hand_computation_after_two_updates():
    module, decay = Tiny(), 0.9
    ema = EMA(module, decay, buffers=["table"])
    assert set(ema.shadow) == {"linear.weight", "linear.bias", "table"}  # not the frozen one
    expected = {name: t.detach().double().clone() for name, t in module.state_dict().items()}
    for seed in (1, 2):
        perturb(module, seed)
        ema.update()
        for name in ema.shadow:
            expected[name] = decay * expected[name] + (1 - decay) * module.state_dict()[name].double()
    for name, average in ema.shadow.items():
        torch.testing.assert_close(average.double(), expected[name], rtol=1e-6, atol=1e-7)


def test_ema_swaps_averages_in_and_restores_live_weights_exactly():
    module = Tiny(torch.bfloat16)
    ema = EMA(module, 0.5)
    assert all(average.dtype == torch.float32 for average in ema.shadow.values())
    perturb(module, 3)
    ema.update()
    live = copy.deepcopy(module.state_dict())
    with pytest.raises(RuntimeError, match="inside"):
        with ema.swapped_in() as swapped:
            assert swapped is module
            assert torch.equal(module.linear.weight, ema.shadow["linear.weight"].to(torch.bfloat16))
            raise RuntimeError("inside")
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, live[name])
    evaluation_copy = copy.deepcopy(module)
    ema.copy_to(evaluation_copy)
    assert torch.equal(evaluation_copy.linear.bias, ema.shadow["linear.bias"].to(torch.bfloat16))
    assert torch.equal(module.linear.bias, live["linear.bias"])


def test_ema_state_round_trip_continues_identically():
    module = Tiny()
    ema = EMA(module, 0.99, buffers=["table"])
    perturb(module, 4)
    ema.update()
    other = EMA(Tiny(), 0.5, buffers=["table"])
    other.module.load_state_dict(module.state_dict())
    other.load_state_dict(roundtrip(ema.state_dict()))
    assert other.decay == 0.99
    ema.update()
    other.update()
    for name, average in ema.shadow.items():
        assert torch.equal(average, other.shadow[name])
    with pytest.raises(ValueError, match="table"):
        EMA(Tiny(), 0.99).load_state_dict(ema.state_dict())
