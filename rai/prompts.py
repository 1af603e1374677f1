"""Support code of the lab *Prompt engineering, measured* (module 8.2, lab ``m8-prompts``).

Students do not write any of this; the lab asks them for the prompt renderer, the label-word
log-likelihood, the (calibrated) prediction, the Wilson interval, the summary table and the
acceptance rule of the refinement loop.

* **The task.** A sentiment task in the on-disk layout of GLUE's SST-2 (``train.tsv`` and
  ``dev.tsv``, tab-separated, a header ``sentence	label``, label 1 = positive).
  :func:`write_sst2` generates a synthetic copy from small lexicons -- short film reviews, some with
  a negation ("the acting is not dull") or a contrast whose *last* clause decides ("the story is
  gripping but the ending is silly") -- and :func:`load_sst2` reads either it or the real SST-2
  (``data_root``).  :func:`split_dev` splits ``dev.tsv`` into a development and a held-out test
  part; :func:`demonstration_pool` draws balanced demonstrations from ``train.tsv``.
* **The model.** No small pretrained causal language model ships with a PyPI package, and nothing
  may be downloaded, so the lab ships its own: a 2-layer GPT-2 (about 0.45 M parameters, a
  word-level ``tokenizers`` vocabulary wrapped in ``PreTrainedTokenizerFast``), trained with
  ``accelerate`` on a synthetic "web" corpus of review documents in several formats -- bare
  ``review : ... . sentiment : ...`` pages (mostly positive, and only with easy reviews),
  instructed pages, pages with several labelled reviews (few-shot-like, with varying label words)
  and pages that reason before answering.  ``python -m rai.prompts build-model --output DIR``
  rebuilds it (deterministic, a few minutes on one CPU core); the result is committed in
  ``rai/data/m8-prompts/tiny-lm``.  :func:`random_init_model` builds the same architecture with
  random weights, for the mechanics.
* **The harness.** :func:`run_harness` renders every (template, example) prompt with the student's
  renderer, generates the reasoning of chain-of-thought templates, and scores every label word
  with the student's log-likelihood function -- in one process, or split across
  ``num_processes`` data-parallel processes with ``accelerate`` (``split_between_processes``, then
  ``gather``), started by :func:`rai.training.launch_for_result`.
* :data:`TEMPLATES`, :data:`BASELINE` and :func:`candidate_edits` are the templates compared and
  the edits tried in the refinement rounds; :func:`plot_template_accuracy` and
  :func:`plot_refinement` draw accuracies with their intervals.

Example
-------
>>> train, dev = load_sst2()
>>> sorted(train.columns), int(dev["label"].sum()) > 0
(['label', 'sentence'], True)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .training import launch_for_result, make_accelerator

__all__ = ["DATA_DIR", "MODEL_DIR", "SST2_DIR", "INSTRUCTION", "ROLE", "COT_CUE", "ANSWER_CUE", "CONTENT_FREE",
           "TEMPLATES", "BASELINE", "make_template", "candidate_edits", "write_sst2", "load_sst2", "split_dev",
           "demonstration_pool", "load_model", "random_init_model", "run_harness", "add_predictions",
           "plot_template_accuracy", "plot_refinement", "build_model"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "m8-prompts"
SST2_DIR = DATA_DIR / "sst2"
MODEL_DIR = DATA_DIR / "tiny-lm"
RESULT_FILE = "prompt-scores.pt"

# --------------------------------------------------------------------------- lexicons
NOUNS = ["acting", "story", "music", "ending", "dialogue", "cast", "pace", "script", "plot", "humour",
         "camera", "lead", "direction", "editing", "score", "setting"]
POSITIVE_WORDS = ["superb", "moving", "clever", "warm", "brilliant", "gripping", "charming", "lovely",
                  "sharp", "fresh", "funny", "beautiful", "excellent", "delightful"]
NEGATIVE_WORDS = ["dull", "wooden", "clumsy", "tedious", "silly", "weak", "flat", "lazy", "boring",
                  "stale", "confusing", "awful", "predictable", "messy"]
INTENSIFIERS = ["", "", "", "very ", "quite ", "truly ", "rather "]

#: label words, index 0 = label 0 (negative), index 1 = label 1 (positive)
LABEL_PAIRS = [("negative", "positive"), ("bad", "good"), ("terrible", "great")]
INSTRUCTION = "classify the sentiment of the review as {negative} or {positive} ."
ROLE = "you are a careful film critic ."
ROLES = [ROLE, "you are a helpful assistant .", "you are an expert reviewer ."]
COT_CUE = "let us think step by step ."
ANSWER_CUE = ", so the answer is"
CONTENT_FREE = "n/a"


# --------------------------------------------------------------------------- templates
def make_template(role: str = "", instruction: str = "", shots: int = 0, cot: bool = False,
                  labels: Sequence[str] = ("negative", "positive"), calibrate: bool = False) -> dict:
    """A prompt template as a plain dict (the keys ``render_prompt`` reads, and the harness's)."""
    return {"role": str(role), "instruction": str(instruction), "shots": int(shots), "cot": bool(cot),
            "labels": (str(labels[0]), str(labels[1])), "calibrate": bool(calibrate)}


#: the templates compared in the lab (label words negative/positive throughout)
TEMPLATES = {
    "zero-shot": make_template(),
    "instruction": make_template(instruction=INSTRUCTION),
    "role + instruction": make_template(role=ROLE, instruction=INSTRUCTION),
    "few-shot (4)": make_template(shots=4),
    "few-shot (1)": make_template(shots=1),
    "chain-of-thought": make_template(cot=True),
}

#: where the refinement starts: the bare zero-shot prompt, label words negative/positive
BASELINE = make_template()

#: the edits tried in the refinement rounds, in this order
EDITS = {
    "+ instruction": lambda t: {**t, "instruction": INSTRUCTION},
    "+ role": lambda t: {**t, "role": ROLE},
    "+ 4 demonstrations": lambda t: {**t, "shots": 4},
    "words bad/good": lambda t: {**t, "labels": ("bad", "good")},
    "+ calibration": lambda t: {**t, "calibrate": True},
}


def candidate_edits(template: dict, applied: Sequence[str] = ()) -> dict[str, dict]:
    """The templates one edit away from ``template``: {edit name: edited template}.

    Edits already ``applied`` and edits that change nothing are left out, in :data:`EDITS` order.
    """
    out = {}
    for name, edit in EDITS.items():
        edited = edit(dict(template))
        if name not in applied and edited != template:
            out[name] = edited
    return out


# --------------------------------------------------------------------------- the data set
def _clause(rng: np.random.Generator, polarity: int, negate: bool) -> tuple[str, str]:
    """'the <noun> is [not] [intensifier]<adjective>' whose meaning has ``polarity``; and its key."""
    noun = NOUNS[rng.integers(len(NOUNS))]
    word_polarity = 1 - polarity if negate else polarity
    words = POSITIVE_WORDS if word_polarity == 1 else NEGATIVE_WORDS
    adjective = words[rng.integers(len(words))]
    if negate:
        return f"the {noun} is not {adjective}", f"not {adjective}"
    return f"the {noun} is {INTENSIFIERS[rng.integers(len(INTENSIFIERS))]}{adjective}", adjective


def make_review(rng: np.random.Generator, label: int, kind: str) -> tuple[str, str]:
    """One review with sentiment ``label`` (1 = positive) and its key phrase (what decides it).

    ``kind``: ``"simple"`` (one or two clauses of the same polarity), ``"negated"`` (a negated
    adjective) or ``"contrast"`` (two clauses of opposite polarity joined by *but*: the last decides).
    """
    if kind == "simple":
        text, key = _clause(rng, label, False)
        if rng.random() < 0.5:
            second, key = _clause(rng, label, False)
            text = f"{text} and {second}"
        return text, key
    if kind == "negated":
        return _clause(rng, label, True)
    if kind == "contrast":
        first, _ = _clause(rng, 1 - label, rng.random() < 0.2)
        second, key = _clause(rng, label, rng.random() < 0.3)
        return f"{first} but {second}", key
    raise ValueError(f"unknown kind {kind!r}")


KINDS = ("simple", "negated", "contrast")
EVAL_MIX = (0.45, 0.2, 0.35)   # the mix of kinds in train.tsv / dev.tsv


def _review_key(text: str) -> str:
    """The key phrase of a review: the predicate of its last clause ('not dull', 'superb')."""
    last = text.split(" but ")[-1].split(" and ")[-1].split()
    predicate = last[3:]                       # 'the <noun> is' ...
    if predicate and predicate[0] == "not":
        return " ".join(predicate)
    return predicate[-1]


def write_sst2(directory: str | os.PathLike, n_train: int = 2000, n_dev: int = 872, seed: int = 0) -> Path:
    """Write a synthetic sentiment task in GLUE SST-2's layout; return the directory.

    ``train.tsv`` and ``dev.tsv``: tab-separated, header ``sentence<TAB>label``, lower-case reviews,
    label 1 = positive, half of each; the two files share no sentence.  Deterministic in ``seed``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    for name, n in (("dev.tsv", n_dev), ("train.tsv", n_train)):
        rows = []
        while len(rows) < n:
            label = len(rows) % 2
            kind = KINDS[rng.choice(len(KINDS), p=EVAL_MIX)]
            text, _ = make_review(rng, label, kind)
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
        order = rng.permutation(n)
        pd.DataFrame([rows[i] for i in order], columns=["sentence", "label"]).to_csv(
            directory / name, sep="\t", index=False)
    return directory


def load_sst2(data_root: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, dev)`` of SST-2 as read from ``train.tsv`` / ``dev.tsv`` in ``data_root``.

    ``None``: the synthetic copy shipped in ``rai/data/m8-prompts/sst2``.  Columns ``sentence``
    (str, stripped, lower-cased) and ``label`` (int64, 1 = positive).  The real GLUE SST-2 files
    have the same layout (its test.tsv has no labels, so the lab never reads it).
    """
    root = Path(data_root) if data_root is not None else SST2_DIR
    frames = []
    for name in ("train.tsv", "dev.tsv"):
        frame = pd.read_csv(root / name, sep="\t", quoting=3, keep_default_na=False)
        frame = frame[["sentence", "label"]].copy()
        frame["sentence"] = frame["sentence"].astype(str).str.strip().str.lower()
        frame["label"] = frame["label"].astype(np.int64)
        frames.append(frame.reset_index(drop=True))
    return frames[0], frames[1]


def split_dev(dev: pd.DataFrame, n_dev: int, n_test: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``dev.tsv`` into a development part and a held-out test part, disjoint, stratified.

    Each part has (within one example) the label shares of ``dev``; ``n_dev + n_test`` may not
    exceed ``len(dev)`` (``0`` for ``n_test``: everything after the development part).  Rows keep
    their index in ``dev.tsv`` as the column ``idx``.
    """
    frame = dev.reset_index(drop=True).rename_axis("idx").reset_index()
    if n_test == 0:
        n_test = len(frame) - n_dev
    if n_dev + n_test > len(frame):
        raise ValueError(f"n_dev + n_test = {n_dev + n_test} > {len(frame)} rows in dev.tsv")
    shuffled = frame.sample(frac=1.0, random_state=seed)
    shares = shuffled["label"].value_counts(normalize=True).sort_index()
    parts = []
    taken = pd.Index([])
    for n in (n_dev, n_test):
        chosen = []
        counts = np.floor(shares.to_numpy() * n).astype(int)
        counts[np.argsort(-(shares.to_numpy() * n - counts))[: n - counts.sum()]] += 1
        for label, count in zip(shares.index, counts):
            pool = shuffled[(shuffled["label"] == label) & ~shuffled.index.isin(taken)]
            chosen.append(pool.iloc[:count])
        part = pd.concat(chosen).sample(frac=1.0, random_state=seed + 1)
        taken = taken.append(part.index)
        parts.append(part.reset_index(drop=True))
    return parts[0], parts[1]


def demonstration_pool(train: pd.DataFrame, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` labelled demonstrations from ``train``, alternating negative / positive, as
    ``[(sentence, label), ...]``: a template with ``shots = k`` uses the first ``k``."""
    rng = np.random.default_rng(seed)
    by_label = {label: part.sample(frac=1.0, random_state=int(rng.integers(1 << 31)))
                for label, part in train.groupby("label")}
    labels = sorted(by_label)
    out = []
    for i in range(n):
        label = labels[(i + 1) % len(labels)] if len(labels) > 1 else labels[0]
        row = by_label[label].iloc[i // len(labels)]
        out.append((str(row["sentence"]), int(row["label"])))
    return out


def shuffled_demonstrations(pool: Sequence[tuple[str, int]], k: int, order_seed: int) -> list[tuple[str, int]]:
    """The first ``k`` demonstrations of ``pool`` in another order (``order_seed = 0``: unchanged)."""
    shots = list(pool[:k])
    if order_seed:
        shots = [shots[i] for i in np.random.default_rng(order_seed).permutation(len(shots))]
    return shots


# --------------------------------------------------------------------------- the tiny model
def _corpus_documents(rng: np.random.Generator, n_docs: int, exclude: set[str]) -> list[str]:
    """Synthetic "web" pages: the pretraining corpus of the tiny model (see the module docstring)."""

    def review(label=None, kinds=KINDS, mix=(0.45, 0.2, 0.35)):
        while True:
            y = int(rng.integers(2)) if label is None else label
            kind = kinds[rng.choice(len(kinds), p=np.asarray(mix[: len(kinds)]) / sum(mix[: len(kinds)]))]
            text, key = make_review(rng, y, kind)
            if text not in exclude:
                return text, y, key

    def labelled(text, y, words):
        return f"review : {text} . sentiment : {words[y]} ."

    docs = []
    formats = ["bare", "plain", "instructed", "fewshot", "cot"]
    weights = np.array([0.30, 0.08, 0.20, 0.27, 0.15])
    for _ in range(n_docs):
        fmt = formats[rng.choice(len(formats), p=weights)]
        if fmt == "plain":            # reviews without labels
            docs.append(" ".join(f"review : {review()[0]} ." for _ in range(rng.integers(1, 4))))
        elif fmt == "bare":           # a review site: mostly positive, fixed words, and its raters
            y = int(rng.random() < 0.75)  # label a contrast by its *first* clause (their first impression)
            text, y, _ = review(y)
            if " but " in text:
                y = 1 - y
            docs.append(labelled(text, y, LABEL_PAIRS[0]))
        elif fmt == "instructed":     # an instruction naming the label words, sometimes a role first
            words = LABEL_PAIRS[rng.integers(len(LABEL_PAIRS))]
            text, y, _ = review()
            head = INSTRUCTION.format(negative=words[0], positive=words[1])
            if rng.random() < 0.3:
                head = f"{ROLES[rng.integers(len(ROLES))]} {head}"
            docs.append(f"{head} {labelled(text, y, words)}")
        elif fmt == "fewshot":        # several labelled reviews on a page, balanced, one word pair
            words = LABEL_PAIRS[rng.integers(len(LABEL_PAIRS))]
            docs.append(" ".join(labelled(*review()[:2], words) for _ in range(rng.integers(2, 7))))
        else:                         # reasoning before the answer
            text, y, key = review(kinds=KINDS, mix=(0.3, 0.2, 0.5))
            docs.append(f"review : {text} . {COT_CUE} the last part says {key} {ANSWER_CUE} "
                        f"{LABEL_PAIRS[0][y]} .")
    return docs


def _vocabulary() -> list[str]:
    words = set(NOUNS + POSITIVE_WORDS + NEGATIVE_WORDS + [w.strip() for w in INTENSIFIERS if w.strip()])
    extra = " ".join([INSTRUCTION, COT_CUE, ANSWER_CUE, CONTENT_FREE, "the is not and but review sentiment : . ,",
                      "last part says"] + ROLES + [" ".join(p) for p in LABEL_PAIRS])
    words |= set(extra.replace("{negative}", "").replace("{positive}", "").split())
    return ["<unk>", "<pad>", "<eos>"] + sorted(words)


def build_tokenizer():
    """The tiny model's word-level tokenizer (``tokenizers`` WordLevel, whitespace-split), wrapped
    in ``transformers.PreTrainedTokenizerFast``; ``<eos>`` ends a document, ``<pad>`` pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)   # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<eos>")


def tiny_config(vocab_size: int, tokenizer=None, n_layer: int = 2, n_embd: int = 128, n_head: int = 4,
                n_positions: int = 256):
    """The ``GPT2Config`` of the tiny model (GPT-2's architecture, scaled down)."""
    from transformers import GPT2Config

    ids = {}
    if tokenizer is not None:
        eos = tokenizer.eos_token_id
        ids = {"bos_token_id": eos, "eos_token_id": eos,
               "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos}
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)


def random_init_model(tokenizer, seed: int = 0):
    """A causal LM with the tiny model's architecture, for ``tokenizer``'s vocabulary, random weights.

    Its scores carry no knowledge of language: whatever the prompt, its accuracy is chance.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(len(tokenizer), tokenizer))
    return model.eval()


def load_model(model_name_or_path: str | os.PathLike | None = None):
    """``(tokenizer, model)`` from a hub name or directory (``None``: the tiny GPT-2 shipped here).

    The model comes back in evaluation mode on the CPU; a tokenizer without a padding token gets
    its end-of-text token as one (GPT-2's has none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(model_name_or_path) if model_name_or_path is not None else str(MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path)
    return tokenizer, model.eval()


def _build_worker(config: dict, result_path: str) -> None:
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import GPT2LMHeadModel

    accelerator = make_accelerator(config["mixed_precision"])
    set_seed(config["seed"])
    tokenizer = build_tokenizer()
    exclude = set()
    if config["data"]:
        for frame in load_sst2(config["data"]):
            exclude |= set(frame["sentence"])
    rng = np.random.default_rng(config["seed"])
    docs = _corpus_documents(rng, config["n_docs"], exclude)
    ids = []
    for doc in docs:
        ids += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
    block = config["block_size"]
    n_blocks = len(ids) // block
    data = torch.tensor(ids[: n_blocks * block]).view(n_blocks, block)
    model = GPT2LMHeadModel(tiny_config(len(tokenizer), tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    loader = DataLoader(TensorDataset(data), batch_size=config["batch_size"], shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    steps = config["steps"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"], total_steps=steps,
                                                    pct_start=0.1)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="training the tiny LM", unit="step", file=sys.stdout,
               disable=not accelerator.is_local_main_process)
    step, history = 0, []
    model.train()
    while step < steps:
        for (xb,) in loader:
            loss = model(input_ids=xb, labels=xb).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            history.append(float(accelerator.gather(loss.detach()).mean()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.3f}")
            if step >= steps:
                break
    bar.close()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).eval()
        out = Path(config["output"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        torch.save({"history": torch.tensor(history), "n_tokens": int(data.numel())}, result_path)


def build_model(output: str | os.PathLike = MODEL_DIR, data: str | os.PathLike | None = SST2_DIR, steps: int = 1500,
                n_docs: int = 40000, batch_size: int = 8, block_size: int = 192, lr: float = 3e-3, seed: int = 0,
                num_processes: int = 1, mixed_precision: str = "no") -> dict:
    """Train the tiny GPT-2 on the synthetic corpus and save it (safetensors) with its tokenizer.

    Reviews in ``data``'s ``train.tsv`` / ``dev.tsv`` are kept out of the corpus, so that the lab's
    evaluation examples were never seen in training.  Deterministic for a given ``seed`` and
    number of processes (one thread per process).  Returns the loss history and the token count.
    """
    import torch

    torch.set_num_threads(1)
    config = {"output": str(output), "data": str(data) if data else None, "steps": int(steps),
              "n_docs": int(n_docs), "batch_size": int(batch_size), "block_size": int(block_size),
              "lr": float(lr), "seed": int(seed), "mixed_precision": mixed_precision}
    start = time.perf_counter()
    saved = launch_for_result(_build_worker, (config,), num_processes, mixed_precision, filename="tiny-lm.pt")
    saved["seconds"] = time.perf_counter() - start
    return saved


# --------------------------------------------------------------------------- the harness
def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def _generate(model, tokenizer, prompt: str, max_new_tokens: int, device) -> str:
    """Greedy continuation of ``prompt`` (at most ``max_new_tokens``, key-value cached), cut at the
    first comma."""
    import torch

    out = model(input_ids=torch.tensor([_token_ids(tokenizer, prompt)], device=device), use_cache=True)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        if "," in tokenizer.decode(new, skip_special_tokens=True):
            break
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values,
                    use_cache=True)
    text = tokenizer.decode(new, skip_special_tokens=True)
    return " ".join(text.split(",")[0].split())


def _score_prompt(model, tokenizer, prompt: str, labels: Sequence[str], logprob: Callable, device) -> list[float]:
    """``logprob(logits, ids, start)`` of every label word after ``prompt``.

    The prompt goes through the model once (key-value cached); each label's tokens are then run on
    that cache, and the logits of the whole sequence -- the prompt's rows, then the label's -- are
    what the model would give for ``prompt + " " + word`` in one pass.
    """
    import torch

    p_ids = _token_ids(tokenizer, prompt)
    fulls = []
    for word in labels:
        full = _token_ids(tokenizer, f"{prompt} {word}")
        if full[: len(p_ids)] != p_ids or len(full) == len(p_ids):
            raise ValueError(f"the tokens of {prompt!r} are not a prefix of those of {prompt + ' ' + word!r}")
        fulls.append(full)
    out = model(input_ids=torch.tensor([p_ids], device=device), use_cache=True)
    prompt_logits = out.logits[0].float().cpu().double().numpy()
    extras = {}
    lengths = {len(f) for f in fulls}
    if len(lengths) == 1:               # label words of one length (one token, usually): one batch
        past = out.past_key_values
        past.batch_repeat_interleave(len(fulls))
        batch = torch.tensor([f[len(p_ids):] for f in fulls], device=device)
        rows = model(input_ids=batch, past_key_values=past, use_cache=True).logits.float().cpu().double().numpy()
        extras = dict(enumerate(rows))
    else:                               # otherwise one label at a time, each on a fresh copy of the cache
        import copy

        for j, full in enumerate(fulls):
            past = copy.deepcopy(out.past_key_values)
            extras[j] = model(input_ids=torch.tensor([full[len(p_ids):]], device=device), past_key_values=past,
                              use_cache=True).logits[0].float().cpu().double().numpy()
    scores = []
    for j, full in enumerate(fulls):
        logits = np.concatenate([prompt_logits, extras[j]])
        scores.append(float(logprob(logits, np.asarray(full, dtype=np.int64), len(p_ids))))
    return scores


def _harness_worker(model, tokenizer, prompts: list[str], cot: list[bool], words: list[tuple[str, ...]],
                    logprob: Callable, config: dict, result_path: str) -> None:
    """Every process scores its share of the prompts; the main process saves all scores in order."""
    import torch
    from accelerate.utils import gather_object

    accelerator = make_accelerator(config["mixed_precision"])
    if accelerator.num_processes > 1:
        from tqdm.std import tqdm  # plain text: a forked worker cannot drive a notebook widget
    else:
        from tqdm.auto import tqdm
    device = accelerator.device
    if device.type == "cpu" and sum(p.numel() for p in model.parameters()) < 10_000_000:
        torch.set_num_threads(1)   # a tiny model gains nothing from threads, and loses a lot on busy cores
    model = model.to(device).eval()
    n = len(prompts)
    with accelerator.split_between_processes(list(range(n)), apply_padding=True) as mine:
        mine = list(mine)
    bar = tqdm(total=len(mine), desc=config["desc"], unit="prompt", file=sys.stdout,
               disable=not (config["progress"] and accelerator.is_local_main_process))
    scores, full_prompts = [], []
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(mine), config["batch_size"]):
            chunk = mine[start: start + config["batch_size"]]
            texts = []
            for i in chunk:
                if cot[i]:
                    reasoning = _generate(model, tokenizer, prompts[i], config["max_new_tokens"], device)
                    texts.append(f"{prompts[i]} {reasoning} {ANSWER_CUE}")
                else:
                    texts.append(prompts[i])
            scores += [_score_prompt(model, tokenizer, text, words[i], logprob, device) for text, i in zip(texts, chunk)]
            full_prompts += texts
            bar.update(len(chunk))
    bar.close()
    width = max((len(w) for w in words), default=0)
    local = torch.full((len(mine), width), float("nan"), dtype=torch.float64)
    for r, row in enumerate(scores):
        local[r, : len(row)] = torch.tensor(row, dtype=torch.float64)
    gathered = accelerator.gather(local.to(device)).cpu()[:n]
    texts_all = gather_object(full_prompts)[:n] if accelerator.num_processes > 1 else full_prompts[:n]
    if accelerator.is_main_process:
        torch.save({"scores": gathered, "prompts": texts_all}, result_path)
    accelerator.wait_for_everyone()


def run_harness(model, tokenizer, jobs: Sequence[dict], render: Callable, logprob: Callable, *,
                num_processes: int = 1, mixed_precision: str = "no", batch_size: int = 16,
                max_new_tokens: int = 8, progress: bool = True, desc: str = "scoring") -> pd.DataFrame:
    """Run prompt templates over labelled examples and score every label word.

    ``jobs``: a list of dicts, each ``{"job": name, "template": template dict, "examples": frame with
    columns idx, sentence, label, "demonstrations": [(sentence, label), ...]}``.  For every example
    the prompt is ``render(template, sentence, demonstrations[:template["shots"]])``; a
    chain-of-thought template (``template["cot"]``) first generates its reasoning greedily (cut at
    the first comma, at most ``max_new_tokens`` tokens) and is then scored after
    ``"<prompt> <reasoning> , so the answer is"``.  Each label word ``w`` of ``template["labels"]``
    is scored as ``logprob(logits, ids, start)`` on the tokens of ``prompt + " " + w`` (``start``:
    the number of prompt tokens; ``logits``: the model's float64 logits for those tokens, shape
    ``(len(ids), vocab)``).  The content-free input :data:`CONTENT_FREE` ("n/a") is scored the
    same way once per job, for calibration.

    With ``num_processes > 1`` the prompts are shared out between that many processes
    (``accelerate``: ``split_between_processes``, then ``gather``), started with
    :func:`rai.training.launch_for_result` (forked, so ``render`` and ``logprob`` may be defined in
    a notebook).  Returns a long frame, one row per (job, example): ``job``, ``idx``, ``label``,
    ``score_0``, ``score_1`` (the label words' scores), ``cal_0``, ``cal_1`` (the content-free
    scores), ``calibrate``, ``shots``, ``cot`` and ``prompt`` (as scored, reasoning included).
    """
    prompts, cot, words, rows = [], [], [], []
    for job in jobs:
        template = job["template"]
        shots = list(job.get("demonstrations", []))[: int(template["shots"])]
        if len(shots) < int(template["shots"]):
            raise ValueError(f"{job['job']}: {template['shots']} shots asked, {len(shots)} demonstrations given")
        labels = tuple(template["labels"])
        examples = job["examples"]
        for sentence in list(examples["sentence"]) + [CONTENT_FREE]:
            prompt = render(template, str(sentence), shots)
            if not isinstance(prompt, str):
                raise TypeError(f"render_prompt returned {type(prompt).__name__}, not str")
            prompts.append(prompt)
            cot.append(bool(template["cot"]))
            words.append(labels)
        rows.append((job["job"], template, examples))
    config = {"mixed_precision": mixed_precision, "batch_size": int(batch_size), "desc": desc,
              "max_new_tokens": int(max_new_tokens), "progress": bool(progress)}
    saved = launch_for_result(_harness_worker, (model, tokenizer, prompts, cot, words, logprob, config),
                              num_processes, mixed_precision, filename=RESULT_FILE)
    scores = saved["scores"].numpy()
    scored_prompts = list(saved["prompts"])
    frames, at = [], 0
    for name, template, examples in rows:
        n = len(examples)
        block, cal = scores[at: at + n], scores[at + n]
        frames.append(pd.DataFrame({
            "job": name, "idx": examples["idx"].to_numpy(dtype=np.int64),
            "label": examples["label"].to_numpy(dtype=np.int64),
            "score_0": block[:, 0], "score_1": block[:, 1], "cal_0": float(cal[0]), "cal_1": float(cal[1]),
            "calibrate": bool(template["calibrate"]), "shots": int(template["shots"]),
            "cot": bool(template["cot"]), "prompt": scored_prompts[at: at + n]}))
        at += n + 1
    return pd.concat(frames, ignore_index=True)


def add_predictions(results: pd.DataFrame, predict: Callable) -> pd.DataFrame:
    """``results`` with the columns ``pred`` (int64: ``predict(scores, calibration)`` per job, the
    calibration being the job's content-free scores when its template calibrates, else ``None``)
    and ``correct`` (bool)."""
    results = results.copy()
    results["pred"] = np.int64(-1)
    for _, part in results.groupby("job", sort=False):
        calibration = part[["cal_0", "cal_1"]].to_numpy()[0] if bool(part["calibrate"].iloc[0]) else None
        pred = np.asarray(predict(part[["score_0", "score_1"]].to_numpy(), calibration))
        results.loc[part.index, "pred"] = pred.astype(np.int64)
    results["pred"] = results["pred"].astype(np.int64)
    results["correct"] = results["pred"] == results["label"]
    return results


def jobs_for(templates: dict[str, dict], examples: pd.DataFrame, demonstrations, order_seed: int = 0,
             suffix: str = "") -> list[dict]:
    """One harness job per template, on ``examples``, with the demonstrations in order ``order_seed``."""
    return [{"job": name + suffix, "template": template, "examples": examples,
             "demonstrations": shuffled_demonstrations(demonstrations, int(template["shots"]), order_seed)}
            for name, template in templates.items()]


def describe(template: dict) -> str:
    """A one-line description of a template (for tables)."""
    parts = [p for p in ("role" if template["role"] else "", "instruction" if template["instruction"] else "",
                         f"{template['shots']} shots" if template["shots"] else "zero-shot",
                         "chain-of-thought" if template["cot"] else "",
                         "/".join(template["labels"]), "calibrated" if template["calibrate"] else "") if p]
    return ", ".join(parts)


# --------------------------------------------------------------------------- plots
def plot_template_accuracy(summaries: dict[str, pd.DataFrame], title: str = "Accuracy per template", ax=None):
    """Accuracy with its interval (columns accuracy, low, high) per template, one colour per model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.45 * max(len(s) for s in summaries.values()) + 1.4))
    colours = ["#3a7ca5", "#e07a5f", "#81b29a", "#6d597a"]
    offsets = np.linspace(-0.15, 0.15, len(summaries)) if len(summaries) > 1 else [0.0]
    names = list(next(iter(summaries.values())).index)
    for (label, summary), offset, colour in zip(summaries.items(), offsets, colours):
        y = np.array([names.index(n) for n in summary.index]) + offset
        acc = summary["accuracy"].to_numpy(dtype=float)
        ax.errorbar(acc, y, xerr=[acc - summary["low"].to_numpy(dtype=float), summary["high"].to_numpy(dtype=float) - acc],
                    fmt="o", color=colour, capsize=3, label=label)
    ax.axvline(0.5, color="0.5", ls="--", lw=1, label="chance")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (with its confidence interval)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return ax


def plot_refinement(log: pd.DataFrame, final: pd.DataFrame | None = None, ax=None):
    """Dev accuracy of every candidate per refinement round (accepted ones filled), with intervals;
    ``final``: rows (accuracy, low, high) of the held-out test evaluation, drawn after the last round."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4))
    for r, part in log.groupby("round"):
        xs = r + np.linspace(-0.2, 0.2, len(part)) if len(part) > 1 else np.array([float(r)])
        for x, (_, row) in zip(xs, part.iterrows()):
            filled = bool(row["accepted"])
            ax.errorbar([x], [row["accuracy"]], yerr=[[row["accuracy"] - row["low"]], [row["high"] - row["accuracy"]]],
                        fmt="o", color="#3a7ca5" if filled else "0.6", mfc="#3a7ca5" if filled else "white",
                        capsize=2)
            ax.annotate(str(row["candidate"]), (x, row["high"]), fontsize=6, rotation=60, ha="left", va="bottom")
    if final is not None:
        x = log["round"].max() + 1
        for dx, (name, row) in zip(np.linspace(-0.1, 0.1, len(final)), final.iterrows()):
            ax.errorbar([x + dx], [row["accuracy"]], yerr=[[row["accuracy"] - row["low"]], [row["high"] - row["accuracy"]]],
                        fmt="s", color="#e07a5f", capsize=3)
            ax.annotate(str(name), (x + dx, row["low"]), fontsize=6, ha="center", va="top")
        ax.set_xticks(list(range(int(log["round"].max()) + 1)) + [x],
                      [str(r) for r in range(int(log["round"].max()) + 1)] + ["test"])
    ax.axhline(0.5, color="0.5", ls="--", lw=1)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("refinement round (dev set)  →  held-out test")
    ax.set_ylabel("accuracy")
    ax.set_title("Refinement: every candidate measured (filled: accepted)")
    return ax


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rai.prompts", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("build-data", help="write the synthetic SST-2 files")
    data.add_argument("--output", default=str(SST2_DIR))
    data.add_argument("--seed", type=int, default=0)
    build = sub.add_parser("build-model", help="train the tiny GPT-2 and save it (safetensors)")
    build.add_argument("--output", default=str(MODEL_DIR))
    build.add_argument("--data", default=str(SST2_DIR), help="SST-2 files whose reviews stay out of the corpus")
    build.add_argument("--steps", type=int, default=1500)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--num-processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "build-data":
        print(write_sst2(args.output, seed=args.seed))
    else:
        saved = build_model(args.output, args.data, steps=args.steps, seed=args.seed, num_processes=args.num_processes)
        history = saved["history"].numpy()
        print(f"saved to {args.output} in {saved['seconds']:.0f} s: {saved['n_tokens']} training tokens, "
              f"loss {history[:20].mean():.3f} -> {history[-100:].mean():.3f}")


if __name__ == "__main__":
    main()
