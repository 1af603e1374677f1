"""Support code of the Day 4 privacy lab: DP-SGD with Opacus, a federated simulation, a release table.

Students do not write this module; the lab asks them for the attack, the
averaging step of federated learning and the release checks, and calls these
helpers for everything else.

* :func:`train_private_classifier` -- the lab's MLP (:func:`rai.training.build_model`)
  trained with DP-SGD by Opacus inside an ``accelerate`` loop, in **one
  process**.  Opacus computes per-sample gradients on a ``GradSampleModule``
  and draws Poisson-sampled batches from its own data loader; accelerate's
  data-parallel wrapping (DDP, sharded loaders) would replace both, and
  multi-process DP-SGD needs Opacus's own ``DPDDP`` instead.  So the DP model
  uses ``Accelerator(cpu=...)`` in one process, and the loop is otherwise the
  same as :mod:`rai.training`'s.
* :func:`split_clients`, :func:`local_update`, :func:`run_federated` and
  :func:`run_centralized` -- a federated-averaging simulation across clients
  that live in one process (each client's training is a few epochs of plain
  PyTorch SGD; the averaging function is the student's).
* :func:`load_adult_release` -- raw Adult records (real ages, countries...)
  with a synthetic customer ID and ZIP code, the table the lab "releases".
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["PrivateRun", "train_private_classifier", "predict_proba", "split_clients", "local_update",
           "run_federated", "run_centralized", "load_adult_release"]


def predict_proba(model, X: np.ndarray) -> np.ndarray:
    """P(y = 1 | x) of a network from :func:`rai.training.build_model`, float64, shape (n,)."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(X, dtype=np.float32))).squeeze(-1)
    return torch.sigmoid(logits.double()).numpy()


@dataclass
class PrivateRun:
    """A model trained with DP-SGD and its privacy accounting.

    Attributes
    ----------
    model : torch.nn.Module
        The trained network (plain ``nn.Sequential``, on the CPU, eval mode).
    epsilon : float
        ε spent, from Opacus's accountant, at ``delta``.
    delta : float
    noise_multiplier : float
        σ that Opacus chose to spend ``target_epsilon`` in ``epochs`` epochs.
    history : list of float
        Mean training loss of each epoch.
    train_seconds : float
    """

    model: Any
    epsilon: float
    delta: float
    noise_multiplier: float
    history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def train_private_classifier(
    X: np.ndarray,
    y: np.ndarray,
    *,
    target_epsilon: float,
    delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    hidden_units: int | Sequence[int] = 64,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    cpu: bool = True,
    progress: bool = True,
) -> PrivateRun:
    """Train the lab's MLP with DP-SGD (Opacus) to spend at most ``target_epsilon``.

    ``PrivacyEngine(accountant="rdp").make_private_with_epsilon`` picks the
    noise multiplier σ for the given ε, δ, sampling rate and number of epochs;
    each step clips every per-example gradient to ``max_grad_norm`` and adds
    Gaussian noise.  ``epsilon`` in the result is what the accountant reports
    after training (``get_epsilon(delta)``), not the target.

    The optimizer is plain SGD (momentum 0.9): the usual choice with DP-SGD.
    Runs in one process (see the module docstring); ``cpu=False`` lets
    accelerate use a GPU when there is one.
    """
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from rai.training import build_model

    started = time.perf_counter()
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    try:
        accelerator = Accelerator(cpu=cpu)
        set_seed(seed)
        model = build_model(X.shape[1], hidden_units).to(accelerator.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(seed))
        with warnings.catch_warnings():
            # Opacus warns that the secure RNG is off (fine for teaching: it is seeded and
            # reproducible; production DP needs secure_mode=True) ...
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        with warnings.catch_warnings():
            # ... and about torch's full-backward-hook API; neither concerns the result.
            warnings.simplefilter("ignore")
            model, optimizer, loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader, target_epsilon=float(target_epsilon),
                target_delta=float(delta), epochs=int(epochs), max_grad_norm=float(max_grad_norm),
                noise_generator=torch.Generator().manual_seed(seed + 1))
        dp_optimizer = optimizer
        # The Poisson-sampling loader stays Opacus's own: accelerate must not re-shard it.
        model, optimizer = accelerator.prepare(model, optimizer)

        from tqdm.auto import tqdm

        history: list[float] = []
        bar = tqdm(range(int(epochs)), desc=f"DP-SGD, target ε={target_epsilon:g}", unit="epoch",
                   file=sys.stdout, disable=not progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in bar:
                model.train()
                losses = []
                for xb, yb in loader:
                    if len(xb) == 0:  # Poisson sampling can draw an empty batch
                        continue
                    xb, yb = xb.to(accelerator.device), yb.to(accelerator.device)
                    optimizer.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(model(xb).squeeze(-1), yb)
                    accelerator.backward(loss)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                history.append(float(np.mean(losses)) if losses else float("nan"))
                bar.set_postfix(loss=f"{history[-1]:.3f}", eps=f"{engine.get_epsilon(delta):.2f}")
            epsilon = float(engine.get_epsilon(delta))
        sigma = float(dp_optimizer.noise_multiplier)
        inner = accelerator.unwrap_model(model)
        inner = getattr(inner, "_module", inner)  # GradSampleModule -> the network
        plain = build_model(X.shape[1], hidden_units)
        plain.load_state_dict({k: v.detach().to("cpu") for k, v in inner.state_dict().items()})
        plain.eval()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return PrivateRun(model=plain, epsilon=epsilon, delta=float(delta), noise_multiplier=sigma,
                      history=history, train_seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- federated learning

def split_clients(y: np.ndarray, n_clients: int, alpha: float = 0.3, seed: int = 0) -> list[np.ndarray]:
    """Non-IID client shards: the row indices each client holds.

    For each label, its rows are divided among the clients in proportions drawn
    from a Dirichlet(``alpha``) distribution -- small ``alpha`` gives clients
    very different label mixes *and* sizes (the usual benchmark split).
    ``alpha=np.inf`` gives an IID split into equal parts.  Every client gets
    at least one row.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    if not np.isfinite(alpha):
        return [np.sort(part) for part in np.array_split(rng.permutation(len(y)), n_clients)]
    shards: list[list[int]] = [[] for _ in range(n_clients)]
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for k, part in enumerate(np.split(rows, cuts)):
            shards[k].extend(part.tolist())
    for k in range(n_clients):  # an empty client would have nothing to train on
        if not shards[k]:
            donor = int(np.argmax([len(s) for s in shards]))
            shards[k].append(shards[donor].pop())
    return [np.sort(np.array(s, dtype=np.int64)) for s in shards]


def _state_to_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def _load_numpy(model, state: dict[str, np.ndarray]) -> None:
    import torch

    model.load_state_dict({k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in state.items()})


def local_update(state: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, *, hidden_units, epochs: int = 1,
                 batch_size: int = 32, lr: float = 0.05, seed: int = 0) -> dict[str, np.ndarray]:
    """One client's work in a round: start from the server's weights, run SGD on its own data.

    Returns the new weights as a dict of float64 numpy arrays (what the client
    sends back to the server; its data never leave it).
    """
    import torch
    import torch.nn.functional as F

    from rai.training import build_model

    torch.manual_seed(seed)
    model = build_model(X.shape[1], hidden_units)
    _load_numpy(model, state)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    Xt, yt = torch.from_numpy(np.asarray(X, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), batch_size):
            b = order[i:i + batch_size]
            optimizer.zero_grad()
            F.binary_cross_entropy_with_logits(model(Xt[b]).squeeze(-1), yt[b]).backward()
            optimizer.step()
    return _state_to_numpy(model)


def _accuracy(state, X, y, hidden_units) -> float:
    from rai.training import build_model

    model = build_model(X.shape[1], hidden_units)
    _load_numpy(model, state)
    return float(np.mean((predict_proba(model, X) >= 0.5) == np.asarray(y)))


def run_federated(aggregate: Callable[[list, list], dict], X: np.ndarray, y: np.ndarray,
                  clients: list[np.ndarray], X_test: np.ndarray, y_test: np.ndarray, *,
                  rounds: int = 10, local_epochs: int = 1, hidden_units=32, batch_size: int = 32,
                  lr: float = 0.05, seed: int = 0, progress: bool = True) -> list[float]:
    """Federated averaging with the given ``aggregate(client_weights, client_sizes)``.

    Each round: every client runs :func:`local_update` from the current server
    weights on its own rows; the server replaces its weights by
    ``aggregate([w_1, ..., w_K], [n_1, ..., n_K])``.  Returns the test
    accuracy of the server's model after each round.
    """
    import torch
    from tqdm.auto import tqdm

    from rai.training import build_model

    torch.manual_seed(seed)
    state = _state_to_numpy(build_model(X.shape[1], hidden_units))
    sizes = [int(len(c)) for c in clients]
    history = []
    for r in tqdm(range(rounds), desc="federated rounds", unit="round", file=sys.stdout, disable=not progress):
        updates = [local_update(state, X[c], y[c], hidden_units=hidden_units, epochs=local_epochs,
                                batch_size=batch_size, lr=lr, seed=seed + 1000 * r + k)
                   for k, c in enumerate(clients)]
        state = {k: np.asarray(v, dtype=np.float64) for k, v in aggregate(updates, sizes).items()}
        history.append(_accuracy(state, X_test, y_test, hidden_units))
    return history


def run_centralized(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, rounds: int = 10,
                    hidden_units=32, batch_size: int = 32, lr: float = 0.05, seed: int = 0) -> list[float]:
    """The baseline: the same SGD on the pooled data, one epoch per "round"; test accuracy per round."""
    import torch

    from rai.training import build_model

    torch.manual_seed(seed)
    state = _state_to_numpy(build_model(X.shape[1], hidden_units))
    history = []
    for r in range(rounds):
        state = local_update(state, X, y, hidden_units=hidden_units, epochs=1, batch_size=batch_size,
                             lr=lr, seed=seed + 1000 * r)
        history.append(_accuracy(state, X_test, y_test, hidden_units))
    return history


# ---------------------------------------------------------------- the release table

def load_adult_release(n_rows: int = 2000, seed: int = 0, data_root=None) -> pd.DataFrame:
    """A table a data holder might "release": raw UCI Adult records with identifiers.

    Columns: ``customer_id`` (a synthetic 6-digit ID, the direct identifier),
    ``zip`` (a synthetic 5-digit US ZIP code, drawn from a few dozen
    neighbourhoods of three regions), then Adult's real ``age``, ``sex``,
    ``race``, ``native-country``, ``education`` and ``income``.  Adult has
    no IDs or ZIP codes; they are added so that the lab can pseudonymise and
    generalise them.  Deterministic for a given ``seed``.
    """
    from rai.data import ADULT_COLUMNS, adult_files

    frame = pd.read_csv(adult_files(data_root)[0], header=None, names=ADULT_COLUMNS, skipinitialspace=True,
                        na_values="?").dropna()
    rng = np.random.default_rng(seed)
    rows = frame.iloc[np.sort(rng.choice(len(frame), size=int(n_rows), replace=False))].reset_index(drop=True)
    prefixes = np.array(["021", "100", "606"])           # Boston, New York, Chicago
    zips = [f"{rng.choice(prefixes)}{rng.integers(0, 40):02d}" for _ in range(len(rows))]
    ids = rng.choice(1_000_000, size=len(rows), replace=False)
    return pd.DataFrame({
        "customer_id": [f"{i:06d}" for i in ids],
        "zip": zips,
        "age": rows["age"].astype(int).to_numpy(),
        "sex": rows["sex"].to_numpy(),
        "race": rows["race"].to_numpy(),
        "native-country": rows["native-country"].to_numpy(),
        "education": rows["education"].to_numpy(),
        "income": rows["income"].to_numpy(),
    })
