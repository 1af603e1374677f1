"""Support code for the Day 3 lab *Explaining a tabular model* (``day3-tabular-explanations``).

Learners import these helpers; they are not asked to write them.  They cover
the plumbing of the lab, not the ideas it practises:

* :func:`load_adult_six` -- the real UCI Adult files, reduced to the six
  readable features of the Day 3 chapter (age, years of education, hours per
  week, capital gain, married, male) **in their own units**, split into train
  and test sets;
* :class:`SixFeatureSplit` -- that split, with :meth:`SixFeatureSplit.encode`,
  the encoding the network is trained on (log of capital gain, standardized
  with training statistics), so that the function the explainers see takes
  raw, readable rows;
* :class:`FunctionModel` -- a prediction function dressed as a fitted
  scikit-learn classifier, so ``sklearn.inspection.permutation_importance``
  can be run on it for comparison;
* :func:`exact_shapley_values` -- Shapley values by enumerating all
  coalitions (fine for six features), the ground truth KernelSHAP is
  checked against;
* :func:`lime_conditions` -- the conditions ("capital_gain <= 0.00",
  "married=0") that LIME's default quartile bins give one person, i.e. what
  each LIME weight is *about*;
* :func:`plot_fidelity`, :func:`plot_global_importances`,
  :func:`plot_local_explanations` -- the lab's figures (each returns its
  matplotlib Figure).

Nothing here downloads anything; everything is deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from rai.data import _read_adult_file, adult_files

__all__ = [
    "FEATURES", "BINARY_FEATURES", "SixFeatureSplit", "load_adult_six", "FunctionModel",
    "exact_shapley_values", "lime_conditions", "plot_fidelity", "plot_global_importances", "plot_local_explanations",
]

#: The six features of the lab, in column order.
FEATURES = ["age", "education_num", "hours_per_week", "capital_gain", "married", "male"]
#: The 0/1 features among them (LIME treats them as categorical).
BINARY_FEATURES = ["married", "male"]
_MARRIED = ("Married-civ-spouse", "Married-AF-spouse")  # living with a spouse, as in the chapter


@dataclass
class SixFeatureSplit:
    """Adult reduced to six features, in their own units, split into train and test sets.

    Attributes
    ----------
    X_train, X_test : numpy.ndarray, float64, shape (n, 6)
        Columns :data:`FEATURES`: age (years), education_num (years of
        education, 1-16), hours_per_week, capital_gain (US dollars), married
        (1 = married and living with a spouse), male (1 = recorded as male).
    y_train, y_test : numpy.ndarray, int64
        1 = income above $50K.
    feature_names : list of str
        :data:`FEATURES`.
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    feature_names: list[str] = field(default_factory=lambda: list(FEATURES))
    _mean: np.ndarray = field(default=None, repr=False)
    _std: np.ndarray = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._mean is None:
            encoded = self._log(self.X_train)
            self._mean = encoded.mean(axis=0)
            std = encoded.std(axis=0)
            self._std = np.where(std > 0, std, 1.0)

    @staticmethod
    def _log(X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64, ndmin=2)
        j = FEATURES.index("capital_gain")
        X[:, j] = np.log1p(np.clip(X[:, j], 0.0, None))
        return X

    def encode(self, X: np.ndarray) -> np.ndarray:
        """The network's input for raw rows ``X`` (n, 6): capital gain on a log scale, then every
        column standardized with the training split's mean and standard deviation (float32)."""
        return ((self._log(X) - self._mean) / self._std).astype(np.float32)

    def __repr__(self) -> str:
        return (f"SixFeatureSplit(train={self.X_train.shape}, test={self.X_test.shape}, "
                f"positive rate train={self.y_train.mean():.3f}, features={self.feature_names})")


def load_adult_six(
    n_samples: int | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    test_size: float = 0.3,
) -> SixFeatureSplit:
    """Read the UCI Adult files and keep the six features of the Day 3 chapter.

    Both original files (``adult.data`` and ``adult.test``) are pooled and
    rows with a missing value dropped (45 222 rows), as in
    :func:`rai.data.load_adult`; a subsample of ``n_samples`` rows (``None``
    or 0: all) and the train/test split are stratified by label and sex.

    >>> split = load_adult_six(n_samples=1000)
    >>> split.X_train.shape, split.X_test.shape
    ((700, 6), (300, 6))
    """
    from sklearn.model_selection import train_test_split

    frame = pd.concat([_read_adult_file(p) for p in adult_files(data_root)], ignore_index=True)
    frame = frame.dropna().reset_index(drop=True)
    y = (frame["income"] == ">50K").to_numpy(dtype=np.int64)
    strata = (frame["income"] + "/" + frame["sex"]).to_numpy()
    X = np.column_stack([
        frame["age"].to_numpy(dtype=np.float64),
        frame["education-num"].to_numpy(dtype=np.float64),
        frame["hours-per-week"].to_numpy(dtype=np.float64),
        frame["capital-gain"].to_numpy(dtype=np.float64),
        frame["marital-status"].isin(_MARRIED).to_numpy(dtype=np.float64),
        (frame["sex"] == "Male").to_numpy(dtype=np.float64),
    ])
    rows = np.arange(len(frame))
    if n_samples:  # None or 0 -> all rows
        if not 0 < n_samples <= len(frame):
            raise ValueError(f"n_samples must be between 1 and {len(frame)}, got {n_samples}")
        if n_samples < len(frame):
            rows, _ = train_test_split(rows, train_size=int(n_samples), stratify=strata, random_state=seed)
            rows = np.sort(rows)
    train, test = train_test_split(rows, test_size=test_size, stratify=strata[rows], random_state=seed)
    return SixFeatureSplit(X_train=X[train], X_test=X[test], y_train=y[train], y_test=y[test])


class FunctionModel:
    """A function ``X -> P(y = 1)`` dressed as a fitted scikit-learn binary classifier.

    Lets scikit-learn tools that want an estimator (``permutation_importance``)
    run on any prediction function: ``predict`` thresholds at 0.5.
    """

    _estimator_type = "classifier"

    def __init__(self, predict_fn: Callable[[np.ndarray], np.ndarray]):
        self.predict_fn = predict_fn
        self.classes_ = np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def fit(self, X, y=None):
        return self

    def get_params(self, deep: bool = True) -> dict:
        return {"predict_fn": self.predict_fn}

    def predict_proba(self, X) -> np.ndarray:
        p = np.asarray(self.predict_fn(np.asarray(X, dtype=np.float64)), dtype=np.float64)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def exact_shapley_values(predict_fn: Callable[[np.ndarray], np.ndarray], background: np.ndarray,
                         X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (interventional) Shapley values of ``predict_fn`` by enumerating all coalitions.

    The value of a coalition S for a row x is the mean of ``predict_fn`` over
    the background rows with the features in S set to x's values -- what
    ``shap``'s ``Independent`` masker computes.  Costs ``2**d * len(background)``
    model evaluations per row: fine for d = 6, hopeless for d = 30.

    Returns ``(values, base_values)``: shape (n, d) and (n,), float64.
    """
    background = np.asarray(background, dtype=np.float64)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    d = X.shape[1]
    masks = ((np.arange(2 ** d)[:, None] >> np.arange(d)) & 1).astype(bool)   # row k: the set bits of k
    sizes = masks.sum(axis=1)
    weight = np.array([factorial(s) * factorial(d - s - 1) / factorial(d) if s < d else 0.0 for s in sizes])
    values = np.zeros(X.shape, dtype=np.float64)
    base = np.zeros(len(X), dtype=np.float64)
    for i, x in enumerate(X):
        rows = np.where(masks[:, None, :], x, background[None, :, :]).reshape(-1, d)
        v = np.asarray(predict_fn(rows), dtype=np.float64).reshape(2 ** d, len(background)).mean(axis=1)
        base[i] = v[0]
        for j in range(d):
            without = np.flatnonzero(~masks[:, j])
            values[i, j] = np.sum(weight[without] * (v[without | (1 << j)] - v[without]))
    return values, base


def lime_conditions(X_train: np.ndarray, x: np.ndarray, feature_names: Sequence[str],
                    categorical_features: Sequence[int] = ()) -> list[str]:
    """What each of LIME's interpretable features means for the row ``x``.

    With its defaults, ``lime.lime_tabular.LimeTabularExplainer`` cuts every
    continuous feature into quartile bins of ``X_train`` and explains with
    indicators "x's feature is in *this* bin" (categorical features:
    "has *this* value").  A LIME weight is the effect of being in that bin
    rather than in the others -- so ``capital_gain <= 0.00`` gets a large
    weight when having *some* capital gain would change the prediction a lot.

    Returns one condition per feature, in feature order, worded as LIME does.
    """
    from lime.discretize import QuartileDiscretizer

    X_train = np.asarray(X_train, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    categorical = [int(j) for j in categorical_features]
    discretizer = QuartileDiscretizer(X_train, categorical, list(feature_names), random_state=0)
    bins = discretizer.discretize(x)
    conditions = []
    for j, name in enumerate(feature_names):
        if j in categorical:
            value = x[j]
            conditions.append(f"{name}={int(value) if float(value).is_integer() else value}")
        else:
            conditions.append(discretizer.names[j][int(bins[j])])
    return conditions


# -- figures ---------------------------------------------------------------------------------

def plot_fidelity(depths: Sequence[int], fidelity: Sequence[float], accuracy: Sequence[float],
                  black_box_accuracy: float, title: str = "A global surrogate tree: fidelity against depth"):
    """Fidelity (agreement with the black box) and accuracy (agreement with the labels) of
    surrogate trees of increasing depth, both on held-out data, with the black box's accuracy.

    What to look at: fidelity climbs towards 1 while accuracy levels off at the
    black box's own accuracy -- a surrogate copies the model, errors included.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(depths, fidelity, "o-", color="tab:blue", label="fidelity: agrees with the black box")
    ax.plot(depths, accuracy, "s--", color="tab:orange", label="accuracy: agrees with the true label")
    ax.axhline(black_box_accuracy, color="0.4", lw=1, ls=":", label="black box accuracy")
    ax.set_xticks(list(depths))
    ax.set_xlabel("surrogate tree depth (max_depth)")
    ax.set_ylabel("share of held-out people")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_global_importances(importances: pd.DataFrame,
                            title: str = "Global importance: which features matter, by method"):
    """Grouped bars: one group per feature, one bar per method, each method rescaled to sum to one.

    ``importances`` has one row per feature and one column per method (raw
    importances; negative values are clipped to zero before rescaling).
    Features are sorted by their mean share.
    """
    import matplotlib.pyplot as plt

    clipped = importances.clip(lower=0.0)
    shares = clipped / clipped.sum().replace(0.0, 1.0)
    shares = shares.loc[shares.mean(axis=1).sort_values(ascending=False).index]
    n_methods = shares.shape[1]
    x = np.arange(len(shares))
    width = 0.8 / n_methods
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colours = ["#3a7ca5", "#c05780", "#7a9e4d", "#d9a441", "0.5"]
    for k, method in enumerate(shares.columns):
        ax.bar(x + (k - (n_methods - 1) / 2) * width, shares[method].to_numpy(), width,
               label=str(method), color=colours[k % len(colours)])
    ax.set_xticks(x, [str(i) for i in shares.index])
    ax.set_ylabel("share of the method's total importance")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_local_explanations(explanations: Mapping[str, np.ndarray], feature_names: Sequence[str],
                            title: str = "One person, two local explanations"):
    """Horizontal bars of per-feature contributions, one bar per method, for one person.

    ``explanations`` maps a method name (e.g. ``"SHAP"``, ``"LIME"``) to its
    d contributions.  What to look at: do the methods agree on the *sign* and
    the *order* of the contributions, not only on which feature comes first?
    """
    import matplotlib.pyplot as plt

    names = list(explanations)
    d = len(feature_names)
    y = np.arange(d)
    height = 0.8 / max(1, len(names))
    colours = ["#3a7ca5", "#d9a441", "#c05780", "#7a9e4d"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * d + 1.4))
    for k, name in enumerate(names):
        ax.barh(y + (k - (len(names) - 1) / 2) * height, np.asarray(explanations[name], dtype=float),
                height, label=name, color=colours[k % len(colours)])
    ax.set_yticks(y, list(feature_names))
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("contribution to P(income > 50K)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="best")
    fig.tight_layout()
    return fig
