"""rai.checks: the type-strict helpers every lab's tests use. Impostors must fail."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rai.checks import assert_between, assert_close, assert_equal, assert_type


class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __float__(self):
        return 0.5

    def __abs__(self):
        return 0.0

    def __lt__(self, other):
        return True

    __le__ = __gt__ = __ge__ = __lt__


class SneakyFloat(float):
    def __eq__(self, other):
        return True

    def __sub__(self, other):
        return 0.0

    __rsub__ = __sub__


class SneakyArray(np.ndarray):
    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)


class SneakyFrame(pd.DataFrame):
    def equals(self, other):
        return True


@pytest.mark.parametrize("impostor", [AlwaysEqual(), SneakyFloat(0.1), True, "0.5", None, [0.5]])
def test_assert_close_rejects_impostors_of_a_float(impostor):
    with pytest.raises(AssertionError):
        assert_close(impostor, 0.5)


def test_assert_close_accepts_real_numbers_within_tolerance():
    assert_close(0.5 + 1e-12, 0.5)
    assert_close(np.float64(0.25), 0.25)
    assert_close(3, 3)
    with pytest.raises(AssertionError):
        assert_close(0.51, 0.5, atol=1e-3)
    with pytest.raises(AssertionError):
        assert_close(float("nan"), 0.5)


def test_assert_close_arrays_check_type_shape_and_values():
    expected = np.array([0.1, 0.2, 0.3])
    assert_close(expected.copy(), expected)
    with pytest.raises(AssertionError):
        assert_close(expected.view(SneakyArray), expected)
    with pytest.raises(AssertionError):
        assert_close(expected[:2].copy(), expected)
    with pytest.raises(AssertionError):
        assert_close(expected.tolist(), expected)
    with pytest.raises(AssertionError):
        assert_close(expected + 0.01, expected)


def test_assert_close_frames_check_type_labels_and_values():
    expected = pd.DataFrame({"tpr": [0.5, 0.7], "fpr": [0.1, 0.2]}, index=["a", "b"])
    assert_close(expected.copy(), expected)
    with pytest.raises(AssertionError):
        assert_close(SneakyFrame(expected.copy()), expected)
    with pytest.raises(AssertionError):
        assert_close(expected[["fpr", "tpr"]], expected)  # column order matters
    with pytest.raises(AssertionError):
        assert_close(expected.rename(index={"b": "c"}), expected)
    wrong = expected.copy()
    wrong.loc["a", "tpr"] = 0.9
    with pytest.raises(AssertionError):
        assert_close(wrong, expected)


def test_assert_type_is_exact():
    assert_type(1.0, float)
    with pytest.raises(AssertionError):
        assert_type(SneakyFloat(1.0), float)
    with pytest.raises(AssertionError):
        assert_type(True, int)


def test_assert_equal_and_between():
    assert_equal({"a": [1, 2.0], "b": "x"}, {"a": [1, 2.0], "b": "x"})
    with pytest.raises(AssertionError):
        assert_equal(AlwaysEqual(), "x")
    with pytest.raises(AssertionError):
        assert_equal({"a": [1, 2]}, {"a": (1, 2)})
    assert_between(0.3, 0.0, 1.0)
    with pytest.raises(AssertionError):
        assert_between(AlwaysEqual(), 0.0, 1.0)
    with pytest.raises(AssertionError):
        assert_between(1.5, 0.0, 1.0)
