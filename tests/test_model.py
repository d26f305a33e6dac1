"""The TRM against the original's outputs, and its behaviour across configurations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.checkpoint import load_checkpoint
from trm_kaggle.config import ModelConfig, tiny_model_config
from trm_kaggle.layers import swiglu_width, trunc_normal_
from trm_kaggle.losses import IGNORE_LABEL, ACTLoss, log_stablemax
from trm_kaggle.model import TRM, Carry

from conftest import FIXTURES

CHECKPOINT = FIXTURES / "reference_trm" / "checkpoint"


def tiny(**changes) -> ModelConfig:
    fields = dict(L_layers=2, L_cycles=2, expansion=4.0, puzzle_emb_len=16, halt_max_steps=3)
    return tiny_model_config(arc_shape(7), **(fields | changes))


def random_batch(config: ModelConfig, size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 12, (size, config.seq_len), generator=g, dtype=torch.int32)
    labels[:, 100:] = IGNORE_LABEL
    return {"inputs": torch.randint(0, 12, (size, config.seq_len), generator=g, dtype=torch.int32),
            "labels": labels,
            "puzzle_identifiers": torch.randint(1, config.num_puzzle_identifiers, (size,), generator=g, dtype=torch.int32)}


def test_reproduces_the_original_logits_q_and_losses_at_every_step():
    model = load_checkpoint(CHECKPOINT / "step_72385").build_model()
    expected = np.load(CHECKPOINT / "expected.npz")
    batch = {k: torch.from_numpy(expected[k]).to(torch.int32) for k in ("inputs", "labels", "puzzle_identifiers")}
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for step in range(3):
            carry, out = model(carry, batch)
            _, metrics = ACTLoss()(out, carry)
            np.testing.assert_allclose(out["logits"].numpy(), expected["logits"][step], atol=1e-4, rtol=0)
            np.testing.assert_allclose(out["q_halt_logits"].numpy(), expected["q_halt_logits"][step], atol=1e-4, rtol=0)
            assert metrics["lm_loss"].item() == pytest.approx(expected["lm_loss"][step], rel=1e-6)
            assert metrics["q_halt_loss"].item() == pytest.approx(expected["q_halt_loss"][step], rel=1e-6)
    assert carry.halted.all() and (carry.steps == 3).all()


def test_paper_configuration_has_the_papers_size():
    model = TRM(ModelConfig(**arc_shape(2).model_dump()))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(6.83e6, rel=0.005)
    assert swiglu_width(512, 4) == 1536 and swiglu_width(64, 4) == 256


@pytest.mark.parametrize("changes", [
    dict(puzzle_emb_len=1), dict(puzzle_emb_len=16), dict(puzzle_emb_len=0, puzzle_emb_ndim=80),
    dict(L_cycles=6, H_cycles=1), dict(L_layers=3, num_heads=4, expansion=2.0),
    dict(pos_encodings="learned"), dict(hidden_size=48, num_heads=3, puzzle_emb_ndim=24),
    dict(puzzle_emb_ndim=0, puzzle_emb_len=0), dict(puzzle_emb_ndim=0, puzzle_emb_len=2)])
def test_every_configuration_runs_with_the_originals_names_and_shapes(changes):
    config = tiny(**changes)
    model = TRM(config).eval()
    tokens = config.puzzle_tokens
    assert tokens == (config.puzzle_emb_len or -(-config.puzzle_emb_ndim // config.hidden_size))
    names = model.state_dict()
    hidden, inner = config.hidden_size, swiglu_width(config.hidden_size, config.expansion)
    assert names["L_level.layers.0.self_attn.qkv_proj.weight"].shape == (3 * hidden, hidden)
    assert names["L_level.layers.0.mlp.gate_up_proj.weight"].shape == (2 * inner, hidden)
    assert names["puzzle_emb.weights"].shape == (config.num_puzzle_identifiers, config.puzzle_emb_ndim)
    assert f"L_level.layers.{config.L_layers - 1}.mlp.down_proj.weight" in names
    batch = random_batch(config)
    carry, out = model(model.initial_carry(batch), batch)
    assert out["logits"].shape == (3, 900, 12) and out["q_halt_logits"].shape == (3,)
    assert carry.z_H.shape == (3, 900 + tokens, hidden)


@pytest.mark.parametrize("h_cycles, l_cycles", [(1, 1), (3, 1), (2, 3)])
def test_recursion_order_for_any_cycle_counts(h_cycles, l_cycles):
    """z_L is updated L times from z_H + x, then z_H once from z_L, H times over."""
    config = tiny(H_cycles=h_cycles, L_cycles=l_cycles)
    model = TRM(config).eval()
    batch = random_batch(config)
    f = lambda h, inj: model.L_level(h, inj, model.rotary_emb)  # noqa: E731
    with torch.no_grad():
        x = model.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        z_H = model.H_init.expand_as(x)
        z_L = model.L_init.expand_as(x)
        for _ in range(h_cycles):
            for _ in range(l_cycles):
                z_L = f(z_L, z_H + x)
            z_H = f(z_H, z_L)
        carry, out = model(model.initial_carry(batch), batch)
    torch.testing.assert_close(out["logits"], model.lm_head(z_H)[:, config.puzzle_tokens:])
    torch.testing.assert_close(carry.z_H, z_H)


def test_training_gradients_reach_the_trunk_and_only_the_batchs_embedding_rows():
    config = tiny()
    model = TRM(config).train()
    batch = random_batch(config)
    carry, out = model(model.initial_carry(batch), batch)
    loss, _ = ACTLoss()(out, carry)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p is not model.q_head.bias)
    assert not model.puzzle_emb.weights.requires_grad
    assert model.puzzle_emb.local_weights.grad.shape == (3, config.puzzle_emb_ndim)
    assert torch.equal(model.puzzle_emb.local_ids, batch["puzzle_identifiers"].long())


def test_act_halts_on_q_and_swaps_in_new_examples():
    config = tiny(halt_exploration_prob=0.0, halt_max_steps=4)
    model = TRM(config).train()
    first, second = random_batch(config, seed=1), random_batch(config, seed=2)
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # q_halt > 0 everywhere: halt after one step
        carry, _ = model(model.initial_carry(first), first)
        assert carry.halted.all() and (carry.steps == 1).all()
        carry, _ = model(carry, second)
        assert torch.equal(carry.data["inputs"], second["inputs"])
        model.q_head.bias.fill_(-5.0)
        carry, _ = model(carry, first)
        carry, _ = model(carry, second)  # not halted: keeps working on `first`
        assert torch.equal(carry.data["inputs"], first["inputs"]) and (carry.steps == 2).all()
        model.eval()
        model.q_head.bias.fill_(5.0)  # eval ignores q: always max steps
        carry = model.initial_carry(first)
        for step in range(1, 5):
            carry, _ = model(carry, first)
            assert bool(carry.halted.all()) == (step == 4)


def test_truncated_normal_init_has_the_requested_std_and_bounds():
    x = trunc_normal_(torch.empty(200_000), std=0.5)
    assert x.std().item() == pytest.approx(0.5, rel=0.01)
    assert x.abs().max().item() <= 2 * 0.5 / 0.8796 + 1e-6  # truncated at 2σ of the widened normal


def test_stablemax_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    s = torch.tensor([3.0, 1.0, 0.5])
    torch.testing.assert_close(log_stablemax(logits)[0], torch.log(s / s.sum()).double())


def test_act_loss_by_hand():
    """Two sequences of 2 tokens; the second has one ignored label and is exactly right."""
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [5.0, 0.0]]])
    labels = torch.tensor([[1, 1], [1, IGNORE_LABEL]])
    q_halt = torch.tensor([0.5, -0.5])
    carry = Carry(z_H=torch.zeros(2), z_L=torch.zeros(2), steps=torch.tensor([2, 3]),
                  halted=torch.tensor([True, True]), data={"labels": labels})
    loss, metrics = ACTLoss()({"logits": logits, "q_halt_logits": q_halt}, carry)
    logp = lambda row, k: torch.log(torch.where(row < 0, 1 / (1 - row), row + 1)[k] / torch.where(  # noqa: E731
        row < 0, 1 / (1 - row), row + 1).sum())
    lm = -(logp(logits[0, 0], 1) + logp(logits[0, 1], 1)) / 2 - logp(logits[1, 0], 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(q_halt, torch.tensor([0.0, 1.0]), reduction="sum")
    assert loss.item() == pytest.approx((lm + 0.5 * bce).item(), rel=1e-6)
    assert metrics["exact_accuracy"].item() == 1 and metrics["accuracy"].item() == pytest.approx(1.5)
    assert metrics["q_halt_accuracy"].item() == 0 and metrics["steps"].item() == 5
    assert metrics["loss"].item() == loss.item() and metrics["lm_loss"].item() == pytest.approx(lm.item(), rel=1e-6)
    assert ACTLoss(q_halt_weight=0)({"logits": logits, "q_halt_logits": q_halt}, carry)[0].item() == \
        pytest.approx(lm.item(), rel=1e-6)
