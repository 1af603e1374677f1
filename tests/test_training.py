"""The course's accelerate training loop: one process, or real data-parallel processes (gloo)."""
from __future__ import annotations

import numpy as np
import pytest

from rai.training import launch, train_classifier


def data(n=512, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def test_two_processes_with_the_same_global_batch_follow_the_same_loss_curve():
    """Data parallelism changes where the gradient is computed, not what it is: 2 processes with
    batch 32 each average the gradient of the same 64 examples one process sees in batch 64."""
    X, y = data()
    one = train_classifier(X, y, epochs=3, batch_size=64, num_processes=1, lr=1e-2, progress=False)
    two = train_classifier(X, y, epochs=3, batch_size=32, num_processes=2, lr=1e-2, progress=False)
    assert len(one.history) == len(two.history) == 3
    np.testing.assert_allclose(two.history, one.history, rtol=1e-4)
    assert one.history[-1] < one.history[0]                       # it learned something
    np.testing.assert_array_equal(two.predict(X), one.predict(X))


def test_a_single_process_run_leaves_no_state_behind():
    """accelerate's global state is reset: another run with other settings works afterwards."""
    X, y = data(n=128)
    first = train_classifier(X, y, epochs=1, num_processes=1, progress=False)
    second = train_classifier(X, y, epochs=1, num_processes=1, mixed_precision="bf16", progress=False)
    assert len(first.history) == len(second.history) == 1


def test_launch_refuses_no_processes():
    with pytest.raises(ValueError, match="at least 1"):
        launch(print, (), num_processes=0)
