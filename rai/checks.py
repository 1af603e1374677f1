"""Type-strict assertion helpers for the test cells of the labs.

Why not plain ``assert actual == expected``?  Because ``==`` runs code chosen
by whoever built ``actual``.  A learner (or a bug) can hand back an object
whose ``__eq__`` always answers ``True`` -- or a subclass of ``float``,
``numpy.ndarray`` or ``pandas.DataFrame`` that claims equality -- and a naive
test would award the points.  Every helper here therefore checks the *exact*
type of ``actual`` first (``type(x) is T``, never ``isinstance``) and only
then compares values, using operations whose behaviour is fixed by that
checked type (``float()`` of a real float, numpy on a real ``float64`` array).

The module depends on numpy and pandas only and keeps no state, so the same
checks can run inside a notebook or in a separate, trusted grading process.

Examples
--------
>>> assert_close(0.1 + 0.2, 0.3)
>>> assert_type(3, int)
>>> assert_between(0.5, 0.0, 1.0)
>>> assert_equal(["a", 1, 2.0], ["a", 1, 2.0])
>>> class AlwaysEqual:
...     def __eq__(self, other):
...         return True
>>> assert_close(AlwaysEqual(), 0.3)
Traceback (most recent call last):
...
AssertionError: value: expected a number (float, int, numpy.float64, numpy.float32 or numpy.int64), got AlwaysEqual
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["assert_type", "assert_close", "assert_equal", "assert_between"]

# Scalar types accepted as "a number".  bool is deliberately absent: True is an
# int in Python, but a test expecting a rate should not accept a boolean.
_NUMBER_TYPES: tuple[type, ...] = (float, int, np.float64, np.float32, np.int64)
# Types whose == is the built-in one and therefore trustworthy once the type
# has been checked exactly.
_ATOM_TYPES: tuple[type, ...] = (str, int, bool, type(None), np.int64, np.bool_, np.str_)
_NUMERIC_DTYPE_KINDS = "biuf"  # bool, signed int, unsigned int, float


def _type_name(value_or_type: Any) -> str:
    """A readable name: ``numpy.float64``, ``pandas.DataFrame``, ``float``."""
    t = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    module = t.__module__
    if module == "builtins":
        return t.__qualname__
    if module.startswith("numpy"):
        return f"numpy.{t.__qualname__}"
    if module.startswith("pandas"):
        return f"pandas.{t.__qualname__}"
    return t.__qualname__


def _is_exactly(value: Any, types: tuple[type, ...]) -> bool:
    # identity, not ==: a metaclass could make a fake type compare equal to float
    t = type(value)
    return any(t is candidate for candidate in types)


def _names(types: tuple[type, ...]) -> str:
    names = [_type_name(t) for t in types]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def assert_type(value: Any, *types: type, what: str = "value") -> None:
    """Assert that ``type(value)`` is exactly one of ``types`` (subclasses fail).

    >>> assert_type(1.5, float)
    >>> assert_type(np.float64(1.5), float, np.float64)
    >>> assert_type(True, int)
    Traceback (most recent call last):
    ...
    AssertionError: value: expected type int, got bool
    """
    if not types:
        raise TypeError("assert_type needs at least one type")
    if not _is_exactly(value, types):
        raise AssertionError(f"{what}: expected type {_names(types)}, got {_type_name(value)}")


def _check_number(value: Any, what: str) -> float:
    """Check ``value`` is a finite number of an accepted exact type; return it as float."""
    if not _is_exactly(value, _NUMBER_TYPES):
        raise AssertionError(f"{what}: expected a number ({_names(_NUMBER_TYPES)}), got {_type_name(value)}")
    number = float(value)  # safe: the type is one whose float() we know
    if not math.isfinite(number):
        raise AssertionError(f"{what}: expected a finite number, got {number!r}")
    return number


def _expected_number(expected: Any) -> float:
    # expected comes from the (trusted) test, but still refuse nonsense early
    if isinstance(expected, (bool, np.bool_)) or not isinstance(expected, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected value must be a real number, got {type(expected).__name__}")
    return float(expected)


def _check_array(actual: Any, what: str) -> np.ndarray:
    if type(actual) is not np.ndarray:
        raise AssertionError(f"{what}: expected numpy.ndarray, got {_type_name(actual)}")
    if actual.dtype.kind not in _NUMERIC_DTYPE_KINDS:
        raise AssertionError(f"{what}: expected a numeric array, got dtype {actual.dtype}")
    return actual


def _arrays_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """Element-wise closeness of two numeric arrays already type-checked."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: expected shape {expected.shape}, got {actual.shape}")
    a = actual.astype(np.float64, copy=False)
    e = expected.astype(np.float64, copy=False)
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    if not np.array_equal(a_nan, e_nan):
        where = np.argwhere(a_nan != e_nan)[0]
        raise AssertionError(f"{what}: NaN positions differ (first at index {tuple(int(i) for i in where)})")
    ok = a_nan | (np.abs(a - e) <= atol + rtol * np.abs(e))
    if not bool(np.all(ok)):
        bad = np.argwhere(~ok)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {a.size} values differ; first at index {first}: "
            f"got {a[first]!r}, expected {e[first]!r} (rtol={rtol}, atol={atol})"
        )


def _canonical_label(label: Any, what: str) -> tuple[str, Any]:
    """Turn an index/column label into a plain, comparable (kind, value) pair.

    Labels are compared through this form so that ``"Female"`` and
    ``numpy.str_("Female")`` match, while objects of unknown type are refused
    before any of their methods run.
    """
    t = type(label)
    if t is str or t is np.str_:
        return ("str", str(label))
    if t is bool or t is np.bool_:
        return ("bool", bool(label))
    if t is int or (t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)):
        return ("int", int(label))
    if t is float or t is np.float64 or t is np.float32:
        return ("float", float(label))
    if label is None:
        return ("none", None)
    if t is tuple:
        return ("tuple", tuple(_canonical_label(x, what) for x in label))
    raise AssertionError(f"{what}: unexpected label type {_type_name(label)}")


def _check_labels(actual_index: Any, expected_index: pd.Index, what: str) -> None:
    if not isinstance(actual_index, pd.Index):  # pandas guarantees this for real Series/DataFrames
        raise AssertionError(f"{what}: expected a pandas Index, got {_type_name(actual_index)}")
    got = [_canonical_label(x, what) for x in actual_index.tolist()]
    want = [_canonical_label(x, what + " (expected)") for x in expected_index.tolist()]
    if got != want:  # lists of plain tuples: built-in comparison only
        raise AssertionError(f"{what}: expected {[v for _, v in want]}, got {[v for _, v in got]}")


def _frame_values(frame: pd.Series | pd.DataFrame, what: str) -> np.ndarray:
    dtypes = [frame.dtype] if type(frame) is pd.Series else list(frame.dtypes)
    for dtype in dtypes:
        if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_DTYPE_KINDS:
            raise AssertionError(f"{what}: expected numeric values, got dtype {dtype}")
    return np.asarray(frame.to_numpy(), dtype=np.float64)


def assert_close(actual: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 1e-9, what: str = "value") -> None:
    """Assert ``actual`` is numerically close to ``expected``, with strict types.

    The kind of ``expected`` decides what ``actual`` must be:

    * a number -> ``actual`` is exactly ``float``, ``int`` (not ``bool``),
      ``numpy.float64``, ``numpy.float32`` or ``numpy.int64``, finite, and
      ``abs(actual - expected) <= atol + rtol * abs(expected)``;
    * a ``numpy.ndarray`` (or list) -> ``type(actual) is numpy.ndarray`` with a
      numeric dtype, the same shape, all values close and NaNs in the same places;
    * a ``pandas.Series``/``DataFrame`` -> exactly that type, the same index
      (and columns, in order), numeric values, all close.

    >>> assert_close(1 / 3, 0.333333333, rtol=1e-6)
    >>> assert_close(np.array([0.5, np.nan]), np.array([0.5, np.nan]))
    >>> assert_close(pd.Series([0.2, 0.4], index=["a", "b"]), pd.Series([0.2, 0.4], index=["a", "b"]))
    >>> assert_close(np.float64(0.5), 0.6)
    Traceback (most recent call last):
    ...
    AssertionError: value: got 0.5, expected 0.6 (rtol=1e-06, atol=1e-09)
    """
    if isinstance(expected, pd.DataFrame) or isinstance(expected, pd.Series):
        kind = pd.DataFrame if isinstance(expected, pd.DataFrame) else pd.Series
        if type(actual) is not kind:
            raise AssertionError(f"{what}: expected {_type_name(kind)}, got {_type_name(actual)}")
        _check_labels(actual.index, expected.index, f"{what}: index")
        if kind is pd.DataFrame:
            _check_labels(actual.columns, expected.columns, f"{what}: columns")
        _arrays_close(_frame_values(actual, what), _frame_values(expected, what + " (expected)"), rtol, atol, what)
        return
    if isinstance(expected, (np.ndarray, list)):
        expected_array = np.asarray(expected)
        if expected_array.dtype.kind not in _NUMERIC_DTYPE_KINDS:
            raise TypeError(f"expected array must be numeric, got dtype {expected_array.dtype}")
        _arrays_close(_check_array(actual, what), expected_array, rtol, atol, what)
        return
    e = _expected_number(expected)
    a = _check_number(actual, what)
    if not abs(a - e) <= atol + rtol * abs(e):
        raise AssertionError(f"{what}: got {a!r}, expected {e!r} (rtol={rtol}, atol={atol})")


def assert_between(actual: Any, low: float, high: float, *, what: str = "value") -> None:
    """Assert ``actual`` is a number of a strict type (see :func:`assert_close`) with ``low <= actual <= high``.

    >>> assert_between(0.25, 0, 1)
    >>> assert_between(1.5, 0, 1)
    Traceback (most recent call last):
    ...
    AssertionError: value: expected a number in [0.0, 1.0], got 1.5
    """
    lo, hi = _expected_number(low), _expected_number(high)
    a = _check_number(actual, what)
    if not lo <= a <= hi:
        raise AssertionError(f"{what}: expected a number in [{lo!r}, {hi!r}], got {a!r}")


def assert_equal(actual: Any, expected: Any, *, what: str = "value") -> None:
    """Assert exact equality, checking the exact type first.

    * ``str``, ``int``, ``bool``, ``None`` (and numpy ``int64``/``bool_``/``str_``):
      same exact type, then ``==`` (safe: the built-in comparison of that type);
    * ``float`` and numpy floats: same exact type, compared with :func:`assert_close`;
    * ``list``/``tuple``: same exact type and length, items compared recursively;
    * ``dict``: exactly ``dict``, keys of plain types, the same key set, values
      compared recursively;
    * ``numpy.ndarray``: exactly ``ndarray``, same dtype and shape, equal values;
    * pandas objects: as :func:`assert_close` with no tolerance.

    >>> assert_equal({"a": [1, 2.0]}, {"a": [1, 2.0]})
    >>> assert_equal((1, 2), [1, 2])
    Traceback (most recent call last):
    ...
    AssertionError: value: expected type list, got tuple
    """
    t = type(expected)
    if t in (float, np.float64, np.float32):
        assert_type(actual, t, what=what)
        assert_close(actual, expected, what=what)
        return
    if isinstance(expected, (pd.Series, pd.DataFrame)):
        assert_close(actual, expected, rtol=0.0, atol=0.0, what=what)
        return
    if t is np.ndarray:
        _check_array(actual, what) if expected.dtype.kind in _NUMERIC_DTYPE_KINDS else assert_type(actual, np.ndarray, what=what)
        if actual.dtype != expected.dtype:
            raise AssertionError(f"{what}: expected dtype {expected.dtype}, got {actual.dtype}")
        if actual.dtype.kind == "O":
            raise TypeError("assert_equal does not compare object arrays")
        if actual.shape != expected.shape or not bool(np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f")):
            raise AssertionError(f"{what}: arrays differ")
        return
    assert_type(actual, t, what=what)
    if t in _ATOM_TYPES:
        if not actual == expected:  # built-in __eq__ of an exactly checked type
            raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")
        return
    if t in (list, tuple):
        if len(actual) != len(expected):
            raise AssertionError(f"{what}: expected length {len(expected)}, got {len(actual)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_equal(a, e, what=f"{what}[{i}]")
        return
    if t is dict:
        # Keys are checked for plain types before any hashing/equality runs on them.
        for key in list(actual.keys()):
            _canonical_label(key, f"{what}: key")
        got = sorted(_canonical_label(k, what) for k in actual.keys())
        want = sorted(_canonical_label(k, what) for k in expected.keys())
        if got != want:
            raise AssertionError(f"{what}: expected keys {sorted(map(repr, expected))}, got {sorted(map(repr, actual))}")
        for key in expected:
            assert_equal(actual[key], expected[key], what=f"{what}[{key!r}]")
        return
    raise TypeError(f"assert_equal does not know how to compare {_type_name(t)}")
