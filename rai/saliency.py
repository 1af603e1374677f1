"""Support code of the lab *Explaining a neural network* (Day 3, afternoon).

Students do not write any of this; the lab asks them for the explanations.

* :func:`write_digits_imagefolder` writes scikit-learn's 8x8 handwritten digits
  to disk in torchvision's ``ImageFolder`` layout (one PNG per image under a
  folder per class, ``train/`` and ``test/`` splits), so that the real loader
  runs; :func:`load_imagefolder` reads such a tree (or a real dataset given as
  ``data_root``) with :class:`torchvision.datasets.ImageFolder`.
* :func:`make_cnn` is the small network: conv-relu-pool twice, global average
  pooling, one linear layer.  :func:`train_cnn` trains it with Hugging Face
  ``accelerate``; with ``num_processes > 1`` in that many processes started by
  :func:`accelerate.notebook_launcher` (gloo on CPU cores), the weights coming
  back through a file, as in :mod:`rai.training`.
* :func:`randomized_copies` re-initialises the layers of a trained network,
  cascading from the top or one layer at a time (the model-randomization
  sanity check of Adebayo et al., 2018).
* :func:`linear_image_model` is a model whose explanations are known exactly
  (saliency = |w|, integrated gradients = (x - baseline) * w).
* :func:`plot_attribution_grid` draws images and their attribution maps.

Example
-------
>>> import tempfile
>>> root = write_digits_imagefolder(tempfile.mkdtemp())
>>> X_train, y_train, classes = load_imagefolder(root / "train")
>>> tuple(X_train.shape[1:]), len(classes)
((1, 8, 8), 10)
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .training import launch_for_result, make_accelerator, save_result

__all__ = ["write_digits_imagefolder", "load_imagefolder", "make_cnn", "TrainedCNN", "train_cnn",
           "class_logit", "randomized_copies", "linear_image_model", "plot_attribution_grid"]

RESULT_FILE = "cnn.pt"


# --------------------------------------------------------------------------- data
def write_digits_imagefolder(root: str | os.PathLike, test_size: float = 0.25, seed: int = 0) -> Path:
    """Write scikit-learn's digits as PNGs in ``ImageFolder`` layout; return ``root``.

    ``root/train/<digit>/<index>.png`` and ``root/test/<digit>/<index>.png``: 8x8
    grayscale PNGs, the 17 grey levels 0..16 of the original scaled to 0..255.
    The split is stratified by class and fixed by ``seed``.  Existing files are
    overwritten, so calling it twice gives the same tree.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)       # (1797, 8, 8)
    index = np.arange(len(pixels))
    train_idx, test_idx = train_test_split(index, test_size=test_size, random_state=seed,
                                           stratify=digits.target)
    root = Path(root)
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        for i in chosen:
            folder = root / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i], mode="L").save(folder / f"{int(i):04d}.png")
    return root


def load_imagefolder(directory: str | os.PathLike, image_size: int | None = None):
    """Read an ``ImageFolder`` tree into tensors ``(X, y, classes)``.

    ``X`` is float32 of shape ``(n, 1, H, W)`` with values in [0, 1]
    (grayscale; resized to ``image_size`` x ``image_size`` when given, with
    nearest-neighbour interpolation so that pixels stay pixels), ``y`` int64
    class indices, ``classes`` the folder names in ImageFolder's order.
    """
    import torch
    from torchvision import datasets, transforms

    steps = [transforms.Grayscale(num_output_channels=1)]
    if image_size:
        steps.append(transforms.Resize((int(image_size), int(image_size)),
                                       interpolation=transforms.InterpolationMode.NEAREST))
    steps.append(transforms.ToTensor())
    dataset = datasets.ImageFolder(str(directory), transform=transforms.Compose(steps))
    images, labels = zip(*[dataset[i] for i in range(len(dataset))])
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), list(dataset.classes)


# --------------------------------------------------------------------------- model
def make_cnn(n_classes: int = 10, channels: Sequence[int] = (16, 32)):
    """conv(3x3)-ReLU-maxpool, conv(3x3)-ReLU-maxpool, global average pooling, linear.

    Works for any image size of at least 4x4 (the pooling is global); the layers
    are ``model[0]`` (conv1), ``model[3]`` (conv2) and ``model[8]`` (linear).
    """
    import torch.nn as nn

    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(1, c1, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, n_classes))


LAYERS = {"linear": 8, "conv2": 3, "conv1": 0}   # name -> index in make_cnn's Sequential, top first


def class_logit(model, inputs, target):
    """The logit of class ``target[i]`` for input ``i`` (a 1-D tensor of length n)."""
    import torch

    target = torch.as_tensor(target, dtype=torch.int64).reshape(-1)
    return model(inputs).gather(1, target[:, None]).squeeze(1)


@dataclass
class TrainedCNN:
    """The trained network (CPU, evaluation mode), its loss history and settings."""

    model: Any
    history: list[float]
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0

    def predict(self, X):
        """Predicted class indices (int64 tensor)."""
        import torch

        with torch.no_grad():
            return self.model(X).argmax(dim=1)


def _train_worker(X, y, config: dict[str, Any], result_path: str) -> None:
    """Run by every process: build, prepare, train; the main process saves the weights."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset

    accelerator = make_accelerator(config["mixed_precision"])

    set_seed(config["seed"])        # same initial weights and shuffle order in every process
    model = make_cnn(config["n_classes"], config["channels"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = DataLoader(TensorDataset(X, y), batch_size=config["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    if accelerator.num_processes > 1:
        from tqdm.std import tqdm   # a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    if accelerator.is_main_process and config["progress"]:
        print(f"training on {accelerator.device.type} in {accelerator.num_processes} process(es), "
              f"mixed precision: {accelerator.mixed_precision}", flush=True)
    bar = tqdm(range(config["epochs"]), desc="epochs", unit="epoch", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))
    history: list[float] = []
    for _ in bar:
        model.train()
        losses = []
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb).float(), yb, reduction="none")
            accelerator.backward(loss.mean())
            optimizer.step()
            losses.append(accelerator.gather_for_metrics(loss.detach()))
        history.append(float(torch.cat(losses).mean().item()))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()
    save_result(accelerator, model, result_path, history=history)


def train_cnn(X_train, y_train, *, n_classes: int = 10, channels: Sequence[int] = (16, 32), epochs: int = 20,
              batch_size: int = 64, lr: float = 0.01, num_processes: int = 1, mixed_precision: str = "no",
              seed: int = 0, output_dir: str | os.PathLike | None = None, progress: bool = True) -> TrainedCNN:
    """Train :func:`make_cnn` on ``(X_train, y_train)`` with ``accelerate`` (Adam, cross-entropy).

    ``batch_size`` is per process.  ``num_processes > 1`` starts data-parallel
    processes with :func:`accelerate.notebook_launcher` (CPU cores over gloo,
    or one GPU each); the main one saves the weights to ``output_dir`` (a
    temporary directory by default), which are loaded back here.
    """
    import torch

    X_train = torch.as_tensor(X_train, dtype=torch.float32).contiguous()
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    config = dict(n_classes=int(n_classes), channels=tuple(int(c) for c in channels), epochs=int(epochs),
                  batch_size=int(batch_size), lr=float(lr), num_processes=int(num_processes),
                  mixed_precision=mixed_precision, seed=int(seed), progress=bool(progress))
    started = time.perf_counter()
    saved = launch_for_result(_train_worker, (X_train, y_train, config), config["num_processes"], mixed_precision,
                              output_dir, RESULT_FILE)
    model = make_cnn(config["n_classes"], config["channels"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return TrainedCNN(model=model, history=[float(v) for v in saved["history"]], config=config,
                      train_seconds=time.perf_counter() - started)


def randomized_copies(model, cascade: bool = True, seed: int = 1) -> dict[str, Any]:
    """Copies of a :func:`make_cnn` network with re-initialised layers, for the sanity check.

    ``cascade=True``: ``{"linear": ..., "+ conv2": ..., "+ conv1": ...}``, each
    re-initialising one more layer from the top (the last one is fully random).
    ``cascade=False``: ``{"linear": ..., "conv2": ..., "conv1": ...}``, each with
    that one layer re-initialised and the others trained.  Every copy is in
    evaluation mode; the seed fixes the new weights.
    """
    import copy

    import torch

    torch.manual_seed(seed)
    out: dict[str, Any] = {}
    current = copy.deepcopy(model)
    for k, (name, index) in enumerate(LAYERS.items()):
        if cascade:
            current[index].reset_parameters()
            out[name if k == 0 else f"+ {name}"] = copy.deepcopy(current).eval()
        else:
            single = copy.deepcopy(model)
            single[index].reset_parameters()
            out[name] = single.eval()
    return out


def linear_image_model(weights, bias=None):
    """A linear "network" with known explanations: ``logit_c(x) = <W[c], x> + b[c]``.

    ``weights`` has shape ``(classes, 1, H, W)``.  The gradient of logit c is
    ``W[c]`` everywhere, so its saliency map is ``|W[c]|`` and its integrated
    gradients are exactly ``(x - baseline) * W[c]`` for any number of steps.
    Returns a ``torch.nn.Sequential`` (flatten, linear) in evaluation mode.
    """
    import torch

    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    n = w.shape[0]
    linear = torch.nn.Linear(w[0].numel(), n)
    with torch.no_grad():
        linear.weight.copy_(w.reshape(n, -1))
        linear.bias.copy_(torch.zeros(n) if bias is None else torch.as_tensor(np.asarray(bias), dtype=torch.float32))
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval()


# --------------------------------------------------------------------------- plots
def plot_attribution_grid(images, columns: dict[str, Any], row_labels: Sequence[str] | None = None,
                          title: str | None = None, size: float = 1.25):
    """One row per image: the image, then one attribution map per entry of ``columns``.

    Non-negative maps are drawn with ``magma``; signed maps with a diverging
    ``RdBu_r`` centred on zero (red raises the class score, blue lowers it).
    """
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    maps = {k: np.asarray(v) for k, v in columns.items()}
    n = len(images)
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(size * (len(maps) + 1), size * n + 0.4), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(images[r].squeeze(), cmap="gray_r")
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, m in enumerate(maps.values(), start=1):
            a = m[r].squeeze()
            if a.min() >= 0:
                axes[r, c].imshow(a, cmap="magma")
            else:
                lim = float(np.abs(a).max()) or 1.0
                axes[r, c].imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c, name in enumerate(["input", *maps], start=0):
        axes[0, c].set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
