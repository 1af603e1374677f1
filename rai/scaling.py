"""Support code for the Module 8.1 lab "Scaling with accelerate" (``m8-scaling``).

The learner writes the ``accelerate`` training loop, the pipeline worker and
the small planning functions; this module holds what the lab gives them:

* :func:`load_digits` -- the UCI optical handwritten digits, read from files in
  the original ``optdigits`` format (64 comma-separated pixel counts 0..16, then
  the label).  Without ``data_root`` it reads the copy scikit-learn ships
  (``sklearn/datasets/data/digits.csv.gz``, the 1 797 images of UCI's
  ``optdigits.tes``) and splits it; with ``data_root`` it reads UCI's
  ``optdigits.tra`` and ``optdigits.tes`` from that folder.
* :func:`make_mlp` and :func:`split_stages` -- the network and its two pipeline
  stages; :func:`predict_logits` runs a saved ``state_dict`` on inputs.
* :func:`plain_training_loop` -- the plain PyTorch loop the learner converts,
  which is also the reference loss curve of the lab.
* :func:`run_for_result` -- ``launch_for_result`` that forks one-process runs too,
  so that the notebook never creates a CUDA context between multi-process launches.
* :func:`accelerator_options` -- the ``Accelerator`` arguments that make a CPU
  run behave (gloo with several processes, threads shared out, no fp16 on CPUs).
* :func:`simulate_slurm_job` -- runs a Slurm batch script on this machine with
  stand-ins for ``srun``, ``scontrol`` and ``accelerate``, and returns the
  arguments each node's ``accelerate launch`` received; :func:`launch_arguments`
  reads the ``--option value`` pairs of one such call, :func:`bash_syntax_ok`
  runs ``bash -n``.
* :func:`plot_scaling` -- throughput bars and overlaid loss curves.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .training import accelerator_options  # one place decides CPU/gloo and mixed precision

__all__ = ["DigitsData", "accelerator_options", "bash_syntax_ok", "launch_arguments", "load_digits", "make_mlp",
           "plain_training_loop", "plot_scaling", "predict_logits", "read_optdigits", "run_for_result",
           "simulate_slurm_job", "split_stages"]


# -- data ------------------------------------------------------------------------------------

@dataclass
class DigitsData:
    """Train and test tensors: pixels scaled to [0, 1] (float32, shape (n, 64)), labels int64."""

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    source: str


def read_optdigits(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one file in UCI's ``optdigits`` format (optionally gzipped).

    Each line holds 65 comma-separated integers: the 64 pixel counts (0..16) of an 8x8 image, row by
    row, then the digit.  Returns ``(X, y)`` as int64 arrays of shapes (n, 64) and (n,).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 65:
        raise ValueError(f"{path}: expected 65 columns (64 pixels and the label), got {table.shape[1]}")
    return table[:, :64], table[:, 64]


def load_digits(data_root: str | os.PathLike | None = None, n_train: int = 1280, seed: int = 0) -> DigitsData:
    """The digits as tensors, pixel counts divided by 16.

    ``data_root=None``: scikit-learn's copy of ``optdigits.tes`` (1 797 images), split at random
    (stratified by digit, seeded) into ``n_train`` training images and the rest for testing.
    Otherwise ``data_root`` is a folder with UCI's ``optdigits.tra`` (3 823 training images) and
    ``optdigits.tes`` (1 797 test images); ``n_train`` (0 or None: all) then takes the first
    ``n_train`` training images.
    """
    import torch

    if data_root is None:
        import sklearn

        path = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
        X, y = read_optdigits(path)
        if not 0 < int(n_train) < len(y):
            raise ValueError(f"n_train must be between 1 and {len(y) - 1} with the built-in digits")
        from sklearn.model_selection import train_test_split

        X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=int(n_train), random_state=seed,
                                                            stratify=y)
        source = str(path)
    else:
        X_train, y_train = read_optdigits(Path(data_root) / "optdigits.tra")
        X_test, y_test = read_optdigits(Path(data_root) / "optdigits.tes")
        if n_train:
            X_train, y_train = X_train[: int(n_train)], y_train[: int(n_train)]
        source = str(data_root)
    as_x = lambda a: torch.tensor(a / 16.0, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return DigitsData(as_x(X_train), as_y(y_train), as_x(X_test), as_y(y_test), source)


# -- the model -------------------------------------------------------------------------------

def make_mlp(hidden: Sequence[int] = (256, 256), n_inputs: int = 64, n_classes: int = 10):
    """``Linear -> ReLU`` per hidden width, then a ``Linear`` to the class logits (an ``nn.Sequential``).

    With ``hidden=(256, 256)`` the layers are indexed 0..4: Linear, ReLU, Linear, ReLU, Linear.
    """
    import torch.nn as nn

    layers: list[nn.Module] = []
    previous = int(n_inputs)
    for width in hidden:
        layers += [nn.Linear(previous, int(width)), nn.ReLU()]
        previous = int(width)
    layers.append(nn.Linear(previous, int(n_classes)))
    return nn.Sequential(*layers)


def split_stages(model, cut: int):
    """The two pipeline stages of an ``nn.Sequential``: layers ``[:cut]`` and ``[cut:]`` (they share weights)."""
    import torch.nn as nn

    if not 0 < int(cut) < len(model):
        raise ValueError(f"cut must be between 1 and {len(model) - 1}")
    return nn.Sequential(*list(model)[: int(cut)]), nn.Sequential(*list(model)[int(cut):])


def predict_logits(state_dict: dict, X, hidden: Sequence[int] = (256, 256)) -> np.ndarray:
    """Logits (float32 array, shape (n, 10)) of the MLP with these weights on ``X`` (array or tensor)."""
    import torch

    model = make_mlp(hidden)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X), dtype=torch.float32)).numpy()


# -- the plain loop (what the learner converts) --------------------------------------------

def plain_training_loop(X_train, y_train, hidden: Sequence[int] = (256, 256), global_batch: int = 64,
                        epochs: int = 3, lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Plain PyTorch: one process, no ``accelerate``.  The reference for the lab's loss curves.

    Seeds with ``accelerate.utils.set_seed(seed)`` before building the model, shuffles with a
    ``torch.Generator`` seeded with ``seed`` and drops the last incomplete batch.  Returns
    ``{"losses": float64 array (mean cross-entropy of each step's batch), "samples_per_s": float,
    "state_dict": the final weights}``.
    """
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset

    set_seed(seed)
    model = make_mlp(hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=global_batch, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    losses, seen = [], 0
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            seen += len(xb)
    elapsed = time.perf_counter() - start
    return {"losses": np.array(losses, dtype=np.float64), "samples_per_s": seen / elapsed,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def run_for_result(worker, args: tuple, num_processes: int = 1, mixed_precision: str = "no",
                   output_dir: str | os.PathLike | None = None, filename: str = "result.pt") -> dict:
    """:func:`rai.training.launch_for_result`, but a one-process run happens in a forked child too.

    ``launch_for_result`` runs a one-process worker in the notebook's own process.  On a GPU node
    that creates a CUDA context in the notebook, after which ``notebook_launcher`` refuses to fork
    the processes of a later multi-process run.  This lab alternates one- and several-process runs,
    so here a one-process run is forked as well (the notebook never touches the GPU), with the same
    result-file protocol: ``worker(*args, result_path)``, the main process saves, the caller gets the
    file loaded back with ``torch.load(weights_only=True)``.  A failure in the child is raised here
    with the child's traceback.
    """
    import multiprocessing
    import shutil
    import traceback

    import torch

    from .training import launch, launch_for_result

    if int(num_processes) != 1:
        return launch_for_result(worker, args, int(num_processes), mixed_precision, output_dir, filename)
    keep = output_dir is not None
    directory = Path(output_dir) if keep else Path(tempfile.mkdtemp(prefix="rai-scaling-"))
    directory.mkdir(parents=True, exist_ok=True)
    result_path, error_path = directory / filename, directory / (filename + ".error")
    for stale in (result_path, error_path):
        if stale.exists():
            stale.unlink()

    def child() -> None:
        try:
            launch(worker, (*args, str(result_path)), 1, mixed_precision)
        except BaseException:
            error_path.write_text(traceback.format_exc())
            os._exit(1)
        os._exit(0)

    try:
        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join()
        if error_path.exists():
            raise RuntimeError(f"the training process failed:\n{error_path.read_text()}")
        if process.exitcode != 0:
            raise RuntimeError(f"the training process ended with exit code {process.exitcode}")
        if not result_path.exists():
            raise RuntimeError(f"training finished but wrote no result to {result_path}")
        return torch.load(result_path, map_location="cpu", weights_only=True)
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


# -- Slurm, without Slurm ------------------------------------------------------------------

_FAKE_SRUN = """#!/bin/bash
# stand-in for srun: run the command once per node, as Slurm would, with that node's variables
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" || exit $?
done
"""
_FAKE_SCONTROL = """#!/bin/bash
# stand-in for `scontrol show hostnames LIST`: one made-up host name per node
if [ "$1" = show ] && [ "$2" = hostnames ]; then
    for ((node = 1; node <= SLURM_NNODES; node++)); do printf 'node%03d\\n' "$node"; done
else
    echo "fake scontrol: unsupported $*" >&2; exit 1
fi
"""
_FAKE_ACCELERATE = """#!/usr/bin/env python3
# stand-in for accelerate: record the arguments, one JSON list per call
import json, os, sys
with open(os.environ["FAKE_ACCELERATE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def simulate_slurm_job(script: str, num_nodes: int, timeout: float = 20.0) -> list[list[str]]:
    """Run a batch ``script`` as if Slurm had started it on ``num_nodes`` nodes; no cluster needed.

    ``srun``, ``scontrol`` and ``accelerate`` are replaced by stand-ins on ``PATH``: ``srun`` runs
    its command once per node with ``SLURM_NODEID`` / ``SLURM_PROCID`` set to 0, 1, ...;
    ``scontrol show hostnames`` prints ``node001``, ``node002``, ...; ``accelerate`` only records its
    arguments.  ``#SBATCH`` lines are comments to bash and have no effect here.  Returns the
    argument list of every ``accelerate`` call, in order (``["launch", "--num_machines", "2", ...]``).
    Raises ``RuntimeError`` with bash's output if the script fails.
    """
    import json

    with tempfile.TemporaryDirectory(prefix="fake-slurm-") as tmp:
        tmp_path = Path(tmp)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, text in {"srun": _FAKE_SRUN, "scontrol": _FAKE_SCONTROL, "accelerate": _FAKE_ACCELERATE}.items():
            (bin_dir / name).write_text(text.replace("/usr/bin/env python3", sys.executable)
                                        if name == "accelerate" else text)
            (bin_dir / name).chmod(0o755)
        (tmp_path / "job.sh").write_text(script)
        log = tmp_path / "accelerate.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", FAKE_ACCELERATE_LOG=str(log),
                   SLURM_NNODES=str(int(num_nodes)), SLURM_JOB_NUM_NODES=str(int(num_nodes)),
                   SLURM_JOB_NODELIST=f"node[001-{int(num_nodes):03d}]", SLURM_JOB_ID="4242",
                   SLURM_SUBMIT_DIR=str(tmp_path))
        proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the batch script failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def launch_arguments(argv: Sequence[str]) -> dict[str, str]:
    """``{"--option": "value"}`` for the ``--option value`` / ``--option=value`` pairs of one command line."""
    out: dict[str, str] = {}
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            out[key] = value
        elif arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[arg] = argv[i + 1]
            i += 1
        elif arg.startswith("--"):
            out[arg] = ""
        i += 1
    return out


def bash_syntax_ok(script: str) -> tuple[bool, str]:
    """``bash -n`` on the script: ``(True, "")`` when bash can parse it, else ``(False, its message)``."""
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=10)
    return proc.returncode == 0, proc.stderr.strip()


# -- plots -----------------------------------------------------------------------------------

def plot_scaling(throughput: dict[str, float], curves: dict[str, Sequence[float]], efficiency: float | None = None):
    """Left: samples/s per run (bars); right: the loss curves, overlaid (a figure; call ``plt.show()``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4))
    names = list(throughput)
    bars = axes[0].bar(names, [throughput[n] for n in names], color=["#3a7ca5", "#81c3d7", "#d9a441", "#7a9e7e"][: len(names)])
    for bar in bars:
        axes[0].text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{bar.get_height():,.0f}",
                     ha="center", va="bottom", fontsize=8)
    axes[0].set_ylabel("training samples / s")
    title = "Throughput"
    if efficiency is not None:
        title += f" (scaling efficiency E(2) = {efficiency:.2f})"
    axes[0].set_title(title, fontsize=10)
    axes[0].tick_params(axis="x", labelsize=8)
    styles = ["o-", "x--", "s:", "d-."]
    for (name, losses), style in zip(curves.items(), styles * 4):
        steps = np.arange(1, len(losses) + 1)
        axes[1].plot(steps, np.asarray(losses, dtype=float), style, ms=4, lw=1, label=name, alpha=0.85)
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel("training loss (global batch)")
    axes[1].set_title("Same global batch, same loss curve", fontsize=10)
    axes[1].legend(frameon=False, fontsize=8)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig

