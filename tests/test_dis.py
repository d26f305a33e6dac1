"""Deep Improvement Supervision (seed 001) as an option of the one model, loss and training
step: target paths, step weights, the step embedding, the fixed N_sup steps, the previous
prediction as token input, and a TRM checkpoint starting a DIS model."""

from __future__ import annotations

import types

import pytest
import torch

from trm_kaggle.augment import arc_shape
from trm_kaggle.checkpoint import init_from_checkpoint, load_checkpoint, save_checkpoint
from trm_kaggle.config import DISConfig, tiny_model_config
from trm_kaggle.dis import ORDER, ImprovementTargets, path_order
from trm_kaggle.distributed import Dist
from trm_kaggle.errors import UserError
from trm_kaggle.inference import run_steps
from trm_kaggle.losses import IGNORE_LABEL, ACTLoss, token_loss
from trm_kaggle.model import TRM, block_calls
from trm_kaggle.train import Schedule, TrainStep, build_train_step

CPU = Dist(0, 1, 0, torch.device("cpu"))
N_SUP = 4


def dis_model(**changes) -> TRM:
    torch.manual_seed(0)
    fields = dict(objective="dis", H_cycles=1, L_cycles=2, halt_max_steps=N_SUP) | changes
    return TRM(tiny_model_config(arc_shape(6), **fields))


def batch(size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """ARC-like rows: labels IGNORE_LABEL on the last 300 positions (padding), inputs differ
    from labels at some positions only."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, 12, (size, 900), generator=g, dtype=torch.int32)
    inputs = torch.where(torch.rand(size, 900, generator=g) < 0.3, torch.randint(2, 12, (size, 900), generator=g,
                                                                                  dtype=torch.int32), labels)
    inputs[:, 600:], labels[:, 600:] = 0, IGNORE_LABEL
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.tensor([1, 2, 2, 3][:size],
                                                                                   dtype=torch.int32)}


def orders(b: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    return path_order(b["inputs"], b["labels"], torch.rand(b["inputs"].shape, generator=torch.Generator().manual_seed(seed)))


def frames(targets: ImprovementTargets, b: dict[str, torch.Tensor], order: torch.Tensor) -> list[torch.Tensor]:
    rows = len(b["inputs"])
    return [targets.frame(b["inputs"], b["labels"], order, torch.full((rows,), k)) for k in range(N_SUP + 1)]


def test_the_path_runs_from_the_input_to_the_label_never_moving_away():
    b = batch()
    path = frames(ImprovementTargets(N_SUP), b, orders(b))
    differ = b["inputs"] != b["labels"]
    assert torch.equal(path[0], b["inputs"].long())  # frame 0: the input, padding included
    assert torch.equal(path[N_SUP], b["labels"].long())  # frame N_sup: the label, padding ignored
    distance = [(f != b["labels"]).sum(-1) for f in path]
    assert all(bool((later <= earlier).all()) for earlier, later in zip(distance, distance[1:]))
    assert all(bool((later < earlier).all()) for earlier, later in zip(distance, distance[1:]))  # strictly, here
    # every frame agrees with the label outside D; a replaced padding position is not supervised
    assert all(torch.equal(f[~differ], b["labels"].long()[~differ]) for f in path)
    replaced_pad = (path[2] == IGNORE_LABEL)
    assert replaced_pad.any() and not replaced_pad[:, :600].any() and (path[2][:, 600:] != IGNORE_LABEL).any()
    # each frame replaces ⌊k·|D|/N_sup⌋ positions of D
    for k, f in enumerate(path):
        assert torch.equal(((f != b["inputs"]) & differ).sum(-1), (k * differ.sum(-1)) // N_SUP)


def test_masking_supervises_the_replaced_positions_only_and_ends_at_the_label():
    b = batch()
    order = orders(b)
    path, masked = frames(ImprovementTargets(N_SUP), b, order), frames(ImprovementTargets(N_SUP, "masking"), b, order)
    differ = b["inputs"] != b["labels"]
    assert torch.equal(masked[N_SUP], b["labels"].long())
    assert torch.equal(masked[0][differ], torch.full_like(masked[0][differ], IGNORE_LABEL))
    supervised = [((m != IGNORE_LABEL) & differ & (b["labels"] != IGNORE_LABEL)).sum() for m in masked]
    assert supervised == sorted(supervised) and supervised[0] == 0  # the mask rate falls to 0
    for p, m in zip(path, masked):  # where masking supervises, it asks what the path asks
        assert torch.equal(m[m != IGNORE_LABEL], p[m != IGNORE_LABEL])


def test_an_order_is_a_random_permutation_of_the_differing_positions():
    b = batch()
    one, other = orders(b, 0), orders(b, 1)
    differ = b["inputs"] != b["labels"]
    for row in range(len(one)):
        assert sorted(one[row][differ[row]].tolist()) == list(range(int(differ[row].sum())))
    assert (one[~differ] == 900).all() and not torch.equal(one, other)


def test_step_weights_linear_mean_one_or_uniform():
    steps = torch.arange(1, N_SUP + 1)
    linear = ImprovementTargets(N_SUP).weight(steps)
    assert torch.allclose(linear, torch.tensor([0.4, 0.8, 1.2, 1.6])) and linear.mean() == pytest.approx(1.0)
    assert torch.equal(ImprovementTargets(N_SUP, step_weights="uniform").weight(steps), torch.ones(N_SUP))


def test_the_loss_is_the_weighted_frame_loss_with_no_halting_term():
    model = dis_model()
    step = build_train_step(model, Schedule(warmup_steps=1), 4, CPU, dis=DISConfig(targets="path"))
    assert step.loss.improvement == ImprovementTargets(N_SUP, "path", "linear")
    step.step = 2  # the second optimizer step: every row is in its second ACT step ...
    carry = None
    for _ in range(2):
        b = step.extras(step, batch())
        carry = model.initial_carry(b) if carry is None else carry
        carry, out = model(carry, b)
    loss, metrics = step.loss(out, carry)
    frame = step.loss.improvement.frame(carry.data["inputs"], carry.data["labels"], carry.data[ORDER], carry.steps)
    expected = (0.8 * token_loss(out["logits"], frame)).sum()  # w_2 = 2·2/(4 + 1)
    torch.testing.assert_close(loss, expected)
    assert "q_halt_loss" not in metrics and metrics["lm_loss"] == loss.detach()


def test_a_dis_model_runs_all_n_sup_steps_in_training_whatever_q_halt_says():
    model = dis_model()
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # a TRM would halt at once
    step = build_train_step(model, Schedule(warmup_steps=1), 4, CPU)
    seen = []
    for _ in range(2 * N_SUP):
        step(batch())
        seen.append(step.carry.steps.tolist())
    assert seen[:N_SUP] == [[k] * 4 for k in range(1, N_SUP + 1)] and seen[N_SUP] == [1] * 4
    trm = TRM(tiny_model_config(arc_shape(6), H_cycles=1, L_cycles=2, halt_max_steps=N_SUP, halt_exploration_prob=0))
    with torch.no_grad():
        trm.q_head.bias.fill_(5.0)
    control = TrainStep(trm, Schedule(warmup_steps=1), 4)
    control(batch())
    assert control.carry.halted.all()  # the negative control: a TRM halts on q_halt > 0


def test_gradients_reach_every_cycle_of_a_dis_step():
    model = dis_model()
    outputs = []

    def keep(_module, _inputs, out: torch.Tensor) -> None:
        out.retain_grad()
        outputs.append(out)

    model.L_level.register_forward_hook(keep)
    step = build_train_step(model, Schedule(warmup_steps=1), 4, CPU)
    step(batch())
    assert len(outputs) == 3  # n = 2 z_L updates and one z_H update, T = 1: no no-grad cycle
    assert all(out.grad is not None and out.grad.abs().sum() > 0 for out in outputs)
    trm = TRM(tiny_model_config(arc_shape(6), H_cycles=2, L_cycles=2))
    calls = []
    trm.L_level.register_forward_hook(lambda _m, _i, out: calls.append(out.requires_grad))
    TrainStep(trm, Schedule(warmup_steps=1), 4)(batch())
    assert calls == [False] * 3 + [True] * 3  # the TRM's first H cycle runs without gradient


def test_the_step_embedding_changes_the_output_and_only_a_dis_model_has_one():
    model = dis_model().eval()
    b = batch()
    carry = model.initial_carry(b)
    carry, _ = model(carry, b)
    z_H, z_L = carry.z_H, carry.z_L
    with torch.no_grad():
        at = {t: model.step(z_H, z_L, b, torch.full((4,), t))[2] for t in (2, 3)}
    assert not torch.allclose(at[2], at[3])
    assert "step_emb.embedding_weight" not in TRM(tiny_model_config(arc_shape(6))).state_dict()
    assert model.step_emb.embedding_weight.shape == (N_SUP + 2, 32)


def test_the_previous_prediction_is_the_token_input_of_later_steps():
    previous, fed = dis_model(dis_token_input="previous").eval(), dis_model().eval()
    fed.load_state_dict(previous.state_dict())
    b = batch()
    logits, _, _ = run_steps(previous, b, keep_steps=True)
    carry, first = fed(fed.initial_carry(b), b)
    step_2 = torch.full((4,), 2)
    with torch.no_grad():
        second = fed.step(carry.z_H, carry.z_L, b | {"inputs": first["logits"].argmax(-1).to(torch.int32)}, step_2)[2]
        again = fed.step(carry.z_H, carry.z_L, b, step_2)[2]
    torch.testing.assert_close(logits[0], first["logits"])
    torch.testing.assert_close(logits[1], second)
    assert not torch.allclose(again, logits[1])  # the negative control: the original input gives another step 2
    with pytest.raises(ValueError, match="needs objective dis"):
        tiny_model_config(arc_shape(6), dis_token_input="previous")


def test_a_trm_checkpoint_starts_a_dis_model_as_the_trm_with_a_zero_step_embedding(tmp_path):
    torch.manual_seed(1)
    trm = TRM(tiny_model_config(arc_shape(6), H_cycles=1, L_cycles=2, halt_max_steps=16))
    identifiers = ["<blank>", "a", "b", "c", "d", "e"]
    save_checkpoint(tmp_path / "trm", trm, identifiers, step=1)
    dis = dis_model()
    init_from_checkpoint(dis, load_checkpoint(tmp_path / "trm"), identifiers, "mean")
    assert not dis.step_emb.embedding_weight.any()
    b = batch()
    torch.testing.assert_close(run_steps(dis.eval(), b, True)[0][0], run_steps(trm.eval(), b, True)[0][0])
    other = dis_model(L_cycles=3)  # the recursion must match
    with pytest.raises(UserError, match="L_cycles"):
        init_from_checkpoint(other, load_checkpoint(tmp_path / "trm"), identifiers, "mean")
    save_checkpoint(tmp_path / "dis", dis, identifiers, step=1)
    with pytest.raises(UserError, match="objective is dis"):  # and a DIS checkpoint never starts a TRM
        init_from_checkpoint(trm, load_checkpoint(tmp_path / "dis"), identifiers, "mean")


def test_block_calls_of_the_paper_configs():
    from trm_kaggle.simulate import dis_paper_config, paper_config

    assert block_calls(paper_config()) == (15, 240)
    assert block_calls(dis_paper_config()) == (3, 18)


def test_trm_submit_fine_tunes_with_the_models_objective_unless_told(tmp_path):
    from trm_kaggle.kaggle.finetune import build_model
    from trm_kaggle.kaggle.options import SubmitOptions
    from trm_kaggle.kaggle.submit import check_objective

    torch.manual_seed(1)
    trm = TRM(tiny_model_config(arc_shape(6), H_cycles=1, L_cycles=2, halt_max_steps=N_SUP))
    names = ["<blank>", "a", "b", "c", "d", "e"]
    save_checkpoint(tmp_path / "trm", trm, names, step=1)
    save_checkpoint(tmp_path / "dis", dis_model(), names, step=1)
    ids = ["<blank>", "x", "y"]

    def built(model: str, objective: str | None) -> TRM:
        options = SubmitOptions(out=tmp_path / "s.json", objective=objective)
        return build_model(types.SimpleNamespace(model_dir=tmp_path / model, options=options), CPU.device, ids)

    assert built("trm", None).config.objective == "trm" and built("dis", None).config.objective == "dis"
    started = built("trm", "dis")
    assert started.config.objective == "dis" and not started.step_emb.embedding_weight.any()
    check_objective(SubmitOptions(out=tmp_path / "s.json", objective="dis"), trm.config, tmp_path / "trm")
    with pytest.raises(UserError, match="cannot fine-tune with --objective trm"):
        check_objective(SubmitOptions(out=tmp_path / "s.json", objective="trm"), dis_model().config, tmp_path / "dis")


def test_with_one_step_dis_is_the_trm_token_loss_on_the_label():
    """N_sup = 1: frame 1 is the label and w_1 = 2·1/(1 + 1) = 1, so DIS's loss is TRM's
    lm_loss (and no halting term) — the reduction that pins the frame and weight arithmetic."""
    dis = dis_model(halt_max_steps=1)
    dis_step = build_train_step(dis, Schedule(warmup_steps=1), 4, CPU)
    b = dis_step.extras(dis_step, batch())
    carry, out = dis(dis.initial_carry(b), b)
    loss, _ = dis_step.loss(out, carry)
    _, trm_metrics = ACTLoss()(out, carry)
    torch.testing.assert_close(loss.detach(), trm_metrics["lm_loss"])
