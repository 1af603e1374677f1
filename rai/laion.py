"""Support code of the workshop lab *Ethical AI on LAION-style image–text data*.

Students do not write any of this; the lab asks them for the caption audit, the per-group
evaluation with fairlearn and the statistics that separate a real gap from noise.

* :func:`write_laion_shards` generates small **webdataset shards** (``shard-000000.tar``, ...)
  in exactly the layout that LAION-style data sets use after ``img2dataset``: POSIX tar files in
  which each sample is three adjacent files sharing a key -- ``KEY.jpg`` (the image),
  ``KEY.txt`` (the caption) and ``KEY.json`` (the metadata: ``url``, ``caption``, ``width``,
  ``height``, ``similarity``, ``punsafe``, ``pwatermark``, as in LAION's parquet files, plus
  the annotations an audit team added: ``region``, a region bucket anonymised as ``A``/``B``/``C``,
  and ``label``, the object class).  The images are 32 x 32 JPEGs of patterned textiles
  (stripes, checks, dots: the class signal).  The three regions differ in how much data they have, in image quality
  (noise, contrast, blur, JPEG compression), in the noise of their labels and in their captions,
  so that a model trained on the pooled data *really* performs differently by region -- the
  generator never touches a prediction.  A share of captions contains terms of the lab's
  blocklist :data:`BLOCKLIST` (mild words and placeholder tokens, no slurs), at rates that
  differ by region, some of them in benign uses ("hot soup").
* :func:`shard_urls` and :func:`load_shards` read shards with the real loader,
  ``webdataset.WebDataset(urls).decode("pil").to_tuple("jpg", "txt", "json")``; ``data_root``
  may point at real annotated LAION-style shards (a directory or a brace pattern).
* :func:`train_vit` trains a tiny Vision Transformer -- ``transformers``'
  ``ViTForImageClassification`` built from a ``ViTConfig`` with random weights -- with Hugging
  Face ``accelerate`` in one or several processes (:func:`rai.training.launch_for_result`; gloo
  on CPU cores, one GPU each on a node).
* :func:`show_samples`, :func:`plot_filter_rates`, :func:`plot_group_accuracy` and
  :func:`plot_null_distributions` draw the lab's figures.

Why the shards are read once, in the main process, before the processes are launched: the
audit needs every caption and every metadata record anyway, the lab's data fit in memory, and
``accelerate`` then gives each process its share of every batch, so all processes take the same
number of steps.  Streaming shards inside each process (``wds.split_by_node`` /
``wds.split_by_worker``) is what a LAION-scale run needs, but each process then gets whole
shards: unless every process is guaranteed the same number of samples (equal shards, or
``.with_epoch(n)`` on a resampled stream), one process runs out of batches first and the
gradient all-reduce of the others waits for it forever.

Example
-------
>>> import tempfile
>>> root = write_laion_shards(tempfile.mkdtemp(), n_samples=40, samples_per_shard=20, seed=0)
>>> images, captions, meta = load_shards(shard_urls(root))
>>> images.shape, len(captions), sorted(meta.columns)[:3]
((40, 32, 32, 3), 40, ['caption', 'height', 'key'])
"""
from __future__ import annotations

import glob
import io
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .training import launch_for_result, make_accelerator, save_result

__all__ = ["CLASSES", "REGIONS", "BLOCKLIST", "write_laion_shards", "shard_urls", "load_shards",
           "vit_config", "TrainedViT", "train_vit", "show_samples", "plot_filter_rates",
           "plot_group_accuracy", "plot_null_distributions"]

RESULT_FILE = "vit.pt"

#: The object classes: the ``label`` of every sample (``label_id`` is the index here).
CLASSES: tuple[str, ...] = ("vertical stripes", "horizontal stripes", "checks", "dots")

#: How the three region buckets differ.  ``share``: of the samples; ``noise``: std of the
#: Gaussian pixel noise (pixels in [0, 1]); ``contrast``: between the two colours of the pattern;
#: ``blur``: radius of a Gaussian blur; ``quality``: JPEG quality; ``label_noise``: share of
#: samples whose annotated label is another class drawn at random; ``flag_rate``: share of
#: captions with a blocklisted term in a harmful use (spam, insults); ``benign_rate``: share of
#: captions with a blocklisted word in a benign use; ``similarity``: mean of the CLIP-like score.
REGIONS: dict[str, dict[str, float]] = {
    "A": dict(share=0.72, noise=0.06, contrast=0.85, blur=0.0, quality=90, label_noise=0.02,
              flag_rate=0.03, benign_rate=0.02, similarity=0.33),
    "B": dict(share=0.18, noise=0.14, contrast=0.60, blur=0.6, quality=45, label_noise=0.06,
              flag_rate=0.05, benign_rate=0.06, similarity=0.31),
    "C": dict(share=0.10, noise=0.22, contrast=0.45, blur=0.9, quality=25, label_noise=0.10,
              flag_rate=0.05, benign_rate=0.16, similarity=0.30),
}

#: The lab's harmful-term blocklist: mild words and placeholder tokens that stand in for the
#: offensive terms of a real list.  "hot" is in it on purpose: real lists hold words with
#: harmless uses too.
BLOCKLIST: tuple[str, ...] = ("nsfw", "xxx", "damn", "crap", "hot", "badword")

_SYNONYMS = {"vertical stripes": ["pinstripe shirt", "striped curtain", "vertical blinds", "striped wallpaper"],
             "horizontal stripes": ["breton top", "striped towel", "rugby shirt", "striped deckchair"],
             "checks": ["checked tablecloth", "gingham dress", "plaid scarf", "checkerboard tiles"],
             "dots": ["polka dot dress", "spotted mug", "dotted scarf", "polka dot umbrella"]}
_TEMPLATES = ["a {c} {o} on a {b} background", "photo of a {c} {o}", "{c} {o}, stock image",
              "close-up of a {o} in {c}", "{o} icon {c} vector art", "the {c} {o} we sell",
              "IMG_{n}.jpg", "{c} {o} | free download", "handmade {c} {o} for sale"]
_COLOURS = ["red", "blue", "green", "yellow", "pink", "purple", "white", "black"]
_BACKGROUNDS = ["plain", "white", "grey", "dark", "wooden", "paper"]
_HARMFUL = ["nsfw {c} {o} xxx", "damn this {o}", "{c} {o} crap quality", "badword {o} badword",
            "xxx {c} {o} pics", "hot {o} nsfw"]
_BENIGN = ["hot soup with a {c} {o}", "{c} {o} on a hot day", "hot sauce bottle {o} label",
           "hot pot restaurant {o} sign", "{o} on the hot stove"]
_DOMAINS = {"A": ["shop.example.com", "images.example.org", "cdn.example.net"],
            "B": ["market.example.co", "photos.example.io"],
            "C": ["forum.example.africa", "news.example.asia", "blog.example.site"]}


# --------------------------------------------------------------------------- data
def _render(label_id: int, spec: dict[str, float], size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image (uint8, size x size x 3): a patterned textile of class ``label_id``.

    Two random colours (their distance set by the region's ``contrast``), a random period
    (3.5 to 6.5 pixels at 32 px) and phase, then the region's blur and pixel noise.
    """
    from PIL import Image, ImageFilter

    scale = size / 32
    base = rng.uniform(0.2, 0.8, size=3)
    direction = rng.normal(size=3)
    direction *= 0.5 * spec["contrast"] / np.linalg.norm(direction)
    c0, c1 = np.clip(base - direction, 0, 1), np.clip(base + direction, 0, 1)
    period = rng.uniform(3.5, 6.5) * scale
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + rng.uniform(0, period, size=2)[:, None, None]
    name = CLASSES[label_id]
    if name == "vertical stripes":
        mask = np.sin(2 * np.pi * xx / period) > 0
    elif name == "horizontal stripes":
        mask = np.sin(2 * np.pi * yy / period) > 0
    elif name == "checks":
        mask = (np.sin(2 * np.pi * xx / period) > 0) ^ (np.sin(2 * np.pi * yy / period) > 0)
    else:  # dots on a square grid
        mask = (np.cos(2 * np.pi * xx / period) + np.cos(2 * np.pi * yy / period)) > 1.0
    pixels = np.where(mask[..., None], c1, c0)
    image = Image.fromarray((pixels * 255).round().astype(np.uint8))
    if spec["blur"] > 0:
        image = image.filter(ImageFilter.GaussianBlur(spec["blur"] * scale))
    pixels = np.asarray(image, dtype=np.float64) / 255 + rng.normal(0, spec["noise"], size=(size, size, 3))
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def _caption(label_id: int, kind: str, rng: np.random.Generator) -> str:
    words = dict(c=rng.choice(_COLOURS), o=rng.choice(_SYNONYMS[CLASSES[label_id]]), b=rng.choice(_BACKGROUNDS),
                 n=int(rng.integers(1000, 9999)))
    template = {"harmful": _HARMFUL, "benign": _BENIGN, "plain": _TEMPLATES}[kind]
    return str(rng.choice(template)).format(**words)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644      # fixed metadata: reproducible shards
    tar.addfile(info, io.BytesIO(data))


def write_laion_shards(root: str | os.PathLike, n_samples: int = 3000, samples_per_shard: int = 500,
                       image_size: int = 32, seed: int = 0) -> Path:
    """Write ``ceil(n_samples / samples_per_shard)`` webdataset shards into ``root``; return ``root``.

    Shard ``i`` is ``root/shard-{i:06d}.tar``; sample keys are ``{i:06d}{j:04d}`` (shard, index
    in the shard), and each sample is the adjacent members ``KEY.jpg``, ``KEY.txt``, ``KEY.json``.
    The JSON record holds LAION's metadata fields (``key``, ``url``, ``caption``, ``width``,
    ``height``, ``similarity``, ``punsafe``, ``pwatermark``) and the annotations ``region``
    (``"A"``, ``"B"``, ``"C"``; a few records have ``null``: not annotated), ``label`` (a name of
    :data:`CLASSES`) and ``label_id``.  Everything is drawn from ``seed``: the same call writes
    byte-identical shards.
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(REGIONS)
    shares = np.array([REGIONS[g]["share"] for g in names])
    n_shards = -(-int(n_samples) // int(samples_per_shard))
    index = 0
    for s in range(n_shards):
        with tarfile.open(root / f"shard-{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for j in range(min(int(samples_per_shard), int(n_samples) - index)):
                key = f"{s:06d}{j:04d}"
                region = str(rng.choice(names, p=shares))
                spec = REGIONS[region]
                true_id = int(rng.integers(len(CLASSES)))
                pixels = _render(true_id, spec, image_size, rng)
                label_id = int(rng.integers(len(CLASSES))) if rng.random() < spec["label_noise"] else true_id
                u = rng.random()
                kind = "harmful" if u < spec["flag_rate"] else "benign" if u < spec["flag_rate"] + spec["benign_rate"] else "plain"
                caption = _caption(true_id, kind, rng)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(spec["quality"]))
                meta = {"key": key, "url": f"https://{rng.choice(_DOMAINS[region])}/img/{key}.jpg",
                        "caption": caption, "width": image_size, "height": image_size,
                        "similarity": round(float(np.clip(rng.normal(spec["similarity"], 0.02), 0.28, 0.45)), 4),
                        "punsafe": round(float(rng.beta(8, 4) if kind == "harmful" else rng.beta(1, 30)), 4),
                        "pwatermark": round(float(rng.beta(1, 8)), 4),
                        "region": None if rng.random() < 0.01 else region,
                        "label": CLASSES[label_id], "label_id": label_id}
                _add_file(tar, f"{key}.jpg", buffer.getvalue())
                _add_file(tar, f"{key}.txt", caption.encode("utf-8"))
                _add_file(tar, f"{key}.json", json.dumps(meta).encode("utf-8"))
                index += 1
    return root


def shard_urls(data_root: str | os.PathLike) -> list[str]:
    """The shard URLs of ``data_root``: a directory (its ``*.tar`` files, sorted), or a brace
    pattern such as ``/scratch/laion/{00000..00099}.tar`` or ``pipe:curl -s https://.../{0..9}.tar``
    (expanded as webdataset expands it)."""
    import braceexpand

    text = str(data_root)
    if os.path.isdir(text):
        urls = sorted(glob.glob(os.path.join(text, "*.tar")))
        if not urls:
            raise FileNotFoundError(f"no *.tar shards in {text}")
        return urls
    return list(braceexpand.braceexpand(text))


def load_shards(urls: Sequence[str], image_size: int = 32, max_samples: int | None = None):
    """Read webdataset shards with the real loader; return ``(images, captions, meta)``.

    ``webdataset.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json")``
    yields the samples in shard order.  ``images`` is a uint8 array ``(n, image_size,
    image_size, 3)`` (resized if a shard's images have another size, as real LAION images do),
    ``captions`` a list of str (the ``.txt`` files), ``meta`` a pandas DataFrame of the JSON
    records (one row per sample, the ``shard`` it came from added).  Call it in one process (it
    refuses to run inside a multi-process job, as webdataset's ``single_node_only`` does).
    """
    import pandas as pd
    import webdataset as wds
    from PIL import Image

    dataset = wds.WebDataset(list(urls), shardshuffle=False, empty_check=False).decode("pil").to_tuple(
        "jpg", "txt", "json", "__url__")
    images, captions, records = [], [], []
    for image, caption, meta, url in dataset:
        if max_samples is not None and len(images) >= max_samples:
            break
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        images.append(np.asarray(image, dtype=np.uint8))
        captions.append(caption)
        records.append({**meta, "shard": os.path.basename(str(url))})
    if not images:
        raise ValueError(f"no samples in {list(urls)[:3]}...")
    return np.stack(images), captions, pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- model and training
def vit_config(num_labels: int, image_size: int = 32, patch_size: int = 4, hidden_size: int = 64,
               num_layers: int = 2, num_heads: int = 4):
    """A ``transformers.ViTConfig`` for a tiny ViT (MLP width 2 x hidden, no dropout)."""
    from transformers import ViTConfig

    return ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=3, hidden_size=hidden_size,
                     num_hidden_layers=num_layers, num_attention_heads=num_heads,
                     intermediate_size=2 * hidden_size, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=num_labels)


def _to_pixels(images_uint8):
    """uint8 (n, H, W, 3) -> float32 tensor (n, 3, H, W) in [-1, 1], as ViT image processors normalise."""
    import torch

    x = torch.tensor(np.asarray(images_uint8, dtype=np.uint8)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


@dataclass
class TrainedViT:
    """A trained ViT on the CPU, in evaluation mode, with its loss history."""

    model: Any
    history: dict[str, list[float]]
    config: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0

    def predict(self, images_uint8: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Predicted class ids (int64 array) for uint8 images ``(n, H, W, 3)``."""
        import torch

        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images_uint8), batch_size):
                logits = self.model(pixel_values=_to_pixels(images_uint8[start:start + batch_size])).logits
                out.append(logits.argmax(dim=1).numpy())
        return np.concatenate(out).astype(np.int64)


def _vit_worker(images: np.ndarray, labels: np.ndarray, config: dict[str, Any], result_path: str) -> None:
    """Run by every process: model, prepare, train; the main process saves weights and history."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import ViTForImageClassification

    accelerator = make_accelerator(config["mixed_precision"])
    set_seed(config["seed"])                 # same initial weights and shuffle order in every process
    model = ViTForImageClassification(vit_config(**config["vit"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    dataset = TensorDataset(_to_pixels(images), torch.tensor(np.asarray(labels, dtype=np.int64)))
    loader = DataLoader(dataset, batch_size=config["batch_size"], shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps = config["epochs"] * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=max(steps, 1),
                                                    pct_start=0.15)
    if accelerator.num_processes > 1:
        from tqdm.std import tqdm            # a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    if accelerator.is_main_process and config["progress"]:
        print(f"training a ViT on {accelerator.device.type} in {accelerator.num_processes} process(es): "
              f"{len(loader)} steps per epoch of a global batch of {config['batch_size'] * accelerator.num_processes}, "
              f"mixed precision: {accelerator.mixed_precision}", flush=True)
    bar = tqdm(total=steps, desc="training", unit="step", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))
    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": []}
    for _ in range(config["epochs"]):
        model.train()
        losses, hits = [], []
        for x, y in loader:
            if config["augment"]:            # the patterns keep their class under a horizontal flip
                flip = torch.rand(x.shape[0], device=x.device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            logits = model(pixel_values=x).logits
            loss = F.cross_entropy(logits.float(), y, reduction="none")
            accelerator.backward(loss.mean())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            gathered_loss, gathered_hit = accelerator.gather_for_metrics(
                (loss.detach(), (logits.argmax(dim=1) == y).float()))
            losses.append(gathered_loss)
            hits.append(gathered_hit)
            bar.update(1)
        history["train_loss"].append(float(torch.cat(losses).mean().item()))
        history["train_accuracy"].append(float(torch.cat(hits).mean().item()))
        bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", acc=f"{history['train_accuracy'][-1]:.3f}")
    bar.close()
    save_result(accelerator, model, result_path, history=history)


def train_vit(images: np.ndarray, labels: np.ndarray, *, num_labels: int, image_size: int = 32, patch_size: int = 4,
              hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, epochs: int = 8,
              batch_size: int = 32, lr: float = 3e-3, weight_decay: float = 0.05, augment: bool = True,
              num_processes: int = 1, mixed_precision: str = "no", seed: int = 0,
              output_dir: str | os.PathLike | None = None, progress: bool = True) -> TrainedViT:
    """Train a tiny ``ViTForImageClassification`` (random init from :func:`vit_config`) with ``accelerate``.

    ``images``: uint8 ``(n, image_size, image_size, 3)``; ``labels``: class ids.  Every process
    builds the same model (same seed), ``prepare``\\ s it with AdamW (one-cycle schedule peaking
    at ``lr``) and a shuffled loader of ``batch_size`` images per process, so each process trains
    on its own share of every global batch and gradients are averaged across processes.  With
    ``num_processes > 1`` the processes are started with :func:`accelerate.notebook_launcher`
    (:func:`rai.training.launch_for_result`); the main one saves the weights, loaded back here.
    """
    from transformers import ViTForImageClassification

    vit = dict(num_labels=int(num_labels), image_size=int(image_size), patch_size=int(patch_size),
               hidden_size=int(hidden_size), num_layers=int(num_layers), num_heads=int(num_heads))
    config = dict(vit=vit, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                  weight_decay=float(weight_decay), augment=bool(augment), num_processes=int(num_processes),
                  mixed_precision=mixed_precision, seed=int(seed), progress=bool(progress))
    started = time.perf_counter()
    saved = launch_for_result(_vit_worker, (np.ascontiguousarray(images, dtype=np.uint8), np.asarray(labels), config),
                              config["num_processes"], mixed_precision, output_dir, RESULT_FILE)
    model = ViTForImageClassification(vit_config(**vit))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    history = {k: [float(v) for v in values] for k, values in saved["history"].items()}
    return TrainedViT(model=model, history=history, config=config, train_seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- plots
def show_samples(images: np.ndarray, captions: Sequence[str], meta, n: int = 12, columns: int = 6,
                 title: str | None = None):
    """A grid of ``n`` images with their caption, label and region (the first ones of each region)."""
    import textwrap

    import matplotlib.pyplot as plt

    regions = meta["region"].fillna("none").astype(str).to_numpy()
    order = []
    for g in sorted(set(regions)):                      # a few of every region, A first
        order += list(np.flatnonzero(regions == g)[: max(1, n // len(set(regions)))])
    order = order[:n]
    rows = -(-len(order) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        ax.imshow(images[i], interpolation="nearest")
        text = "\n".join(textwrap.wrap(str(captions[i]), 22)[:2])
        ax.set_title(f"{text}\n[{meta['label'].iloc[i]} | region {regions[i]}]", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_filter_rates(rates, before, after, title: str = "What the blocklist removes, by region"):
    """Left: the filter's flag rate per region; right: each region's share before and after filtering."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    groups = [str(g) for g in rates.index]
    x = np.arange(len(groups))
    bars = ax1.bar(x, rates["rate"].to_numpy(dtype=float), color="#c05780")
    ax1.bar_label(bars, fmt="%.3f", fontsize=8)
    ax1.set_xticks(x, groups)
    ax1.set_ylabel("share of captions flagged")
    ax1.set_title("flag rate")
    b = before.reindex(after.index.union(before.index))
    a = after.reindex(b.index)
    xs = np.arange(len(b))
    for offset, frame, label, colour in ((-0.2, b, "before filtering", "0.65"), (0.2, a, "after filtering", "tab:blue")):
        bars = ax2.bar(xs + offset, frame["share"].to_numpy(dtype=float), 0.4, label=label, color=colour)
        ax2.bar_label(bars, fmt="%.3f", fontsize=7)
    ax2.set_xticks(xs, [str(g) for g in b.index])
    ax2.set_ylabel("share of the data set")
    ax2.set_title("representation")
    ax2.legend(frameon=False, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_group_accuracy(intervals, mock_intervals=None, title: str = "Test accuracy by region, 95 % bootstrap intervals"):
    """Bars of per-group accuracy with interval whiskers (columns accuracy, low, high); optionally the mock's."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    groups = [str(g) for g in intervals.index]
    x = np.arange(len(groups))
    series = [(intervals, "trained ViT", "tab:blue")] + ([(mock_intervals, "random mock", "0.65")] if mock_intervals is not None else [])
    width = 0.8 / len(series)
    for k, (frame, label, colour) in enumerate(series):
        acc = frame["accuracy"].to_numpy(dtype=float)
        err = np.vstack([acc - frame["low"].to_numpy(dtype=float), frame["high"].to_numpy(dtype=float) - acc])
        pos = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, acc, width, yerr=err, capsize=4, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=8)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("region")
    ax.set_ylabel("accuracy")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_null_distributions(results: dict[str, dict], title: str = "Accuracy gap: observed vs. permutation null"):
    """One panel per entry of ``results`` ({name: {"observed", "null", "p_value"}}): the null histogram, the observed gap."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        ax.hist(np.asarray(r["null"], dtype=float), bins=30, color="0.7", label="gaps with shuffled regions")
        ax.axvline(float(r["observed"]), color="#c05780", lw=2, label=f"observed {float(r['observed']):.3f}")
        ax.set_title(f"{name}: p = {float(r['p_value']):.3f}")
        ax.set_xlabel("accuracy gap (max - min over regions)")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
