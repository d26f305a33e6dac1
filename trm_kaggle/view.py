"""What ARC people look at: a task's grids beside the two attempts and the solution, and a
training run's curves. Drawn with matplotlib (the `view` extra), written atomically.

    task_figure(task, attempts, solutions) -> Figure   one task: demonstrations, then per test
                                                       input: input, attempt 1, attempt 2, solution
    write_task_views(tasks, submission, solutions, out) -> index.html and one PNG per task
    write_curves(metrics.jsonl, out.png)                loss, exact accuracy, learning rates, pass@K
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trm_kaggle.arc import Task
from trm_kaggle.errors import UserError

# The ARC colours 0..9, as the ARC Prize's own viewer draws them.
ARC_COLOURS = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B",
               "#7FDBFF", "#870C25"]
VIEW_EXTRA = "pip install 'trm-kaggle[view]'"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; UserError naming the extra when missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(f"trm-view draws with matplotlib: {VIEW_EXTRA}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_grid(ax, grid: np.ndarray | None, title: str, colour: str = "black") -> None:
    """One grid, cells in the ARC colours with thin grey lines; an empty panel for None."""
    from matplotlib.colors import ListedColormap

    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, color=colour)
    if grid is None:
        ax.set_axis_off()
        return
    ax.imshow(grid, cmap=ListedColormap(ARC_COLOURS), vmin=0, vmax=9, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
    ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
    ax.grid(which="minor", color="#555555", linewidth=0.5)
    ax.tick_params(which="minor", length=0)


def verdicts(attempts: Sequence[np.ndarray], solution: np.ndarray | None) -> list[bool | None]:
    """Per attempt: equal to the solution (True/False), or None when the solution is unknown."""
    if solution is None:
        return [None] * len(attempts)
    return [a.shape == solution.shape and bool((a == solution).all()) for a in attempts]


def task_figure(task: Task, attempts: Sequence[Sequence[np.ndarray]] | None,
                solutions: Sequence[np.ndarray] | None):
    """A matplotlib Figure: one row per demonstration pair (input, output), then one row per
    test input (input, attempt 1, attempt 2, solution), attempts titled right or wrong."""
    plt = pyplot()
    rows = len(task.train) + len(task.test)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for r, pair in enumerate(task.train):
        draw_grid(axes[r][0], pair.input, f"demo {r + 1} input")
        draw_grid(axes[r][1], pair.output, f"demo {r + 1} output")
        axes[r][2].set_axis_off()
        axes[r][3].set_axis_off()
    for i, query in enumerate(task.test):
        r = len(task.train) + i
        solution = solutions[i] if solutions is not None else query.output
        tries = list(attempts[i]) if attempts is not None else []
        draw_grid(axes[r][0], query.input, f"test {i + 1} input")
        for j, (grid, right) in enumerate(zip(tries, verdicts(tries, solution))):
            mark = "" if right is None else (" ✓ right" if right else " ✗ wrong")
            draw_grid(axes[r][1 + j], grid, f"attempt {j + 1}{mark}",
                      "black" if right is None else ("green" if right else "red"))
        for j in range(len(tries), 2):
            axes[r][1 + j].set_axis_off()
        draw_grid(axes[r][3], solution, "solution" if solution is not None else "")
    fig.suptitle(f"task {task.id}", fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    """PNG written beside `path` and renamed: a reader never sees half a picture."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=80)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)


def write_task_views(tasks: Sequence[Task], submission: dict | None, solutions: dict | None,
                     out: Path) -> list[dict[str, Any]]:
    """OUT/<task>.png per task and OUT/index.html showing them with each task's score; returns
    one row per task (id, test outputs, right: None without solutions)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        attempts = submission.get(task.id) if submission is not None else None
        task_solutions = solutions.get(task.id) if solutions is not None else None
        save_figure(task_figure(task, attempts, task_solutions), out / f"{task.id}.png")
        known = task_solutions if task_solutions is not None else [q.output for q in task.test]
        right = None
        if attempts is not None and all(s is not None for s in known):
            right = sum(any(verdicts(a, s)) for a, s in zip(attempts, known))
        rows.append({"task": task.id, "test_outputs": len(task.test), "right": right})
    write_index(rows, out)
    return rows


def write_index(rows: list[dict[str, Any]], out: Path) -> None:
    cells = []
    for row in rows:
        score = "" if row["right"] is None else f" — {row['right']}/{row['test_outputs']} right"
        name = html.escape(row["task"])
        cells.append(f'<figure><img src="{name}.png" alt="task {name}"><figcaption>{name}{score}</figcaption></figure>')
    page = ("<!doctype html><meta charset='utf-8'><title>trm-view tasks</title>"
            "<style>figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:640px}</style>"
            f"<h1>{len(rows)} tasks</h1>\n" + "\n".join(cells) + "\n")
    tmp = out / ".index.html.partial"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "index.html")


CURVES = [("loss", ["loss", "lm_loss"]), ("exact accuracy", ["exact_accuracy", "eval_exact_accuracy"]),
          ("learning rate", ["lr_trunk", "lr_puzzle_emb"])]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); give a trm-pretrain run_dir") from None
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise UserError(f"{path}: line {n} is not JSON") from None
    if not records:
        raise UserError(f"{path}: empty: the run logged nothing yet")
    return records


def write_curves(metrics: Path, out: Path) -> list[str]:
    """A PNG of metrics.jsonl against the step: loss, exact accuracy, learning rates, and
    pass@K at evaluations when there were any. Returns the names plotted."""
    plt = pyplot()
    records = read_metrics(metrics)
    pass_keys = sorted({k for r in records for k in r if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    panels = CURVES + ([("pass@K at evaluations", pass_keys)] if pass_keys else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True, squeeze=False)
    plotted = []
    for ax, (title, keys) in zip(axes[:, 0], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r and "step" in r]
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key)
                plotted.append(key)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("optimizer step")
    fig.suptitle(str(metrics.parent), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    return plotted
