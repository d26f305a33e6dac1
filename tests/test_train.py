"""The training step: what moves in each phase of fine-tuning."""

from __future__ import annotations

import pytest
import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.config import tiny_model_config
from trm_kaggle.errors import NonFiniteError
from trm_kaggle.model import TRM
from trm_kaggle.optim import EMA
from trm_kaggle.train import Schedule, TrainStep


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"inputs": torch.randint(0, 12, (size, 900), generator=g, dtype=torch.int32),
            "labels": torch.randint(2, 12, (size, 900), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.tensor([1, 2, 2, 3], dtype=torch.int32)}


def tiny_model() -> TRM:
    torch.manual_seed(0)
    return TRM(tiny_model_config(arc_shape(6), H_cycles=1, expansion=4.0))


def test_embeddings_only_phase_leaves_the_trunk_and_unused_rows_alone():
    model = tiny_model()
    trunk = {k: v.clone() for k, v in model.named_parameters()}
    table = model.puzzle_emb.weights.clone()
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4)
    step(batch(), train_trunk=False)
    assert all(torch.equal(p, trunk[k]) for k, p in model.named_parameters())
    changed = (model.puzzle_emb.weights != table).any(-1).tolist()
    assert changed == [False, True, True, True, False, False]
    step(batch())
    assert not torch.equal(model.lm_head.weight, trunk["lm_head.weight"])
    assert step.step == 2 and step.trunk.param_groups[0]["lr"] == 1e-4


def test_the_ema_follows_trunk_steps():
    model = tiny_model()
    ema = EMA(model, decay=0.5)
    start = model.lm_head.weight.detach().clone()
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4, ema=ema)
    step(batch())
    live = model.lm_head.weight.detach().clone()
    with ema.swapped_in() as averaged:
        torch.testing.assert_close(averaged.lm_head.weight.detach(), (start + live) / 2)
    assert torch.equal(model.lm_head.weight, live)


def run_steps(micro_batches: int, steps: int = 3, oom_above: int | None = None) -> tuple[TRM, TrainStep]:
    model = tiny_model()
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4, ema=EMA(model, 0.9), seed=3,
                     micro_batches=micro_batches)
    if oom_above is not None:
        def before_forward(rows: int) -> None:
            if rows > oom_above:
                raise torch.cuda.OutOfMemoryError(f"a test's CUDA OOM for {rows} rows")
        step.before_forward = before_forward
    for i in range(steps):
        step(batch(), train_trunk=i > 0)  # an embeddings-only step, then full ones
    return model, step


def assert_same_training(a: tuple[TRM, TrainStep], b: tuple[TRM, TrainStep]) -> None:
    for (name, x), y in zip(a[0].state_dict().items(), b[0].state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    for name in ("z_H", "z_L", "steps", "halted"):
        torch.testing.assert_close(getattr(a[1].carry, name), getattr(b[1].carry, name), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a[1].carry.data[k], b[1].carry.data[k]) for k in a[1].carry.data)


def test_k_micro_batches_give_the_update_and_carry_of_one_batch():
    one = run_steps(micro_batches=1)
    assert_same_training(one, run_steps(micro_batches=2))
    assert_same_training(one, run_steps(micro_batches=4))
    moved = tiny_model()
    assert not torch.allclose(one[0].lm_head.weight, moved.lm_head.weight)  # the steps did move it


def test_a_cuda_oom_splits_the_step_into_micro_batches_and_keeps_the_update(caplog):
    one = run_steps(micro_batches=1)
    split = run_steps(micro_batches=1, oom_above=1)  # only single rows fit
    assert split[1].micro_batches == 4
    assert "CUDA out of memory in a training step of 4 rows: now 2 micro-batches" in caplog.text
    assert_same_training(one, split)


def test_an_oom_at_one_row_per_micro_batch_is_raised():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_steps(micro_batches=1, oom_above=0)


def test_a_diverging_step_stops_before_it_touches_the_weights():
    """A learning rate of 1e20 makes the loss non-finite within a few steps: the step that
    sees it raises, and the weights and table stay as the last finite step left them."""
    model = tiny_model()
    step = TrainStep(model, Schedule(lr=1e20, puzzle_emb_lr=1e20, warmup_steps=1), global_batch_size=4)
    with pytest.raises(NonFiniteError, match=r"step \d+: loss .* not finite, the run diverged"):
        for _ in range(20):
            before = {k: v.clone() for k, v in model.state_dict().items()}
            step(batch())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert step.trunk.param_groups and all(p.grad is None for p in model.parameters())


def test_an_embeddings_only_step_computes_no_trunk_gradient():
    """No trunk gradient is computed (or all-reduced) in an embeddings-only step, only the
    puzzle rows'; the trunk's gradients come back at the first trunk step."""
    model = tiny_model()
    computed = []
    model.lm_head.weight.register_hook(lambda grad: computed.append(grad))
    step = TrainStep(model, Schedule(warmup_steps=1, embeddings_only_steps=1), global_batch_size=4)
    metrics = step(batch())
    assert computed == [] and metrics["grad_norm"] == 0.0
    assert metrics["lr_trunk"] == 0.0 and metrics["lr_puzzle_emb"] > 0
    assert all(not p.requires_grad for p in model.parameters())
    metrics = step(batch())
    assert len(computed) == 1 and metrics["grad_norm"] > 0 and metrics["lr_trunk"] > 0
    assert all(p.requires_grad for p in model.parameters())


def test_per_example_draws_do_not_depend_on_the_number_of_ranks():
    one = TrainStep(tiny_model(), Schedule(), global_batch_size=4, seed=5, step=7)
    halves = [TrainStep(tiny_model(), Schedule(), global_batch_size=4, seed=5, step=7, rank=r) for r in (0, 1)]
    whole = one.draw(1, (3,), rows=4)
    assert torch.equal(torch.cat([h.draw(1, (3,), rows=2) for h in halves]), whole)
    assert not torch.equal(one.draw(2, (3,), rows=4), whole)  # another stream, other numbers
    assert torch.equal(one.halting_noise(4, torch.device("cpu")), one.draw(0, (2,), rows=4))


def test_per_example_extras_enter_the_carry_with_their_example():
    def tag(step: TrainStep, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return data | {"tag": step.draw(1, (), rows=len(data["inputs"]))}

    model = TRM(tiny_model_config(arc_shape(6), halt_max_steps=3, halt_exploration_prob=0.0))
    step = TrainStep(model, Schedule(warmup_steps=1), global_batch_size=4, extras=tag)
    step(batch())
    first = step.carry.data["tag"].clone()
    assert torch.equal(first, TrainStep(model, Schedule(), global_batch_size=4, step=0).draw(1, (), rows=4))
    step(batch())  # q_halt starts near -5: no row halts before its third step, so no row is replaced
    assert not step.carry.halted.any() and torch.equal(step.carry.data["tag"], first)
    step(batch())  # every row halts at its third step ...
    step(batch())  # ... so the next step loads the batch's rows and their new tags
    assert torch.equal(step.carry.data["tag"], TrainStep(model, Schedule(), global_batch_size=4, step=3).draw(1, (), 4))
