"""Plots used by the labs (matplotlib only; every function returns its Figure).

Returning the figure rather than calling ``plt.show()`` lets a notebook show
it, a test inspect it, and a script save it, with the same call.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["plot_group_metrics", "plot_tradeoff", "plot_training_history"]

_METRIC_LABELS = {
    "selection_rate": "selection rate",
    "tpr": "true positive rate",
    "fpr": "false positive rate",
    "accuracy": "accuracy",
}


def plot_group_metrics(
    before: pd.DataFrame,
    after: pd.DataFrame,
    title: str = "Per-group metrics before and after mitigation",
    metrics: Sequence[str] = ("selection_rate", "tpr", "fpr"),
    labels: tuple[str, str] = ("before", "after"),
):
    """Grouped bars of per-group rates, one panel per metric, before vs after.

    Parameters
    ----------
    before, after : pandas.DataFrame
        Indexed by group (e.g. ``Female``, ``Male``), one column per metric
        (as returned by the lab's ``group_metrics``).
    title : str
        Figure title.
    metrics : sequence of str
        Columns to plot, one panel each.
    labels : (str, str)
        Legend labels of the two models.

    What to look at: within each panel, the *difference between the bars of
    the groups* is the disparity; mitigation should bring the "after" bars of
    the groups closer together.
    """
    import matplotlib.pyplot as plt

    groups = [str(g) for g in before.index]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), sharey=True, squeeze=False)
    x = np.arange(len(groups))
    width = 0.38
    for ax, metric in zip(axes[0], metrics):
        for offset, frame, label, colour in ((-width / 2, before, labels[0], "0.65"),
                                             (width / 2, after, labels[1], "tab:blue")):
            values = frame.reindex(before.index)[metric].to_numpy(dtype=float)
            bars = ax.bar(x + offset, values, width, label=label, color=colour)
            ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.set_xticks(x, groups)
        ax.set_title(_METRIC_LABELS.get(metric, metric))
        ax.set_ylim(0, 1.08)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(loc="upper right", frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_tradeoff(
    points: Mapping[str, tuple[float, float]] | Iterable[tuple[str, float, float]],
    xlabel: str = "fairness gap (lower is fairer)",
    ylabel: str = "test accuracy",
    title: str = "Accuracy against fairness gap",
):
    """Scatter of models as (fairness gap, accuracy) points, labelled by name.

    ``points`` is ``{name: (gap, accuracy)}`` or an iterable of
    ``(name, gap, accuracy)``.  The best corner is top left: accurate and
    fair.  Moving from one point to another shows what a mitigation bought
    (horizontal distance) and what it cost (vertical distance).
    """
    import matplotlib.pyplot as plt

    items = list(points.items()) if isinstance(points, Mapping) else [(n, (g, a)) for n, g, a in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, (gap, accuracy)) in enumerate(items):
        ax.scatter([gap], [accuracy], s=70, color=plt.cm.tab10(i % 10), zorder=2, label=name)
        ax.annotate(name, (gap, accuracy), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.3, y=0.2)  # room for the labels next to the points
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_training_history(history: Sequence[float], title: str = "Training loss"):
    """Line plot of the mean training loss per epoch."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(history) + 1), history, "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean binary cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
