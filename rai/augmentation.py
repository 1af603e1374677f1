"""Generative data augmentation on a class-imbalanced image set (lab m8-augmentation).

The lab asks whether synthetic examples of rare classes, sampled from a small
**conditional variational autoencoder** (CVAE), help a downstream classifier
more than plain random over-sampling.  This module holds what the learner is
not asked to write:

* the data: scikit-learn's handwritten digits (1 797 grey-level 8x8 images,
  shipped with scikit-learn), or any grayscale ``ImageFolder`` tree, split into
  a training and a balanced test set (:func:`load_images`, :func:`split`), and
  made imbalanced by keeping only a few training examples of some classes
  (:func:`make_imbalanced`);
* the network (:class:`ConditionalVAE`) and its training loop with Hugging
  Face ``accelerate`` (:func:`train_cvaes`): one launch trains one CVAE per
  repetition of the experiment, in one process or data-parallel in several
  (:func:`accelerate.notebook_launcher`, gloo on CPU cores), with the
  learner's loss and reparameterisation functions;
* sampling (:func:`sample_classes`), the downstream classifier
  (:func:`fit_predict`, multinomial logistic regression) and the plots.

Example
-------
>>> X, y, classes = load_images()
>>> X.shape, X.dtype, len(classes)
((1797, 64), dtype('float32'), 10)
>>> X_tr, y_tr, X_te, y_te = split(X, y, test_size=0.4, seed=0)
>>> X_imb, y_imb, n_rare = make_imbalanced(X_tr, y_tr, [3, 8, 9], imbalance_ratio=10, seed=0)
>>> n_rare, int((y_imb == 3).sum()), int((y_imb == 0).sum())
(11, 11, 107)
"""
from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .training import launch_for_result, make_accelerator

__all__ = ["load_images", "split", "make_imbalanced", "ConditionalVAE", "TrainedVAE", "train_cvaes",
           "sample_classes", "fit_predict", "plot_digit_rows", "plot_recall_bars", "plot_seed_spread"]

RESULT_FILE = "cvaes.pt"


# --------------------------------------------------------------------------- data
def load_images(data_root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images as flat float32 rows in [0, 1], their int64 labels and the class names.

    ``data_root=None`` reads scikit-learn's digits (``sklearn.datasets.load_digits``: 17 grey
    levels 0..16, divided by 16).  Otherwise ``data_root`` is a grayscale ``ImageFolder`` tree
    (``<class>/<image>.png``, or ``train/`` and ``test/`` subtrees, which are pooled: the lab makes
    its own splits), read with :func:`rai.saliency.load_imagefolder`; labels are the folder indices.
    """
    if data_root is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        X = (digits.data / 16.0).astype(np.float32)
        return X, digits.target.astype(np.int64), [str(c) for c in digits.target_names]
    from pathlib import Path

    from .saliency import load_imagefolder

    root = Path(data_root)
    parts = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
    Xs, ys, classes = [], [], None
    for part in parts:
        X, y, names = load_imagefolder(part)
        if classes is not None and names != classes:
            raise ValueError(f"{part} has other classes than {parts[0]}")
        classes = names
        Xs.append(X.reshape(len(X), -1).numpy())
        ys.append(y.numpy())
    return np.concatenate(Xs).astype(np.float32), np.concatenate(ys).astype(np.int64), list(classes)


def split(X: np.ndarray, y: np.ndarray, test_size: float = 0.4, seed: int = 0):
    """Stratified train/test split (``sklearn.model_selection.train_test_split``, ``random_state=seed``).

    Returns ``X_train, y_train, X_test, y_test``.  The test set keeps the class balance of the data
    (for the digits: about equal counts) and is never touched by the augmentation.
    """
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=int(seed), stratify=y)
    return X_tr, y_tr, X_te, y_te


def make_imbalanced(X: np.ndarray, y: np.ndarray, minority: Sequence[int], imbalance_ratio: float, seed: int = 0):
    """Keep only ``n_rare`` training examples of each minority class, all of the other classes.

    ``n_rare = max(2, round(n_max / imbalance_ratio))`` where ``n_max`` is the size of the largest
    class, so that the largest class is about ``imbalance_ratio`` times as large as each minority
    class.  The kept examples are drawn without replacement with ``np.random.default_rng(seed)``;
    the order of the rows is kept.  Returns ``X_imb, y_imb, n_rare``.
    """
    y = np.asarray(y)
    n_rare = max(2, int(round(np.bincount(y).max() / float(imbalance_ratio))))
    rng = np.random.default_rng(int(seed))
    keep = np.ones(len(y), dtype=bool)
    for c in sorted(int(c) for c in minority):
        members = np.flatnonzero(y == c)
        if len(members) > n_rare:
            keep[members] = False
            keep[rng.choice(members, size=n_rare, replace=False)] = True
    return X[keep], y[keep], n_rare


# --------------------------------------------------------------------------- model
@functools.lru_cache(maxsize=None)
def _vae_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConditionalVAE(nn.Module):
        """A conditional VAE of flat images: both networks get the one-hot class as an extra input.

        encoder: ``[x, onehot(label)] -> hidden (ReLU) -> (mu, logvar)``, each ``latent`` wide;
        decoder: ``[z, onehot(label)] -> hidden (ReLU) -> n_pixels logits`` (the pixel means are
        their sigmoid).  ``forward(x, label, eps, reparameterize)`` returns ``(logits, mu, logvar)``
        with ``z = reparameterize(mu, logvar, eps)``: the noise and the reparameterisation come from
        outside, so that the learner's function is the one that runs.
        """

        def __init__(self, n_pixels: int = 64, n_classes: int = 10, hidden: int = 128, latent: int = 8):
            super().__init__()
            self.n_pixels, self.n_classes, self.hidden, self.latent = n_pixels, n_classes, hidden, latent
            self.encoder = nn.Sequential(nn.Linear(n_pixels + n_classes, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 2 * latent))
            self.decoder = nn.Sequential(nn.Linear(latent + n_classes, hidden), nn.ReLU(),
                                         nn.Linear(hidden, n_pixels))

        def encode(self, x, label):
            onehot = F.one_hot(label, self.n_classes).to(x.dtype)
            mu, logvar = self.encoder(torch.cat([x, onehot], dim=1)).chunk(2, dim=1)
            return mu, logvar

        def decode(self, z, label):
            onehot = F.one_hot(label, self.n_classes).to(z.dtype)
            return self.decoder(torch.cat([z, onehot], dim=1))

        def forward(self, x, label, eps, reparameterize):
            mu, logvar = self.encode(x, label)
            z = reparameterize(mu, logvar, eps)
            return self.decode(z, label), mu, logvar

    return ConditionalVAE


def ConditionalVAE(n_pixels: int = 64, n_classes: int = 10, hidden: int = 128, latent: int = 8):
    """Build a conditional VAE (see the class's docstring; torch is imported only when needed)."""
    return _vae_class()(n_pixels, n_classes, hidden, latent)


@dataclass
class TrainedVAE:
    """A trained conditional VAE on the CPU, in evaluation mode, with its loss per epoch."""

    model: Any
    history: list[float]
    config: dict[str, Any] = field(default_factory=dict)

    def sample(self, labels: np.ndarray, seed: int = 0) -> np.ndarray:
        """One image per label: the decoder's pixel means at ``z ~ N(0, I)`` (float32, in [0, 1]).

        The latent draws come from ``torch.Generator().manual_seed(seed)``: the same call gives the
        same images.
        """
        import torch

        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        generator = torch.Generator().manual_seed(int(seed))
        z = torch.randn(len(labels), self.model.latent, generator=generator)
        with torch.no_grad():
            return torch.sigmoid(self.model.decode(z, labels)).numpy().astype(np.float32)


def _train_worker(datasets, config: dict[str, Any], loss_fn: Callable, reparameterize: Callable,
                  result_path: str) -> None:
    """Run by every process: train one CVAE per dataset in turn; the main process saves them all."""
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset

    accelerator = make_accelerator(config["mixed_precision"])
    if accelerator.num_processes > 1:
        from tqdm.std import tqdm   # a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    show = config["progress"] and accelerator.is_local_main_process
    if accelerator.is_main_process and config["progress"]:
        print(f"training {len(datasets)} CVAE(s) on {accelerator.device.type} in {accelerator.num_processes} "
              f"process(es), mixed precision: {accelerator.mixed_precision}", flush=True)
    bar = None
    states, histories = [], []
    for k, (X, y, seed) in enumerate(datasets):
        set_seed(int(seed))      # same initial weights and shuffle order in every process
        model = ConditionalVAE(X.shape[1], config["n_classes"], config["hidden"], config["latent"])
        optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
        loader = DataLoader(TensorDataset(X, y), batch_size=config["batch_size"], shuffle=True,
                            generator=torch.Generator().manual_seed(int(seed)))
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if bar is None:
            bar = tqdm(total=len(datasets) * config["epochs"] * len(loader), desc="CVAE training", unit="step",
                       file=sys.stdout, disable=not show, mininterval=1.0)
        history: list[float] = []
        for _ in range(config["epochs"]):
            model.train()
            losses = []
            for xb, yb in loader:
                optimizer.zero_grad()
                # each process draws its own noise (its shard of the batch); seeded by set_seed
                eps = torch.randn(len(xb), config["latent"], device=xb.device)
                logits, mu, logvar = model(xb, yb, eps, reparameterize)
                loss = loss_fn(logits.float(), xb.float(), mu.float(), logvar.float(), config["beta"])
                accelerator.backward(loss)
                optimizer.step()
                # the batch-mean loss of every process, weighted by its batch size
                n = torch.tensor([float(len(xb))], device=xb.device)
                losses.append(accelerator.gather(torch.cat([loss.detach().reshape(1) * n, n])).reshape(-1, 2))
                bar.update(1)
            total = torch.cat(losses).sum(dim=0)
            history.append(float((total[0] / total[1]).item()))
            bar.set_postfix(vae=f"{k + 1}/{len(datasets)}", loss=f"{history[-1]:.2f}")
        accelerator.wait_for_everyone()
        states.append({name: v.detach().to("cpu", torch.float32)
                       for name, v in accelerator.get_state_dict(model).items()})
        histories.append(history)
    if bar is not None:
        bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save({"states": states, "histories": histories}, result_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def train_cvaes(datasets: Sequence[tuple[np.ndarray, np.ndarray, int]], *, loss_fn: Callable,
                reparameterize: Callable, n_classes: int = 10, hidden: int = 128, latent: int = 8,
                epochs: int = 60, batch_size: int = 64, lr: float = 5e-3, beta: float = 1.0,
                num_processes: int = 1, mixed_precision: str = "no",
                output_dir: str | os.PathLike | None = None, progress: bool = True):
    """Train one :class:`ConditionalVAE` per ``(X, y, seed)`` in ``datasets``, in one ``accelerate`` launch.

    Parameters
    ----------
    datasets : sequence of (X, y, seed)
        Flat images in [0, 1] ``(n, n_pixels)``, int labels ``(n,)``, and the seed of that model's
        initial weights, shuffle order and noise.
    loss_fn : callable
        ``loss_fn(logits, x, mu, logvar, beta)`` -> a scalar tensor, minimised by Adam.
    reparameterize : callable
        ``reparameterize(mu, logvar, eps)`` -> the latent ``z`` fed to the decoder.
    hidden, latent : int
        Width of the hidden layers and of the latent space.
    epochs, batch_size, lr, beta :
        ``batch_size`` is per process; ``beta`` is passed to ``loss_fn``.
    num_processes : int
        1: train in this process.  More: data-parallel processes started with
        :func:`accelerate.notebook_launcher` (CPU cores over gloo, or one GPU each); the processes
        start once for all the models.
    mixed_precision : {"no", "bf16", "fp16"}
        Passed to the ``Accelerator`` (fp16 falls back to full precision without a GPU).
    output_dir : path or None
        Where to keep ``cvaes.pt`` (weights and histories); a temporary directory by default.

    Returns
    -------
    (list of TrainedVAE, float)
        The trained models, in the order of ``datasets``, and the wall-clock seconds of the launch.
    """
    import torch

    data = [(torch.as_tensor(np.asarray(X), dtype=torch.float32).contiguous(),
             torch.as_tensor(np.asarray(y), dtype=torch.int64), int(seed)) for X, y, seed in datasets]
    config = dict(n_classes=int(n_classes), hidden=int(hidden), latent=int(latent), epochs=int(epochs),
                  batch_size=int(batch_size), lr=float(lr), beta=float(beta), num_processes=int(num_processes),
                  mixed_precision=mixed_precision, progress=bool(progress))
    started = time.perf_counter()
    saved = launch_for_result(_train_worker, (data, config, loss_fn, reparameterize), config["num_processes"],
                              mixed_precision, output_dir, RESULT_FILE)
    seconds = time.perf_counter() - started
    models = []
    for (X, _, _), state, history in zip(data, saved["states"], saved["histories"]):
        model = ConditionalVAE(X.shape[1], config["n_classes"], config["hidden"], config["latent"])
        model.load_state_dict(state)
        model.eval()
        models.append(TrainedVAE(model=model, history=[float(v) for v in history], config=config))
    return models, seconds


def sample_classes(vae: TrainedVAE, counts: dict[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``counts[c]`` synthetic images of each class ``c`` (in ascending class order): ``(X_new, y_new)``."""
    labels = np.concatenate([np.full(int(n), int(c), dtype=np.int64) for c, n in sorted(counts.items())]
                            or [np.zeros(0, dtype=np.int64)])
    return vae.sample(labels, seed=seed), labels


# --------------------------------------------------------------------------- downstream classifier
def fit_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_test: np.ndarray, max_iter: int = 2000) -> np.ndarray:
    """Fit the downstream classifier and return its int64 predictions for ``X_test``.

    The classifier is scikit-learn's multinomial ``LogisticRegression(max_iter=max_iter)`` (L2,
    C=1, lbfgs) on the raw pixels: deterministic, the same for every arm of the comparison.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):   # a small problem: one BLAS thread beats several competing ones
        clf = LogisticRegression(max_iter=int(max_iter)).fit(np.asarray(X_fit, dtype=np.float64), np.asarray(y_fit))
        return clf.predict(np.asarray(X_test, dtype=np.float64)).astype(np.int64)


# --------------------------------------------------------------------------- plots
def plot_digit_rows(rows: dict[str, np.ndarray], side: int = 8, n_show: int = 10, title: str | None = None):
    """One row of ``n_show`` images per entry of ``rows`` (label -> flat images), grey on white."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, 1.8 + 0.55 * n_show), 0.75 * len(rows) + 0.4),
                             squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        images = np.asarray(images)[:n_show].reshape(-1, side, side)
        strip = np.hstack([np.pad(img, 1, constant_values=0.0) for img in images]) if len(images) else np.zeros((side, side))
        ax.imshow(strip, cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_recall_bars(table, classes: Sequence[int], minority: Sequence[int], title: str | None = None):
    """Grouped bars: recall of every class (columns ``recall_<c>`` of ``table``) for each arm (row).

    Minority classes are shaded in the background.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(table))
    for i, c in enumerate(classes):
        if c in set(minority):
            ax.axvspan(i - 0.45, i + 0.45, color="0.92", zorder=0)
    for j, (arm, row) in enumerate(table.iterrows()):
        ax.bar(x + (j - (len(table) - 1) / 2) * width, [row[f"recall_{c}"] for c in classes], width, label=arm)
    ax.set_xticks(x, [f"{c}\n(rare)" if c in set(minority) else str(c) for c in classes])
    ax.set_ylim(0.0, 1.2)
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("recall on the real test set")
    ax.set_xlabel("class")
    ax.legend(frameon=False, fontsize=8, ncol=len(table), loc="upper center")
    ax.set_title(title or "Per-class recall of the downstream classifier (rare classes shaded)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_seed_spread(per_seed, metric: str = "minority_recall", title: str | None = None):
    """One line per seed across the arms (columns of ``per_seed``: arms, rows: seeds) and the mean."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(per_seed.shape[1])
    for seed, row in per_seed.iterrows():
        ax.plot(x, row.to_numpy(dtype=float), marker="o", color="0.7", lw=1)
    ax.plot(x, per_seed.mean(axis=0).to_numpy(dtype=float), marker="o", color="C3", lw=2.5, label="mean over seeds")
    ax.set_xticks(x, list(per_seed.columns))
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title or f"{metric.replace('_', ' ')}: each grey line is one seed (split, rare examples, VAE)",
                 fontsize=10)
    fig.tight_layout()
    return fig
