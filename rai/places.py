"""Support code of the workshop lab *A CNN on Places365 across GPUs*.

Students do not write any of this; the lab asks them for parameter counts, a
top-k accuracy, and the two functions a data-parallel training loop is made of.

* :func:`write_miniature_places365` generates a small synthetic data set in
  **exactly** the on-disk layout that :class:`torchvision.datasets.Places365`
  reads with ``small=True`` (``categories_places365.txt``,
  ``places365_train_standard.txt``, ``places365_val.txt``,
  ``data_256_standard/<letter>/<category>/<n>.jpg``, ``val_256/Places365_val_<n>.jpg``):
  ten real Places365 category names, JPEG images of scene-like patterns (sky
  and ground colours, a horizon, a texture) whose class can be learned, in
  five pairs of deliberately similar scenes (beach / coast, broadleaf forest /
  bamboo forest, ...), as Places365's own classes overlap.
* :class:`MiniaturePlaces365` is torchvision's ``Places365`` with one change:
  the MD5 check of the three metadata files is reduced to "the file exists".
  The generated files cannot have the official checksums (they list other
  images), so the unmodified class refuses them.  Everything else -- parsing
  the file lists, the image paths, the class index, loading the JPEGs -- is
  torchvision's own code.  :func:`load_places365` uses the **unmodified**
  class, checksums included, when ``data_root`` points at the real data set.
* :func:`make_model` builds the network: ``"gapcnn"`` (convolution blocks,
  global average pooling, one linear layer) or a torchvision ResNet
  (``"resnet18"``, ``"resnet50"``) for the full run.
* :func:`train_places` trains it with Hugging Face ``accelerate`` in one or
  several processes (:func:`rai.training.launch_for_result`; gloo on CPU
  cores, one GPU each on a node).  The per-batch step and the gathered
  evaluation are passed in as functions (the lab has the learner write them);
  the validation logits and labels of the last epoch come back with the
  weights.
* :func:`plot_training`, :func:`plot_confusion`, :func:`show_predictions`,
  :func:`plot_parameter_counts` draw the lab's figures.

Example
-------
>>> import tempfile
>>> root = write_miniature_places365(tempfile.mkdtemp(), n_train_per_class=2, n_val_per_class=1, image_size=32)
>>> train_set, val_set = load_places365(root, image_size=32)
>>> len(train_set), len(val_set), val_set.classes[:2]
(20, 10, ['/a/alley', '/b/bamboo_forest'])
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from torchvision.datasets import Places365

from .training import launch_for_result, make_accelerator

__all__ = ["SCENES", "write_miniature_places365", "MiniaturePlaces365", "load_places365", "make_model",
           "count_parameters", "TrainedPlaces", "train_places", "plot_training", "plot_confusion",
           "show_predictions", "plot_parameter_counts"]

RESULT_FILE = "places.pt"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # ImageNet statistics, as for real Places365 training

# Ten real Places365-Standard categories, in five pairs of similar scenes.  For each: the colour
# of the sky (top) and the ground (bottom) as RGB in [0, 1], the height of the horizon (fraction
# of the image from the top), the texture of the ground and its frequency (cycles per image).
SCENES: dict[str, dict[str, Any]] = {
    "/b/beach":            dict(sky=(0.55, 0.75, 0.95), ground=(0.85, 0.78, 0.55), horizon=0.45, texture="hwaves", freq=3),
    "/c/coast":            dict(sky=(0.55, 0.72, 0.92), ground=(0.35, 0.55, 0.70), horizon=0.40, texture="hwaves", freq=5),
    "/f/forest/broadleaf": dict(sky=(0.45, 0.60, 0.35), ground=(0.20, 0.40, 0.15), horizon=0.15, texture="vstripes", freq=4),
    "/b/bamboo_forest":    dict(sky=(0.55, 0.70, 0.40), ground=(0.30, 0.50, 0.20), horizon=0.10, texture="vstripes", freq=9),
    "/m/mountain":         dict(sky=(0.50, 0.65, 0.90), ground=(0.45, 0.40, 0.35), horizon=0.50, texture="peaks", freq=2),
    "/g/glacier":          dict(sky=(0.70, 0.80, 0.95), ground=(0.80, 0.88, 0.95), horizon=0.45, texture="peaks", freq=3),
    "/k/kitchen":          dict(sky=(0.85, 0.75, 0.60), ground=(0.60, 0.45, 0.30), horizon=0.55, texture="grid", freq=6),
    "/b/bathroom":         dict(sky=(0.85, 0.88, 0.90), ground=(0.70, 0.75, 0.80), horizon=0.50, texture="grid", freq=8),
    "/h/highway":          dict(sky=(0.60, 0.75, 0.90), ground=(0.40, 0.40, 0.42), horizon=0.45, texture="perspective", freq=3),
    "/a/alley":            dict(sky=(0.45, 0.45, 0.50), ground=(0.50, 0.35, 0.28), horizon=0.30, texture="perspective", freq=6),
}


# --------------------------------------------------------------------------- data
def _scene_image(spec: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    """One H x W x 3 uint8 image of a scene: sky, horizon, textured ground, noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    horizon = spec["horizon"] + rng.uniform(-0.08, 0.08)
    freq = spec["freq"] * rng.uniform(0.85, 1.15)
    phase = rng.uniform(0, 2 * np.pi)
    texture = spec["texture"]
    if texture == "peaks":                      # a jagged skyline: the horizon itself is a zigzag
        horizon = horizon + 0.12 * np.abs(((xx * freq + phase / (2 * np.pi)) % 1.0) - 0.5) * 2 - 0.06
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * freq * yy + phase)
    elif texture == "hwaves":                   # horizontal waves or ripples
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (yy + 0.05 * np.sin(2 * np.pi * 2 * xx)) + phase)
    elif texture == "vstripes":                 # tree trunks or stems
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * xx + phase)
    elif texture == "grid":                     # tiles
        pattern = 0.5 + 0.25 * (np.sin(2 * np.pi * freq * xx + phase) + np.sin(2 * np.pi * freq * yy + phase))
    elif texture == "perspective":              # lines converging at a vanishing point on the horizon
        vx = 0.5 + rng.uniform(-0.1, 0.1)
        angle = np.arctan2(xx - vx, np.maximum(yy - horizon, 1e-3))
        pattern = 0.5 + 0.5 * np.sin(freq * 2 * angle + phase)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    jitter = lambda rgb: np.clip(np.asarray(rgb) + rng.normal(0, 0.06, 3), 0, 1)  # noqa: E731
    sky, ground = jitter(spec["sky"]), jitter(spec["ground"])
    below = (yy > horizon)[..., None]
    sky_img = sky * (0.85 + 0.15 * (1 - yy))[..., None]                          # a vertical gradient
    ground_img = ground * (0.65 + 0.35 * pattern)[..., None]
    img = np.where(below, ground_img, sky_img)
    img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 0.08, img.shape)          # exposure and sensor noise
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_miniature_places365(root: str | os.PathLike, n_train_per_class: int = 60, n_val_per_class: int = 20,
                              image_size: int = 64, seed: int = 0) -> Path:
    """Write a miniature Places365-Standard (``small=True`` layout) under ``root``; return ``root``.

    The files are those torchvision's ``Places365`` reads, formatted as in the official
    release: ``categories_places365.txt`` ("/a/alley 0"), ``places365_train_standard.txt``
    ("/a/alley/00000001.jpg 0"), ``places365_val.txt`` ("Places365_val_00000001.jpg 0"),
    ``places365_test.txt`` (file names only), the JPEGs under ``data_256_standard/`` (the folder
    name torchvision expects; the official archive extracts to ``data_256/``), ``val_256/`` and
    ``test_256/``.  The categories are the ten of :data:`SCENES`, numbered 0-9 in sorted order
    as in the real file (where they are among 365).  Validation images come in random
    class order, as in the real ``places365_val.txt``.  ``image_size`` is the side of the JPEGs
    (the real "small" images are 256).  The same ``seed`` writes the same files.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = sorted(SCENES)
    size = int(image_size)
    (root / "categories_places365.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(names)))

    lines = []
    for label, name in enumerate(names):
        folder = root / "data_256_standard" / name.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, int(n_train_per_class) + 1):
            Image.fromarray(_scene_image(SCENES[name], size, rng)).save(folder / f"{k:08d}.jpg", quality=90)
            lines.append(f"/{name.lstrip('/')}/{k:08d}.jpg {label}\n")
    (root / "places365_train_standard.txt").write_text("".join(lines))

    for split, folder_name, list_name, labelled in (("val", "val_256", "places365_val.txt", True),
                                                    ("test", "test_256", "places365_test.txt", False)):
        folder = root / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        n_per_class = int(n_val_per_class) if split == "val" else 1
        labels = np.tile(np.arange(len(names)), n_per_class)       # n_per_class of each class ...
        rng.shuffle(labels)                                          # ... in random order
        lines = []
        for k, label in enumerate(labels, start=1):
            file = f"Places365_{split}_{k:08d}.jpg"
            Image.fromarray(_scene_image(SCENES[names[label]], size, rng)).save(folder / file, quality=90)
            lines.append(f"{file} {label}\n" if labelled else f"{file}\n")
        (root / list_name).write_text("".join(lines))
    return root


class MiniaturePlaces365(Places365):
    """torchvision's ``Places365`` with the metadata MD5 check reduced to "the file exists".

    ``Places365(download=False)`` compares the MD5 of ``categories_places365.txt`` and of the
    split's file list with the official files' checksums and raises ``RuntimeError`` when they
    differ.  A generated miniature lists other images, so its files *must* differ; this subclass
    accepts any existing file instead and changes nothing else (file lists, image paths, class
    index and image loading are torchvision's code).  Never use it for the real data set, whose
    files pass the real check (:func:`load_places365` does not).
    """

    def _check_integrity(self, file: str, md5: str, download: bool) -> bool:
        if not os.path.isfile(file):
            raise RuntimeError(f"The file {file} does not exist.")
        return True


def transforms_for(image_size: int, train: bool):
    """The image transforms: resize the short side, crop to a square, (train: flip), tensor, normalise."""
    from torchvision import transforms

    size = int(image_size)
    steps = [transforms.Resize(size), transforms.CenterCrop(size)]
    if train:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    return transforms.Compose(steps)


def load_places365(root: str | os.PathLike, image_size: int = 64, real: bool = False):
    """``(train_set, val_set)``: the ``train-standard`` and ``val`` splits, ``small=True``.

    ``real=True`` uses torchvision's ``Places365`` unchanged (MD5 checks of the metadata
    included, ``download=False``) -- for the real data set on a cluster; otherwise
    :class:`MiniaturePlaces365` reads a miniature written by :func:`write_miniature_places365`.
    """
    cls = Places365 if real else MiniaturePlaces365
    train = cls(str(root), split="train-standard", small=True, download=False,
                transform=transforms_for(image_size, train=True))
    val = cls(str(root), split="val", small=True, download=False, transform=transforms_for(image_size, train=False))
    return train, val


# --------------------------------------------------------------------------- model
def make_model(name: str = "gapcnn", num_classes: int = 10, widths: Sequence[int] = (16, 32)):
    """The network: ``"gapcnn"`` or a torchvision ResNet (``"resnet18"``, ``"resnet50"``), random init.

    ``gapcnn``: for each width ``c`` in ``widths`` a block conv 3x3 (padding 1) -> BatchNorm2d(c)
    -> ReLU -> MaxPool2d(2); then ``AdaptiveAvgPool2d(1)`` (global average pooling), flatten and
    one ``Linear(widths[-1], num_classes)``.  Works for any image size of at least
    ``2 ** len(widths)`` pixels.
    """
    import torch.nn as nn

    if name == "gapcnn":
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (int(w) for w in widths):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, int(num_classes))]
        return nn.Sequential(*layers)
    import torchvision

    if name in ("resnet18", "resnet34", "resnet50"):
        return getattr(torchvision.models, name)(num_classes=int(num_classes))
    raise ValueError(f"unknown model {name!r}: 'gapcnn', 'resnet18', 'resnet34' or 'resnet50'")


def count_parameters(module) -> int:
    """``sum(p.numel() for p in module.parameters())`` as a Python int (works on the meta device)."""
    return int(sum(p.numel() for p in module.parameters()))


# --------------------------------------------------------------------------- training
@dataclass
class TrainedPlaces:
    """What :func:`train_places` brings back (all on the CPU).

    ``model`` is in evaluation mode; ``history`` has per-epoch lists ``train_loss`` (mean
    cross-entropy over all processes), ``val_top1`` (argmax accuracy of the gathered validation
    logits) and ``seconds``; ``val_logits`` (float32, ``(n_val, classes)``) and ``val_labels``
    (int64) are what the evaluation function returned in the main process after the last epoch.
    """

    model: Any
    history: dict[str, list[float]]
    val_logits: Any
    val_labels: Any
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


def _worker(step_fn: Callable, eval_fn: Callable, config: dict[str, Any], result_path: str) -> None:
    """Run by every process: data, model, prepare, train and evaluate; the main process saves."""
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    accelerator = make_accelerator(config["mixed_precision"])
    set_seed(config["seed"])                 # same initial weights and shuffle order in every process
    train_set, val_set = load_places365(config["root"], config["image_size"], config["real"])
    num_classes = len(train_set.classes)
    model = make_model(config["model_name"], num_classes, config["widths"])
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    workers = int(config["num_workers"])
    loader_kw = dict(num_workers=workers, pin_memory=accelerator.device.type == "cuda",
                     persistent_workers=workers > 0)
    train_dl = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(config["seed"]), **loader_kw)
    val_dl = DataLoader(val_set, batch_size=config["eval_batch_size"], shuffle=False, **loader_kw)
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    steps = config["epochs"] * len(train_dl)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=max(steps, 1),
                                                    pct_start=0.2)

    if accelerator.num_processes > 1:
        from tqdm.std import tqdm            # a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    main = accelerator.is_main_process
    if main and config["progress"]:
        print(f"training {config['model_name']} on {accelerator.device.type} in {accelerator.num_processes} "
              f"process(es), {len(train_dl)} steps per epoch of a global batch of "
              f"{config['batch_size'] * accelerator.num_processes}, mixed precision: {accelerator.mixed_precision}",
              flush=True)
    bar = tqdm(total=steps, desc="training", unit="step", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))
    history: dict[str, list[float]] = {"train_loss": [], "val_top1": [], "seconds": []}
    started = time.perf_counter()
    logits = labels = None
    for _ in range(config["epochs"]):
        model.train()
        losses = []
        for images, targets in train_dl:
            per_example = step_fn(model, images, targets, optimizer, accelerator)
            scheduler.step()
            losses.append(accelerator.gather_for_metrics(per_example.detach().float().reshape(-1)))
            bar.update(1)
        logits, labels = eval_fn(model, val_dl, accelerator)
        history["train_loss"].append(float(torch.cat(losses).mean().item()))
        history["val_top1"].append(float((logits.argmax(dim=1).cpu() == labels.cpu()).float().mean().item()))
        history["seconds"].append(time.perf_counter() - started)
        bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", val_top1=f"{history['val_top1'][-1]:.3f}")
    bar.close()
    accelerator.wait_for_everyone()
    if main:
        state = {k: v.detach().to("cpu", torch.float32) for k, v in accelerator.get_state_dict(model).items()}
        torch.save({"state_dict": state, "history": history, "classes": list(train_set.classes),
                    "val_logits": torch.as_tensor(logits).detach().to("cpu", torch.float32),
                    "val_labels": torch.as_tensor(labels).detach().to("cpu", torch.int64)}, result_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def train_places(root: str | os.PathLike, step_fn: Callable, eval_fn: Callable, *, real: bool = False,
                 model_name: str = "gapcnn", widths: Sequence[int] = (16, 32), image_size: int = 64,
                 epochs: int = 5, batch_size: int = 32, eval_batch_size: int = 64, lr: float = 0.01,
                 weight_decay: float = 1e-4, num_processes: int = 1, mixed_precision: str = "no",
                 num_workers: int = 0, seed: int = 0, output_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> TrainedPlaces:
    """Train :func:`make_model` on the Places365 layout at ``root`` with ``accelerate``.

    Every process loads both splits, builds the model, ``prepare``\\ s it with AdamW and the two
    data loaders (``batch_size`` per process; the validation loader unshuffled), and for each
    epoch calls ``step_fn(model, images, labels, optimizer, accelerator)`` on each of its
    training batches -- which must do one optimisation step and return the batch's per-example
    losses -- then ``eval_fn(model, val_loader, accelerator)``, which must return the validation
    ``(logits, labels)`` of *all* processes.  The learning rate follows a one-cycle schedule
    peaking at ``lr``.  With ``num_processes > 1`` the processes are started with
    :func:`accelerate.notebook_launcher`; the main one saves the weights, the history and the
    last evaluation, which are loaded back here (:func:`rai.training.launch_for_result`).
    """
    import torch

    config = dict(root=str(root), real=bool(real), model_name=str(model_name), widths=tuple(int(w) for w in widths),
                  image_size=int(image_size), epochs=int(epochs), batch_size=int(batch_size),
                  eval_batch_size=int(eval_batch_size), lr=float(lr), weight_decay=float(weight_decay),
                  num_processes=int(num_processes), mixed_precision=mixed_precision,
                  num_workers=int(num_workers), seed=int(seed), progress=bool(progress))
    started = time.perf_counter()
    saved = launch_for_result(_worker, (step_fn, eval_fn, config), config["num_processes"], mixed_precision,
                              output_dir, RESULT_FILE)
    model = make_model(config["model_name"], len(saved["classes"]), config["widths"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    history = {k: [float(v) for v in values] for k, values in saved["history"].items()}
    return TrainedPlaces(model=model, history=history, val_logits=saved["val_logits"].to(torch.float32),
                         val_labels=saved["val_labels"].to(torch.int64), config=config,
                         train_seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- plots
def plot_training(history: dict[str, Sequence[float]], chance: float | None = None):
    """Training loss and validation top-1 per epoch, side by side."""
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 3.0))
    ax1.plot(epochs, history["train_loss"], "o-", color="#3a7ca5")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="Training loss")
    ax2.plot(epochs, history["val_top1"], "o-", color="#c05780", label="validation top-1")
    if chance is not None:
        ax2.axhline(chance, color="0.5", ls="--", lw=1, label="chance")
    ax2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Validation top-1")
    ax2.legend(frameon=False, fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.tight_layout()
    return fig


def plot_confusion(labels, predictions, classes: Sequence[str], title: str = "Validation confusion matrix"):
    """A row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    import matplotlib.pyplot as plt

    labels, predictions = np.asarray(labels), np.asarray(predictions)
    k = len(classes)
    counts = np.zeros((k, k))
    np.add.at(counts, (labels, predictions), 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [c.split("/", 2)[-1] for c in classes]
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def show_predictions(dataset, logits=None, n: int = 10, k: int = 3, title: str | None = None):
    """The first ``n`` images of ``dataset`` with their true class and (given ``logits``) the ``k`` best predictions."""
    import matplotlib.pyplot as plt
    import torch

    logits = None if logits is None else torch.as_tensor(logits)
    n = min(int(n), len(dataset))
    cols = 5
    rows = (n + cols - 1) // cols
    height = 2.3 if logits is None else 2.9
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, height * rows + 0.4), squeeze=False)
    short = [c.split("/", 2)[-1] for c in dataset.classes]
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        image, label = dataset[i]
        shown = (image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]).clamp(0, 1)
        ax = axes.ravel()[i]
        ax.imshow(shown.permute(1, 2, 0).numpy())
        if logits is None:
            ax.set_title(short[label], fontsize=8)
            continue
        best = logits[i].topk(min(k, logits.shape[1])).indices.tolist()
        ax.set_title(f"true: {short[label]}\n" + "\n".join(f"{j + 1}. {short[c]}" for j, c in enumerate(best)),
                     fontsize=7, color="#2a7a2a" if best[0] == label else "#b03030", loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_parameter_counts(counts: dict[str, int], bytes_per_parameter: int = 16, title: str | None = None):
    """Horizontal bars (log scale) of parameter counts, labelled with the training memory they need."""
    import matplotlib.pyplot as plt

    names = list(counts)[::-1]
    values = [counts[n] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(names) + 1.2))
    ax.barh(names, values, color="#3a7ca5")
    ax.set_xscale("log")
    for i, v in enumerate(values):
        ax.text(v * 1.15, i, f"{v:,}  ({v * bytes_per_parameter / 1e9:.3g} GB)", va="center", fontsize=7)
    ax.set_xlim(1, max(values) * 400)
    ax.set_xlabel(f"parameters (log scale); in brackets: {bytes_per_parameter} bytes each\n"
                  "(fp32 weight + gradient + two Adam moments)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
