"""Support code for the Day 4 lab *Adversarial robustness* (``day4-robustness``).

Learners import these helpers; they are not asked to write them.  They cover
the plumbing of the lab, not the ideas it practises (the attacks, the
adversarial-training loss and the library cross-check are the learner's):

* :func:`write_digits_imagefolder` -- scikit-learn's 1 797 handwritten digits
  (8 x 8 pixels) written to disk as one PNG per image in torchvision's
  ``ImageFolder`` layout (``train/<class>/*.png``, ``test/<class>/*.png``),
  so the lab reads images the way it would read a real image data set;
* :func:`load_image_split` -- reads such a tree (the generated one, or a real
  data set in the same layout) with :class:`torchvision.datasets.ImageFolder`,
  pixels as floats in [0, 1];
* :func:`build_model`, :func:`model_from_state`, :func:`plain_state` -- the
  small fully connected classifier of the lab, and its weights as plain data;
* :func:`accuracy` and :func:`random_sign_noise` -- test accuracy of a model
  on a batch, and random +-eps noise (*not* an attack: the baseline the
  attacks are compared with);
* :func:`train_model` -- the lab's training loop, written with Hugging Face
  ``accelerate``: one process, or several data-parallel processes started with
  :func:`accelerate.notebook_launcher` (gloo on CPU cores, or one GPU each).
  A ``loss_fn`` hook turns it into *adversarial* training;
* :func:`plot_accuracy_curves`, :func:`plot_adversarial_grid`,
  :func:`plot_robustness_comparison` -- the lab's figures (each returns its
  matplotlib Figure).

Nothing here downloads anything; everything is deterministic for a seed.

Example
-------
>>> import tempfile
>>> root = write_digits_imagefolder(tempfile.mkdtemp())
>>> split = load_image_split(root)
>>> split.X_test.shape, float(split.X_test.min()), float(split.X_test.max())
(torch.Size([450, 1, 8, 8]), 0.0, 1.0)
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .training import launch_for_result, make_accelerator, save_result

__all__ = [
    "write_digits_imagefolder", "ImageSplit", "load_image_split", "stack_dataset", "build_model",
    "model_from_state", "plain_state", "accuracy", "random_sign_noise", "TrainedModel", "train_model",
    "plot_accuracy_curves", "plot_adversarial_grid", "plot_robustness_comparison",
]

RESULT_FILE = "robustness-model.pt"


# -- data -----------------------------------------------------------------------------------

def write_digits_imagefolder(root: str | os.PathLike, test_fraction: float = 0.25, seed: int = 0) -> Path:
    """Write scikit-learn's digits as PNG files in ``ImageFolder`` layout; return ``root``.

    The tree is ``root/train/<digit>/<index>.png`` and ``root/test/<digit>/<index>.png``
    (8-bit greyscale, 8 x 8 pixels; as in the data, 0 is background and 255 full
    ink).  The original pixels take the 17 values
    0..16; they are stored as ``round(v * 255 / 16)``, so reading them back with
    ``ToTensor`` gives values in [0, 1].  The split is stratified by digit and
    fixed by ``seed``; ``test_fraction`` of the images go to ``test/``.

    Any earlier ``train/`` and ``test/`` under ``root`` are replaced.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    digits = load_digits()
    pixels = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)   # (1797, 8, 8)
    labels = digits.target
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    for split, rows in (("train", train_idx), ("test", test_idx)):
        directory = root / split
        if directory.exists():
            shutil.rmtree(directory)
        for label in np.unique(labels):
            (directory / str(label)).mkdir(parents=True)
        for i in sorted(rows.tolist()):
            Image.fromarray(pixels[i], mode="L").save(directory / str(labels[i]) / f"{i:04d}.png")
    return root


@dataclass
class ImageSplit:
    """An image classification data set in ``ImageFolder`` layout, read with torchvision.

    Attributes
    ----------
    train, test : torchvision.datasets.ImageFolder
        The two splits; each item is ``(image, label)``, the image a float32
        tensor ``(channels, height, width)`` with values in [0, 1].
    X_train, X_test : torch.Tensor, float32, shape (n, channels, height, width)
        Each split decoded once and stacked in one tensor (the attacks run on
        ``X_test``; training reads ``X_train`` through :attr:`train_tensors`).
    y_train, y_test : torch.Tensor, int64, shape (n,)
        Their labels (class indices).
    classes : list of str
        Class names (the folder names), in label order.
    root : pathlib.Path
        Where the images are.
    """

    train: Any
    test: Any
    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    classes: list[str] = field(default_factory=list)
    root: Path | None = None

    @property
    def train_tensors(self):
        """The training split as an in-memory ``TensorDataset`` of (image, label).

        Decoding every PNG again in every epoch would cost more than training
        this small network; a data set too large for memory would instead be
        streamed from ``train`` by a ``DataLoader`` with worker processes.
        """
        from torch.utils.data import TensorDataset

        return TensorDataset(self.X_train, self.y_train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(channels, height, width)``."""
        return tuple(int(s) for s in self.X_test.shape[1:])

    def __repr__(self) -> str:
        return (f"ImageSplit(train={len(self.train)} images, test={len(self.test)} images, "
                f"image shape={self.input_shape}, classes={self.classes}, root={str(self.root)!r})")


def stack_dataset(dataset, batch_size: int = 1024):
    """All items of a (map-style) data set as two tensors: images ``(n, ...)`` and labels ``(n,)``."""
    import torch
    from torch.utils.data import DataLoader

    images, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images.append(x)
        labels.append(y)
    return torch.cat(images).float().contiguous(), torch.cat(labels).long()


def load_image_split(root: str | os.PathLike, grayscale: bool = True,
                     image_size: int | tuple[int, int] | None = None) -> ImageSplit:
    """Read ``root/train`` and ``root/test`` with :class:`torchvision.datasets.ImageFolder`.

    Parameters
    ----------
    root : path
        A directory with ``train/`` and ``test/``, each holding one folder per
        class (the generated digits, or a real data set in the same layout).
    grayscale : bool
        Convert every image to one channel (the digits are greyscale).
    image_size : int, (int, int) or None
        Resize every image (``None``: keep the files' size; all images must then
        have the same size).

    Pixels are converted to float32 in [0, 1] by ``ToTensor``; nothing else
    (no normalization), so an L-infinity budget ``eps`` is in units of the
    full pixel range.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(root)
    steps = []
    if grayscale:
        steps.append(transforms.Grayscale(num_output_channels=1))
    if image_size is not None:
        steps.append(transforms.Resize(image_size))
    steps.append(transforms.ToTensor())
    transform = transforms.Compose(steps)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root / split} not found: expected ImageFolder trees {root}/train and {root}/test")
    train = ImageFolder(str(root / "train"), transform=transform)
    test = ImageFolder(str(root / "test"), transform=transform)
    if train.classes != test.classes:
        raise ValueError(f"train and test have different classes: {train.classes} vs {test.classes}")
    X_train, y_train = stack_dataset(train)
    X_test, y_test = stack_dataset(test)
    return ImageSplit(train=train, test=test, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                      classes=list(train.classes), root=root)


# -- the model ------------------------------------------------------------------------------

def build_model(input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10, hidden_units: int = 128):
    """The lab's classifier: flatten, two hidden layers of ``hidden_units`` ReLUs, one logit per class.

    No dropout and no batch normalization, so the model computes the same
    function in training and evaluation mode -- the attacks need not care.
    """
    import torch.nn as nn

    n_inputs = int(np.prod(tuple(input_shape)))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_inputs, hidden_units), nn.ReLU(),
        nn.Linear(hidden_units, hidden_units), nn.ReLU(),
        nn.Linear(hidden_units, n_classes),
    )


def plain_state(model) -> dict:
    """The weights of ``model`` as a plain ``dict`` of float32 CPU tensors (plain data a grader can read)."""
    return {str(k): v.detach().to("cpu").float().clone() for k, v in model.state_dict().items()}


def model_from_state(state: Mapping[str, Any]):
    """Rebuild a :func:`build_model` network from :func:`plain_state` weights (sizes read off the weights).

    The result is in evaluation mode, on the CPU.
    """
    import torch

    state = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in state.items()}
    n_inputs = state["1.weight"].shape[1]
    hidden = state["1.weight"].shape[0]
    n_classes = state["5.weight"].shape[0]
    model = build_model((n_inputs,), n_classes, hidden)
    model.load_state_dict(state)
    model.eval()
    return model


def accuracy(model, x, y) -> float:
    """Share of the images ``x`` whose predicted class (largest logit) is ``y``, as a Python float."""
    import torch

    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean().item())


def random_sign_noise(model, x, y, eps: float, seed: int = 0):
    """Not an attack: move every pixel by +eps or -eps at random, then clip to [0, 1].

    Same signature as the lab's attacks (``model`` and ``y`` are ignored), so it
    can be swept like them: it shows what a perturbation of the same size does
    when nobody *chooses* it.
    """
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
    return (x.detach() + eps * signs).clamp(0.0, 1.0)


# -- training with accelerate ---------------------------------------------------------------

@dataclass
class TrainedModel:
    """A network trained by :func:`train_model`, on the CPU, in evaluation mode.

    Attributes
    ----------
    model : torch.nn.Module
    history : list of float
        Mean training loss of each epoch, over all processes.
    epoch_seconds : list of float
        Wall-clock time of each epoch in the main process (starting the
        processes not included): what one pass over the data costs.
    config : dict
        The settings it was trained with.
    train_seconds : float
        Wall-clock time of the training, starting the processes included.
    """

    model: Any
    history: list[float]
    epoch_seconds: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0

    def predict(self, x):
        """Predicted class of each image in ``x`` (an int64 tensor)."""
        import torch

        with torch.no_grad():
            return self.model(x).argmax(dim=1)


def _train_worker(dataset, config: dict[str, Any], loss_fn: Callable | None, result_path: str) -> None:
    """The body every process runs: build, prepare, train, save (main process only).

    Device-related work happens only in here, after the fork: a CUDA context
    created in the parent would make forked children unusable.
    """
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    accelerator = make_accelerator(config["mixed_precision"])

    # Same seed everywhere: identical initial weights and shuffle order, of which
    # each process takes its own shard.
    set_seed(config["seed"])
    model = build_model(config["input_shape"], config["n_classes"], config["hidden_units"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    loader = DataLoader(dataset, batch_size=config["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # The attack runs on the unwrapped network -- the same weights -- so that its
    # extra forward and backward passes stay out of DistributedDataParallel's
    # gradient bookkeeping, which is meant for the training step only.
    attack_model = accelerator.unwrap_model(model)

    if accelerator.num_processes > 1:
        # plain text: a forked worker cannot drive a notebook widget
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    if accelerator.is_main_process and config["progress"]:
        print(f"{config['desc']}: {accelerator.device.type}, {accelerator.num_processes} process(es), "
              f"mixed precision {accelerator.mixed_precision}", flush=True)
    bar = tqdm(range(config["epochs"]), desc=config["desc"], unit="epoch", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))

    history: list[float] = []
    epoch_seconds: list[float] = []
    for _ in bar:
        started = time.perf_counter()
        model.train()
        batch_losses = []
        for x, y in loader:
            if loss_fn is None:
                loss = F.cross_entropy(model(x), y)
            else:
                loss = loss_fn(model, x, y, attack_model=attack_model)
            optimizer.zero_grad()   # after the attack: whatever it left in .grad is dropped
            accelerator.backward(loss)
            optimizer.step()
            batch_losses.append(accelerator.gather(loss.detach().float().reshape(1)))
        history.append(float(torch.cat(batch_losses).mean().item()))
        epoch_seconds.append(time.perf_counter() - started)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()

    save_result(accelerator, model, result_path, history=history, epoch_seconds=epoch_seconds)


def _dry_run(dataset, config, loss_fn) -> None:
    """Call ``loss_fn`` once on a few examples here, so that a bug in it fails at once, with a
    readable traceback, instead of inside every forked worker."""
    import torch
    from torch.utils.data import DataLoader

    x, y = next(iter(DataLoader(dataset, batch_size=4)))
    torch.manual_seed(config["seed"])
    model = build_model(config["input_shape"], config["n_classes"], config["hidden_units"])
    loss = loss_fn(model, x, y, attack_model=model)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError(f"loss_fn must return a scalar tensor (0-d), got {type(loss).__name__} "
                        f"{tuple(getattr(loss, 'shape', ()))}")
    if not loss.requires_grad:
        raise ValueError("loss_fn returned a loss with no gradient: compute it from model(...) outputs")


def train_model(
    dataset,
    *,
    input_shape: Sequence[int],
    n_classes: int,
    hidden_units: int = 128,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    num_processes: int = 1,
    mixed_precision: str = "no",
    seed: int = 0,
    loss_fn: Callable | None = None,
    desc: str = "training",
    progress: bool = True,
    output_dir: str | os.PathLike | None = None,
) -> TrainedModel:
    """Train :func:`build_model` on ``dataset`` with ``accelerate`` (AdamW, mini-batches).

    Parameters
    ----------
    dataset : torch Dataset of (image, label)
        For instance ``ImageSplit.train_tensors`` (in memory) or ``ImageSplit.train``
        (the ``ImageFolder`` itself, decoding the files in every epoch).
    input_shape, n_classes, hidden_units :
        The network (see :func:`build_model`).
    epochs, batch_size, lr, weight_decay :
        The usual; ``batch_size`` is per process.
    num_processes : int
        1: train here.  More: data-parallel training in that many processes
        started with :func:`accelerate.notebook_launcher` (CPU cores over gloo,
        or one GPU each).  On CPU cores this is *slower* than one process for a
        model this small (starting processes and averaging gradients cost more
        than they save); it is here so that the same code runs on a GPU node.
    mixed_precision : {"no", "bf16", "fp16"}
        Passed to ``Accelerator`` (``"fp16"`` falls back to ``"no"`` without a GPU).
    seed : int
        Training is deterministic for a seed, ``num_processes`` and hardware.
    loss_fn : callable or None
        ``None``: standard training, cross-entropy on the batch.  Otherwise
        ``loss_fn(model, x, y, attack_model=...)`` returns the scalar loss of the
        batch; ``model`` is the network as prepared by accelerate (compute the
        loss through it), ``attack_model`` the same network unwrapped (run attacks
        on it).  Adversarial training passes a loss that attacks the batch first.
    desc : str
        Label of the progress bar (one step per epoch).
    output_dir : path or None
        Keep the weights file here (default: a temporary directory, removed).
    """

    num_processes = int(num_processes)
    if num_processes < 1:
        raise ValueError("num_processes must be at least 1")
    config = dict(input_shape=tuple(int(s) for s in input_shape), n_classes=int(n_classes),
                  hidden_units=int(hidden_units), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                  weight_decay=float(weight_decay), num_processes=num_processes,
                  mixed_precision=mixed_precision, seed=int(seed), desc=str(desc), progress=bool(progress))
    if loss_fn is not None:
        _dry_run(dataset, config, loss_fn)

    started = time.perf_counter()
    saved = launch_for_result(_train_worker, (dataset, config, loss_fn), num_processes, mixed_precision,
                              output_dir, RESULT_FILE)
    elapsed = time.perf_counter() - started

    model = build_model(config["input_shape"], config["n_classes"], config["hidden_units"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return TrainedModel(model=model, history=[float(v) for v in saved["history"]],
                        epoch_seconds=[float(v) for v in saved["epoch_seconds"]], config=config,
                        train_seconds=elapsed)


# -- plots ----------------------------------------------------------------------------------

_STYLES = {"clean": ("0.4", "--", ""), "random ±ε": ("tab:green", ":", "s"), "FGSM": ("tab:orange", "--", "o"),
           "PGD": ("tab:red", "-", "o")}


def plot_accuracy_curves(curves: pd.DataFrame, title: str = "Accuracy against the attack budget ε",
                         eps_mark: float | None = None):
    """Accuracy against ε, one line per column of ``curves`` (index: ε).

    What to look at: how far below the random-noise line the attack lines
    fall -- the gap is what *choosing* the perturbation buys the attacker --
    and whether PGD (many steps) stays at or below FGSM (one step) at every ε.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for i, name in enumerate(curves.columns):
        colour, style, marker = _STYLES.get(str(name), (plt.cm.tab10(i % 10), "-", "o"))
        ax.plot(curves.index.to_numpy(dtype=float), curves[name].to_numpy(dtype=float), linestyle=style,
                marker=marker, ms=4, color=colour, label=str(name))
    if eps_mark is not None:
        ax.axvline(eps_mark, color="0.7", lw=1, ls=":")
    ax.set_xlabel("ε (L∞ budget, pixels in [0, 1])")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_adversarial_grid(x, x_adv, y, pred_clean, pred_adv, eps: float, classes: Sequence[str] | None = None,
                          n: int | None = None, title: str | None = None):
    """Clean images, their adversarial versions and the perturbations, with the model's predictions.

    Rows: the clean image (title: prediction), the adversarial image
    (prediction, red when it is wrong), and ``x_adv - x`` on a diverging scale
    from -ε to ε.  Images are shown with ink dark on white; ``n`` limits how
    many are shown (default: all of ``x``).
    """
    import matplotlib.pyplot as plt

    n = len(x) if n is None else min(n, len(x))
    names = (lambda k: str(classes[int(k)])) if classes is not None else (lambda k: str(int(k)))
    fig, axes = plt.subplots(3, n, figsize=(1.15 * n, 3.9), squeeze=False)
    for j in range(n):
        clean = np.asarray(x[j], dtype=float).reshape(-1, *np.asarray(x[j]).shape[-2:]).mean(axis=0)
        adv = np.asarray(x_adv[j], dtype=float).reshape(-1, *np.asarray(x_adv[j]).shape[-2:]).mean(axis=0)
        panels = [(clean, f"{names(pred_clean[j])}", "gray_r", 0, 1, int(pred_clean[j]) != int(y[j])),
                  (adv, f"{names(pred_adv[j])}", "gray_r", 0, 1, int(pred_adv[j]) != int(y[j])),
                  (adv - clean, "", "RdBu_r", -eps, eps, False)]
        for row, (img, label, cmap, lo, hi, wrong) in enumerate(panels):
            ax = axes[row, j]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if label:
                ax.set_title(label, fontsize=9, color="tab:red" if wrong else "black")
    for row, name in enumerate(["clean", "adversarial", "x_adv − x"]):
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title or f"Predictions on clean and adversarial images (ε = {eps}); red: wrong", fontsize=10)
    fig.tight_layout()
    return fig


def plot_robustness_comparison(standard: pd.DataFrame, robust: pd.DataFrame, eps_train: float | None = None,
                               attacks: Sequence[str] = ("FGSM", "PGD")):
    """Accuracy against ε of a standard and an adversarially trained model, one panel per attack.

    What to look at: at ε = 0 the robust model starts lower (the clean
    accuracy it paid); to the right it stays far above the standard model up
    to about the ε it was trained for, and falls beyond it.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(4.6 * len(attacks), 3.5), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for frame, label, colour in ((standard, "standard training", "0.45"),
                                     (robust, "adversarial training", "tab:blue")):
            ax.plot(frame.index.to_numpy(dtype=float), frame[attack].to_numpy(dtype=float), "o-", ms=4,
                    color=colour, label=label)
        if eps_train is not None:
            ax.axvline(eps_train, color="0.7", lw=1, ls=":")
            ax.annotate("ε trained for", (eps_train, 0.97), fontsize=7, color="0.4", ha="left",
                        xytext=(3, 0), textcoords="offset points")
        ax.set_title(f"under {attack}", fontsize=10)
        ax.set_xlabel("ε (L∞ budget)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
