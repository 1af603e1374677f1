"""The training loop of the labs, written once with Hugging Face ``accelerate``.

Students call :func:`train_classifier`; they are not asked to write it.  It
is here so that the *same* code runs

* on a laptop CPU in one process (``num_processes=1``: no fork, no
  ``torch.distributed``),
* on CPU cores in several processes (``num_processes=2`` in the grading
  profile: real data-parallel training over gloo),
* on one GPU or on the several GPUs of a cluster node (``accelerate`` picks
  the device; nothing here says ``cpu`` or ``cuda``), with mixed precision if
  asked.

Several processes are started with :func:`accelerate.notebook_launcher`,
which forks the current Python process, so it also works inside Jupyter and
inside papermill runs.  A forked worker cannot return a value to the caller,
so the main worker saves the trained weights and the loss history to a file,
which the caller loads back.

Example
-------
>>> from rai.data import load_adult
>>> data = load_adult(n_samples=1000)
>>> clf = train_classifier(data.X_train, data.y_train, epochs=2, progress=False)
>>> clf.predict_proba(data.X_test).shape == (len(data.X_test), 2)
True
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["TrainedClassifier", "build_model", "launch", "launch_for_result", "make_accelerator",
           "train_classifier"]

RESULT_FILE = "classifier.pt"


def build_model(n_features: int, hidden_units: int | Sequence[int] = 64):
    """A small multilayer perceptron with one output logit (positive class).

    ``hidden_units=0`` (or ``()``) gives logistic regression; an int gives one
    hidden layer of that width; a sequence gives one hidden layer per entry.
    """
    import torch.nn as nn

    widths = [] if not hidden_units else ([hidden_units] if isinstance(hidden_units, int) else list(hidden_units))
    layers: list[nn.Module] = []
    previous = n_features
    for width in widths:
        layers += [nn.Linear(previous, int(width)), nn.ReLU()]
        previous = int(width)
    layers.append(nn.Linear(previous, 1))
    return nn.Sequential(*layers)


@dataclass
class TrainedClassifier:
    """A trained binary classifier, on the CPU, ready for predictions.

    It follows the scikit-learn conventions where they matter for the labs
    (``classes_``, ``predict_proba`` with one column per class, fitted), so it
    can be handed to fairlearn or scikit-learn tools that expect a fitted
    classifier.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in evaluation mode, on the CPU.
    history : list of float
        Mean training loss (binary cross-entropy) of each epoch, over all
        processes.
    config : dict
        The settings it was trained with.
    train_seconds : float
        Wall-clock time of the training (including starting the processes).
    """

    model: Any
    history: list[float]
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    classes_: np.ndarray = field(default_factory=lambda: np.array([0, 1]))

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Class probabilities, shape ``(n, 2)``, float64: column 1 is P(y = 1 | x)."""
        import torch

        X = np.asarray(X, dtype=np.float32)
        self.model.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                logits = self.model(torch.from_numpy(X[start:start + batch_size])).squeeze(-1)
                outputs.append(torch.sigmoid(logits.double()).numpy())
        p = np.concatenate(outputs) if outputs else np.zeros(0)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Hard predictions (int64 array of 0/1): 1 where P(y = 1 | x) >= ``threshold``."""
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)


def _free_port() -> int:
    # A fixed port (accelerate's default is 29500) would make two trainings on
    # the same machine -- two students graded side by side -- collide.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerator_options(mixed_precision: str = "no", cpu: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``Accelerator`` in this process (call it inside the launched function).

    Returns ``{"mixed_precision": ..., "cpu": ...}``:

    * ``cpu=True`` when there is no GPU and several processes run: accelerate then sets up gloo data
      parallelism on the CPU cores (without it, each process would train alone);
    * ``mixed_precision`` as asked, except ``"fp16"`` without a GPU, which becomes ``"no"`` (fp16
      autocast needs a GPU; ``"bf16"`` works on CPUs).

    ``cpu=True`` forces the CPU (and gloo) even where there are GPUs -- e.g. for a two-process
    demonstration on a node with a single GPU.  With several processes on CPUs it also gives each
    process its share of the cores (``torch.set_num_threads``), so that they do not oversubscribe them.
    """
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    has_gpu = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    if cpu:
        has_gpu = False
    if mixed_precision == "fp16" and not has_gpu:
        mixed_precision = "no"
    multi_cpu = world_size > 1 and not has_gpu
    if multi_cpu:
        threads = max(1, (os.cpu_count() or 1) // world_size)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)
    return {"mixed_precision": mixed_precision, "cpu": multi_cpu or bool(cpu)}


def make_accelerator(mixed_precision: str = "no"):
    """The ``Accelerator`` for this process, whether it runs alone or is one of several.

    Call it inside the function every process runs (after the fork).  Its arguments come from
    :func:`accelerator_options`: fp16 falls back to full precision where there is no GPU, and several
    processes on CPUs get gloo data parallelism with the cores shared out between them.
    """
    from accelerate import Accelerator

    options = accelerator_options(mixed_precision)
    if options["mixed_precision"] != mixed_precision and int(os.environ.get("RANK", "0")) == 0:
        print("mixed_precision='fp16' needs a GPU; training in full precision on the CPU.")
    return Accelerator(**options)


def launch(worker: Callable, args: tuple, num_processes: int = 1, mixed_precision: str = "no") -> None:
    """Run ``worker(*args)`` in this process, or in ``num_processes`` data-parallel processes.

    Several processes are started with :func:`accelerate.notebook_launcher` on a free port (two
    notebooks graded side by side must not collide on accelerate's default one), talking over the
    loopback (the host name may not resolve on a laptop or in a sandbox).  In this process,
    accelerate's global state is reset afterwards so that a later training with other settings,
    or a multi-process launch, works in the same notebook.  ``worker`` should build its
    ``Accelerator`` with :func:`make_accelerator` and hand its result back through a file.
    """
    if int(num_processes) < 1:
        raise ValueError("num_processes must be at least 1")
    if int(num_processes) == 1:
        from accelerate.state import AcceleratorState, GradientState

        try:
            worker(*args)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        return
    from accelerate import notebook_launcher

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # in a sandbox without a resolvable host name, c10d logs a harmless warning per process
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    notebook_launcher(worker, args=args, num_processes=int(num_processes), mixed_precision=mixed_precision,
                      use_port=str(_free_port()))


def launch_for_result(worker: Callable, args: tuple, num_processes: int = 1, mixed_precision: str = "no",
                      output_dir: str | os.PathLike | None = None, filename: str = RESULT_FILE) -> dict:
    """:func:`launch` ``worker(*args, result_path)`` and load what its main process saved there.

    ``result_path`` is a file in ``output_dir`` (kept) or in a temporary directory (removed
    afterwards); a stale file from an earlier run is never loaded.  The result is read with
    ``torch.load(weights_only=True)``: tensors and plain containers only.
    """
    import torch

    keep = output_dir is not None
    directory = Path(output_dir) if keep else Path(tempfile.mkdtemp(prefix="rai-train-"))
    directory.mkdir(parents=True, exist_ok=True)
    result_path = directory / filename
    if result_path.exists():
        result_path.unlink()
    try:
        launch(worker, (*args, str(result_path)), num_processes, mixed_precision)
        if not result_path.exists():
            raise RuntimeError(f"training finished but wrote no result to {result_path}")
        return torch.load(result_path, map_location="cpu", weights_only=True)
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def save_result(accelerator, model, result_path: str, **extra: Any) -> None:
    """The end of every training worker: the main process saves the weights (float32, on the CPU)
    and ``extra`` (e.g. ``history``) to ``result_path`` for :func:`launch_for_result`; then all
    processes leave together."""
    import torch

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {k: v.detach().to("cpu", torch.float32) for k, v in accelerator.get_state_dict(model).items()}
        torch.save({"state_dict": state, **extra}, result_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _train_worker(X: np.ndarray, y: np.ndarray, config: dict[str, Any], result_path: str) -> None:
    """The body run by every process: build, prepare, train, save (main process).

    Everything device-related happens in here, after the fork: a CUDA context
    created in the parent would make forked children unusable.
    """
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset

    accelerator = make_accelerator(config["mixed_precision"])

    # Same seed in every process: identical initial weights and an identical
    # shuffle order, of which each process then takes its own shard.
    set_seed(config["seed"])
    model = build_model(X.shape[1], config["hidden_units"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    dataset = TensorDataset(torch.from_numpy(np.asarray(X, dtype=np.float32)),
                            torch.from_numpy(np.asarray(y, dtype=np.float32)))
    loader = DataLoader(dataset, batch_size=config["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    # prepare() moves the model to the device, wraps it for data-parallel
    # training when there are several processes, and shards the batches.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    if accelerator.num_processes > 1:
        from tqdm.std import tqdm  # plain text: a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    if accelerator.is_main_process and config["progress"]:
        # (accelerate's launcher may already have said "CUDAs": that is its
        # guess before any device is touched; this is what was picked.)
        print(f"training on {accelerator.device.type} in {accelerator.num_processes} process(es), "
              f"mixed precision: {accelerator.mixed_precision}", flush=True)
    bar = tqdm(total=config["epochs"] * len(loader), desc="training", unit="step", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))

    history: list[float] = []
    for epoch in range(config["epochs"]):
        model.train()
        epoch_losses = []
        for xb, yb in loader:
            optimizer.zero_grad()
            logits = model(xb).squeeze(-1)
            losses = F.binary_cross_entropy_with_logits(logits.float(), yb, reduction="none")
            accelerator.backward(losses.mean())
            optimizer.step()
            # per-example losses of all processes, without the examples that
            # accelerate repeats to even out the last batch
            epoch_losses.append(accelerator.gather_for_metrics(losses.detach()))
            bar.update(1)
        history.append(float(torch.cat(epoch_losses).mean().item()))
        bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
    bar.close()

    save_result(accelerator, model, result_path, history=history)


def train_classifier(
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    hidden_units: int | Sequence[int] = 64,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    num_processes: int = 1,
    mixed_precision: str = "no",
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainedClassifier:
    """Train a binary classifier (MLP, or logistic regression) with ``accelerate``.

    Parameters
    ----------
    X_train : array, shape (n, d)
        Features (float32 is used).
    y_train : array, shape (n,)
        Labels, 0 or 1.
    hidden_units : int or sequence of int
        Width of the hidden layer(s); 0 means logistic regression.
    epochs, batch_size, lr, weight_decay :
        The usual; ``batch_size`` is per process, AdamW is the optimizer.
    num_processes : int
        1: train in this process.  More: data-parallel training in that many
        processes started with :func:`accelerate.notebook_launcher` (CPU cores
        over gloo, or one GPU each).
    mixed_precision : {"no", "fp16", "bf16"}
        Passed to ``Accelerator``.  ``"fp16"`` needs a GPU; without one it
        falls back to ``"no"`` with a message.
    seed : int
        Training is deterministic for a given seed, ``num_processes`` and
        hardware.
    output_dir : path or None
        Where to keep ``classifier.pt`` (weights and history); by default a
        temporary directory that is removed afterwards.
    progress : bool
        Show a progress bar (main process only).

    Returns
    -------
    TrainedClassifier
    """

    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train)
    if X_train.ndim != 2 or len(X_train) != len(y_train):
        raise ValueError(f"X_train must be (n, d) and y_train (n,), got {X_train.shape} and {y_train.shape}")
    if not set(np.unique(y_train).tolist()) <= {0, 1}:
        raise ValueError("y_train must hold only 0 and 1")
    num_processes = int(num_processes)
    if num_processes < 1:
        raise ValueError("num_processes must be at least 1")

    config = dict(hidden_units=hidden_units, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                  weight_decay=float(weight_decay), num_processes=num_processes,
                  mixed_precision=mixed_precision, seed=int(seed), progress=bool(progress))

    started = time.perf_counter()
    saved = launch_for_result(_train_worker, (X_train, y_train, config), num_processes, mixed_precision, output_dir)
    elapsed = time.perf_counter() - started

    model = build_model(X_train.shape[1], hidden_units)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return TrainedClassifier(model=model, history=[float(v) for v in saved["history"]],
                             config=config, train_seconds=elapsed)

