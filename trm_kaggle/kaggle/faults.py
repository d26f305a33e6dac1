"""Faults on demand, so tests can drive every failure path of a submission run for real.

Workers are separate processes, so a test cannot monkeypatch them: it sets
`TRM_KAGGLE_FAULTS` instead, e.g. `finetune_crash:rank=1,step=3;infer_oom:times=2`.
Unset (always, outside tests), every hook here does nothing.

    finetune_crash:rank=R,step=S   worker R dies (os._exit) before fine-tune step S
    finetune_error:step=S          every worker raises before fine-tune step S
    slow_step:seconds=X            each fine-tune step takes X s longer
    slow_probe:seconds=X           each warm-up probe (a timed fine-tune step) takes X s longer
    finetune_oom:times=N,above=B   the first N fine-tune forward passes of more than B rows raise OOM
    infer_oom:times=N,above=B      the first N inference batches of more than B rows raise OOM
    infer_crash:rank=R,chunk=C     inference worker R dies when it takes chunk C (neither given: every
                                   worker, at its first chunk)
    slow_chunk:seconds=X,rank=R    each inference chunk (of worker R only, if given) takes X s longer
    vote_error                     the supervisor's voting raises

Two more break learning on purpose, as negative controls of the held-out check
(tests/test_heldout.py): a run with either must score near zero where the real one scores high.

    wrong_rows                     inference predicts each variant with the embedding row half the table
                                   away (another task's, as an unrelated numbering of the rows would)
    wrong_inverse                  voting undoes each prediction's augmentation off by one dihedral
                                   transform (t -> t+1 mod 8), so every vote lands rotated or mirrored
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from trm_kaggle.augment import NUM_DIHEDRAL, parse_variant_name, variant_name

ENV = "TRM_KAGGLE_FAULTS"


KNOWN = ("finetune_crash", "finetune_error", "slow_step", "slow_probe", "finetune_oom", "infer_oom", "infer_crash",
         "slow_chunk", "vote_error", "wrong_rows", "wrong_inverse")


def active() -> dict[str, dict[str, float]]:
    """The faults TRM_KAGGLE_FAULTS asks for: name -> its arguments. ValueError (one line) for
    an unknown name or a malformed argument, so a misspelt control never runs as the real path."""
    spec = os.environ.get(ENV, "").strip()
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, _, args = item.partition(":")
        if name not in KNOWN:
            raise ValueError(f"{ENV}={spec!r}: unknown fault {name!r} (known: {', '.join(KNOWN)})")
        try:
            faults[name] = {k: float(v) for k, v in (a.split("=") for a in args.split(",") if a)}
        except ValueError:
            raise ValueError(f"{ENV}={spec!r}: {item!r}: arguments must be key=number, comma-separated") from None
    return faults


def describe() -> str | None:
    """The faults asked for, checked (ValueError as `active`), as the variable gives them; None without any."""
    return os.environ.get(ENV, "").strip() if active() else None


def _matches(fault: dict[str, float], **where: float) -> bool:
    return all(fault.get(k, v) == v for k, v in where.items())


def before_finetune_step(rank: int, step: int) -> None:
    faults = active()
    if "finetune_crash" in faults and _matches(faults["finetune_crash"], rank=rank, step=step):
        os._exit(17)
    if "finetune_error" in faults and _matches(faults["finetune_error"], step=step):
        raise RuntimeError(f"injected fault: fine-tuning fails at step {step}")
    if "slow_step" in faults:
        time.sleep(faults["slow_step"].get("seconds", 1.0))


def before_probe() -> None:
    fault = active().get("slow_probe")
    if fault:
        time.sleep(fault.get("seconds", 1.0))


_oom_raised = {"finetune_oom": 0, "infer_oom": 0}


def _maybe_oom(name: str, rows: int) -> None:
    fault = active().get(name)
    if fault and _oom_raised[name] < fault.get("times", 1) and rows > fault.get("above", 0):
        _oom_raised[name] += 1
        raise torch.cuda.OutOfMemoryError(f"injected fault: CUDA out of memory for a batch of {rows}")


def before_finetune_forward(rows: int) -> None:
    _maybe_oom("finetune_oom", rows)


def before_infer_batch(rows: int) -> None:
    _maybe_oom("infer_oom", rows)


def before_infer_chunk(rank: int, chunk: int) -> None:
    faults = active()
    if "infer_crash" in faults and _matches(faults["infer_crash"], rank=rank, chunk=chunk):
        os._exit(17)
    if "slow_chunk" in faults and _matches(faults["slow_chunk"], rank=rank):
        time.sleep(faults["slow_chunk"].get("seconds", 1.0))


def before_vote() -> None:
    if "vote_error" in active():
        raise RuntimeError("injected fault: voting fails")


def identifier_map(rows: int) -> np.ndarray | None:
    """wrong_rows: dataset row r -> model row r + (rows - 1) // 2, wrapping within 1..rows-1
    (<blank> stays), for inference's `predict(identifier_map=...)`; None (the rows as they
    are) otherwise. Half the table away is another task's row whenever there are two or more
    tasks with as many variants each: the next row would often be the same task's next
    variant, whose rule a colour-blind family (a shift) shares."""
    if "wrong_rows" not in active():
        return None
    return np.concatenate([[0], np.roll(np.arange(1, rows), -((rows - 1) // 2))]).astype(np.int64)


def variant_names(names: list[str]) -> list[str]:
    """wrong_inverse: each variant named with the next dihedral transform, so that voting
    undoes the wrong one; the names as they are otherwise."""
    if "wrong_inverse" not in active():
        return names
    def misnamed(name: str) -> str:
        task_id, t, cmap = parse_variant_name(name)
        return variant_name(task_id, (t + 1) % NUM_DIHEDRAL, cmap)
    return names[:1] + [misnamed(name) for name in names[1:]]
