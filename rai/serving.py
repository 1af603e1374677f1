"""Support code for the Module 8 lab *Deployment and serving* (``m8-serving``).

Learners import these helpers; they are not asked to write them.  They are the
plumbing of a small model service, not the ideas the lab practises (the ONNX
export, the version record, the request schema, the histogram of the monitoring
endpoint and the latency statistics are the learner's):

* :func:`load_applicants` -- the real UCI Adult files as raw rows, split into
  the people the model is trained on and the people who later send requests;
* :func:`input_schema` and :class:`Preprocessor` -- what the service accepts
  (ranges, categories) and how a request becomes the model's input vector,
  with the training statistics only, as plain JSON-able data;
* :func:`to_payloads` -- raw rows as the JSON bodies a client would send;
* :func:`create_app` -- the FastAPI application: ``/health``, ``/predict``
  (one ONNX Runtime call per request, or a server-side *micro-batching*
  queue), ``/metrics`` (Prometheus text format);
* :func:`serve` -- a context manager that starts the app with uvicorn in a
  background thread on a free localhost port (bound to port 0 by the
  operating system), waits until ``/health`` answers, and *always* stops it
  and checks that the port is closed again;
* :func:`run_load` -- a bounded, closed-loop load generator (a fixed number of
  concurrent clients and of requests) run with ``httpx`` in a separate Python
  process, so that the client does not share the server's interpreter lock;
  it returns the raw per-request latencies;
* :func:`parse_metrics`, :func:`plot_load_results` -- reading the monitoring
  endpoint, and the lab's figure.

The ``/metrics`` text is written here by hand in the Prometheus exposition
format (``prometheus_client`` is not a dependency of the course); the bucket
counts come from a function the learner writes.

Run as a script (``python -m rai.serving loadgen ...``) this module is the load
generator; :func:`run_load` starts it that way.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "NUMERIC_FIELDS", "CATEGORICAL_FIELDS", "LATENCY_BUCKETS", "load_applicants", "input_schema",
    "Preprocessor", "to_payloads", "Monitor", "MicroBatcher", "create_app", "serve", "RunningServer",
    "port_is_closed", "run_load", "parse_metrics", "render_metrics", "plot_load_results", "sha256_file",
]

#: JSON field of a request -> (column of the Adult files, smallest allowed value, largest allowed value).
#: The bounds are those of the census records (ages 17-90, education levels 1-16, ...).
NUMERIC_FIELDS: dict[str, tuple[str, int, int]] = {
    "age": ("age", 17, 90),
    "education_num": ("education-num", 1, 16),
    "capital_gain": ("capital-gain", 0, 99999),
    "capital_loss": ("capital-loss", 0, 4356),
    "hours_per_week": ("hours-per-week", 1, 99),
}
#: JSON field of a request -> column of the Adult files; the allowed values are the training categories.
CATEGORICAL_FIELDS: dict[str, str] = {
    "workclass": "workclass",
    "marital_status": "marital-status",
    "occupation": "occupation",
    "relationship": "relationship",
    "native_country": "native-country",
}
#: Upper bounds (seconds) of the server-side latency histogram, as Prometheus ``le`` labels;
#: a last bucket ``+Inf`` counts every request.
LATENCY_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


# --------------------------------------------------------------------------- data

def load_applicants(n_train: int = 8000, n_requests: int = 2000, seed: int = 0,
                    data_root: str | os.PathLike | None = None):
    """Raw UCI Adult rows: ``(train, requests)``, two disjoint random samples of people.

    ``train`` (``n_train`` rows; 0: all but ``n_requests``) is what the model is
    trained on; ``requests`` (``n_requests`` rows) are people the model never
    saw, who later send their data to the service.  Both keep the original
    columns of the files and ``y`` (1 = income above $50K); renumbered 0..n-1.
    """
    from rai.monitoring import load_adult_frame

    frame = load_adult_frame(data_root)
    n_requests = int(n_requests)
    n_train = int(n_train) if n_train else len(frame) - n_requests
    if n_train < 100 or n_requests < 10 or n_train + n_requests > len(frame):
        raise ValueError(f"need 100 <= n_train, 10 <= n_requests and n_train + n_requests <= {len(frame)}; "
                         f"got {n_train} and {n_requests}")
    order = np.random.default_rng(seed).permutation(len(frame))
    train = frame.iloc[np.sort(order[:n_train])].reset_index(drop=True)
    requests = frame.iloc[np.sort(order[n_train:n_train + n_requests])].reset_index(drop=True)
    return train, requests


def input_schema(encoder) -> dict[str, Any]:
    """What the service accepts and how it encodes it, as plain (JSON-able) data.

    ``encoder`` is a fitted :class:`rai.monitoring.AdultEncoder`.  Returns
    ``{"fields": {name: {"type": "integer", "minimum": lo, "maximum": hi} or
    {"type": "string", "enum": [categories]}}, "encoding": {...}, "n_features": d}``:
    the request fields (JSON names), their ranges and the categories seen in
    training, and the statistics that turn a request into the model's input.
    """
    fields: dict[str, Any] = {}
    for name, (_, lo, hi) in NUMERIC_FIELDS.items():
        fields[name] = {"type": "integer", "minimum": lo, "maximum": hi}
    for name, column in CATEGORICAL_FIELDS.items():
        fields[name] = {"type": "string", "enum": [str(v) for v in encoder.categories_[column]]}
    columns = [column for column, _, _ in NUMERIC_FIELDS.values()]
    encoding = {
        "numeric": list(NUMERIC_FIELDS),
        "log1p": [name for name, (column, _, _) in NUMERIC_FIELDS.items() if column in ("capital-gain", "capital-loss")],
        "mean": [float(encoder.mean_[c]) for c in columns],
        "std": [float(encoder.std_[c]) for c in columns],
        "categorical": list(CATEGORICAL_FIELDS),
    }
    return {"fields": fields, "encoding": encoding, "n_features": len(encoder.feature_names_)}


class Preprocessor:
    """Request bodies (dicts with the JSON field names) -> the model's float32 input rows.

    The same encoding as :class:`rai.monitoring.AdultEncoder` (``log1p`` of the
    capital columns, standardised numbers, one-hot categories in the training
    order), in plain numpy, so a request costs microseconds, not a pandas frame.
    """

    def __init__(self, schema: dict[str, Any]):
        enc = schema["encoding"]
        self.numeric = list(enc["numeric"])
        self.log1p = np.array([name in enc["log1p"] for name in self.numeric])
        self.mean = np.asarray(enc["mean"], dtype=np.float64)
        self.std = np.asarray(enc["std"], dtype=np.float64)
        self.categorical = list(enc["categorical"])
        self.offsets: list[dict[str, int]] = []
        start = len(self.numeric)
        for name in self.categorical:
            values = schema["fields"][name]["enum"]
            self.offsets.append({v: start + i for i, v in enumerate(values)})
            start += len(values)
        self.n_features = int(schema["n_features"])
        if start != self.n_features:
            raise ValueError(f"the schema encodes {start} features, but says n_features = {self.n_features}")

    def encode(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """float32 array of shape ``(len(records), n_features)``."""
        numbers = np.array([[float(r[name]) for name in self.numeric] for r in records], dtype=np.float64)
        numbers = numbers.reshape(len(records), len(self.numeric))
        numbers[:, self.log1p] = np.log1p(numbers[:, self.log1p])
        out = np.zeros((len(records), self.n_features), dtype=np.float32)
        out[:, :len(self.numeric)] = (numbers - self.mean) / self.std
        for i, r in enumerate(records):
            for name, offsets in zip(self.categorical, self.offsets):
                j = offsets.get(str(r[name]))
                if j is not None:  # an unknown category encodes as all zeros (validation refuses it first)
                    out[i, j] = 1.0
        return out


def to_payloads(frame) -> list[dict[str, Any]]:
    """Raw Adult rows -> request bodies: one dict per row with the JSON field names, Python ints and strs."""
    payloads = []
    for row in frame.to_dict("records"):
        body: dict[str, Any] = {name: int(row[column]) for name, (column, _, _) in NUMERIC_FIELDS.items()}
        body.update({name: str(row[column]) for name, column in CATEGORICAL_FIELDS.items()})
        payloads.append(body)
    return payloads


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- monitoring

@dataclass
class Monitor:
    """What the ``/metrics`` endpoint reports: counts by status code and every request's latency.

    A production service would keep only the bucket counters (that is what a
    Prometheus client library does); the lab keeps the raw latencies too, so
    that your histogram can be checked against them.
    """

    counts: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    def observe(self, status: int, seconds: float) -> None:
        self.counts[int(status)] = self.counts.get(int(status), 0) + 1
        self.latencies_s.append(float(seconds))


class _MonitorMiddleware:
    """Pure ASGI middleware: times every request to ``path`` and records its status code.

    Validation errors (422) pass through here too: FastAPI answers them before the
    endpoint runs, but inside the application this middleware wraps.
    """

    def __init__(self, app, monitor: Monitor, path: str = "/predict"):
        self.app, self.monitor, self.path = app, monitor, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.monitor.observe(status[0], time.perf_counter() - start)


def render_metrics(monitor: Monitor, histogram_fn: Callable, bounds: Sequence[float] = LATENCY_BUCKETS,
                   batching: bool = False) -> str:
    """The Prometheus text exposition of ``monitor``.

    ``histogram_fn(latencies, bounds)`` must return the *cumulative* bucket counts
    (one per bound, then the ``+Inf`` bucket); it is the learner's function.
    """
    lines = ["# HELP predict_requests_total Requests to /predict by HTTP status code.",
             "# TYPE predict_requests_total counter"]
    for status in sorted(monitor.counts):
        lines.append(f'predict_requests_total{{status="{status}"}} {monitor.counts[status]}')
    latencies = list(monitor.latencies_s)
    buckets = histogram_fn(latencies, list(bounds))
    if len(buckets) != len(bounds) + 1:
        raise ValueError(f"histogram_fn returned {len(buckets)} counts for {len(bounds)} bounds (+Inf)")
    lines += ["# HELP predict_latency_seconds Time from request received to response sent, in the server.",
              "# TYPE predict_latency_seconds histogram"]
    for bound, count in zip([*(repr(float(b)) for b in bounds), "+Inf"], buckets):
        lines.append(f'predict_latency_seconds_bucket{{le="{bound}"}} {int(count)}')
    lines.append(f"predict_latency_seconds_sum {float(sum(latencies))!r}")
    lines.append(f"predict_latency_seconds_count {len(latencies)}")
    if batching:
        lines += ["# HELP predict_batches_total Model calls made by the micro-batcher.",
                  "# TYPE predict_batches_total counter",
                  f"predict_batches_total {len(monitor.batch_sizes)}",
                  "# HELP predict_batched_rows_total Rows sent to the model by the micro-batcher.",
                  "# TYPE predict_batched_rows_total counter",
                  f"predict_batched_rows_total {int(sum(monitor.batch_sizes))}"]
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{sample name with its labels: value}`` (comment lines skipped).

    >>> parse_metrics('# TYPE x counter\\nx{status="200"} 3\\ny 1.5\\n')
    {'x{status="200"}': 3.0, 'y': 1.5}
    """
    samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


# --------------------------------------------------------------------------- the service

class MicroBatcher:
    """Server-side micro-batching: requests wait in a queue; one model call answers a batch.

    A batch starts with the first waiting request and is sent to the model when it
    holds ``max_batch`` requests or ``max_wait_ms`` after it started, whichever
    comes first.  Runs as one task on the server's event loop.
    """

    def __init__(self, predict_rows: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float,
                 batch_sizes: list[int]):
        self.predict_rows, self.max_batch, self.max_wait = predict_rows, int(max_batch), float(max_wait_ms) / 1000
        self.batch_sizes = batch_sizes
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, row: np.ndarray) -> float:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((row, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            try:
                probabilities = self.predict_rows(np.concatenate([row for row, _ in items]))
            except Exception as error:  # answer every waiting request, never leave one hanging
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batch_sizes.append(len(items))
            for (_, future), p in zip(items, probabilities):
                if not future.done():
                    future.set_result(float(p))


def _onnx_session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # a small MLP: one thread per call is fastest, and leaves the other core to the clients
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def create_app(model_bytes: bytes, record: dict[str, Any], request_model, histogram_fn: Callable, *,
               batching: bool = False, max_batch: int = 32, max_wait_ms: float = 2.0,
               bounds: Sequence[float] = LATENCY_BUCKETS, threshold: float = 0.5):
    """The FastAPI application serving an ONNX model.

    ``record`` is the model's version record (its ``"sha256"`` must match
    ``model_bytes``: the service refuses to start otherwise, and reports the hash
    on ``/health``) and its ``"input_schema"`` tells the :class:`Preprocessor`
    how to encode a request.  ``request_model`` is the pydantic model of a request
    body: FastAPI validates every body with it and answers 422 when it fails.
    The ONNX model takes ``features`` (float32, shape ``(batch, d)``) and returns
    ``probability`` (shape ``(batch, 1)``).

    Endpoints: ``GET /health``; ``POST /predict`` -> ``{"probability", "decision",
    "model_sha256"}``; ``GET /metrics`` (Prometheus text).  ``app.state.monitor``
    holds the counts and latencies behind ``/metrics``.
    """
    from fastapi import Body, FastAPI
    from fastapi.responses import PlainTextResponse

    digest = hashlib.sha256(model_bytes).hexdigest()
    if record.get("sha256") != digest:
        raise ValueError(f"refusing to serve: the model's SHA-256 is {digest}, "
                         f"the version record says {record.get('sha256')!r}")
    session = _onnx_session(model_bytes)
    input_name = session.get_inputs()[0].name
    preprocessor = Preprocessor(record["input_schema"])
    monitor = Monitor()

    def predict_rows(rows: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: rows})[0].reshape(-1)

    batcher = MicroBatcher(predict_rows, max_batch, max_wait_ms, monitor.batch_sizes) if batching else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title="income-model", lifespan=lifespan)
    app.state.monitor = monitor
    app.add_middleware(_MonitorMiddleware, monitor=monitor, path="/predict")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_sha256": digest, "batching": batching}

    async def predict(body=Body(...)):
        row = preprocessor.encode([body.model_dump()])
        if batcher is not None:
            p = await batcher.submit(row)
        else:
            p = float(predict_rows(row)[0])
        return {"probability": p, "decision": int(p >= threshold), "model_sha256": digest}

    # the request model is only known at run time: give the endpoint its annotation here
    predict.__annotations__["body"] = request_model
    app.post("/predict")(predict)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return render_metrics(monitor, histogram_fn, bounds, batching=batching)

    return app


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing accepts connections on ``host:port`` any more."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) != 0


@dataclass
class RunningServer:
    """A server started by :func:`serve`: its ``url``, ``port``, ``app`` (and ``app.state.monitor``)."""

    url: str
    port: int
    app: Any
    startup_seconds: float = 0.0
    stopped: bool = False
    port_closed_after_stop: bool | None = None

    @property
    def monitor(self) -> Monitor:
        return self.app.state.monitor


@contextlib.contextmanager
def serve(app, *, host: str = "127.0.0.1", startup_timeout: float = 20.0,
          stop_timeout: float = 10.0) -> Iterator[RunningServer]:
    """Run ``app`` with uvicorn in a background thread for the duration of a ``with`` block.

    The listening socket is bound to port 0, so the operating system picks a free
    port (no race with another program between "find a free port" and "bind it").
    The block starts only after ``GET /health`` answered 200; on leaving it --
    normally *or by an exception* -- the server is asked to exit, its thread is
    joined, the socket closed, and ``port_closed_after_stop`` records whether the
    port refuses connections again.
    """
    import httpx
    import uvicorn

    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says it is TCP (proto 6); with proto 0 every response would wait ~40 ms
    # for the client's delayed ACK (Nagle's algorithm: uvicorn writes headers and body separately).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    errors: list[BaseException] = []

    def run():
        try:
            server.run(sockets=[sock])
        except BaseException as error:  # noqa: BLE001 -- reported to the caller below
            errors.append(error)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    running = RunningServer(url=f"http://{host}:{port}", port=port, app=app)
    started = time.perf_counter()
    thread.start()
    try:
        with httpx.Client(base_url=running.url, timeout=2.0, trust_env=False) as client:
            while True:
                if errors or not thread.is_alive():
                    raise RuntimeError(f"the server did not start: {errors[0] if errors else 'its thread ended'}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > startup_timeout:
                    raise TimeoutError(f"the server did not answer /health within {startup_timeout} s")
                time.sleep(0.02)
        running.startup_seconds = time.perf_counter() - started
        yield running
    finally:
        server.should_exit = True
        thread.join(stop_timeout)
        if thread.is_alive():  # a stuck graceful shutdown: cut the connections
            server.force_exit = True
            thread.join(stop_timeout)
        sock.close()
        running.stopped = not thread.is_alive()
        running.port_closed_after_stop = port_is_closed(port, host)


# --------------------------------------------------------------------------- load

def run_load(url: str, payloads: Sequence[dict[str, Any]], n_requests: int, concurrency: int | Sequence[int],
             timeout_s: float = 300.0, path: str = "/predict"):
    """A bounded, closed-loop load test of ``url + path`` in a separate Python process.

    ``concurrency`` clients each send one request, wait for its answer, and send
    the next, until ``n_requests`` requests have been sent in all (request ``i``
    carries ``payloads[i % len(payloads)]``); before that, each client sends one
    unmeasured warm-up request.  One ``httpx.AsyncClient`` with keep-alive
    connections; the process is killed if it runs past ``timeout_s``.

    Returns ``{"latencies_ms": float64 array (in the order the requests were
    sent), "status": int64 array, "duration_s": float (first measured request
    sent to last answer received), "concurrency": int, "n_requests": int}``.
    With a list of concurrency levels, the runs are made one after the other by
    the same process (one start-up instead of several) and a list of such dicts
    is returned.
    """
    levels = [int(concurrency)] if isinstance(concurrency, (int, np.integer)) else [int(c) for c in concurrency]
    if int(n_requests) < 1 or not levels or min(levels) < 1:
        raise ValueError("n_requests and every concurrency level must be at least 1")
    with tempfile.TemporaryDirectory(prefix="rai-load-") as tmp:
        source, target = Path(tmp) / "payloads.json", Path(tmp) / "result.json"
        source.write_text(json.dumps(list(payloads)))
        cmd = [sys.executable, "-m", "rai.serving", "loadgen", "--url", url.rstrip("/") + path,
               "--payloads", str(source), "--out", str(target), "--n-requests", str(int(n_requests)),
               "--concurrency", ",".join(map(str, levels))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        # subprocess.run kills the child if the timeout passes or this process is interrupted
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads(target.read_text())
    runs = [{"latencies_ms": np.asarray(r["latencies_ms"], dtype=np.float64),
             "status": np.asarray(r["status"], dtype=np.int64),
             "duration_s": float(r["duration_s"]), "concurrency": c, "n_requests": int(n_requests)}
            for c, r in zip(levels, results)]
    return runs[0] if isinstance(concurrency, (int, np.integer)) else runs


async def _load(url: str, payloads: list, n_requests: int, concurrency: int) -> dict[str, Any]:
    import httpx

    latencies = [0.0] * n_requests
    statuses = [0] * n_requests
    counter = iter(range(n_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # TCP_NODELAY: httpx writes the headers and the body of a request separately; with Nagle's
    # algorithm the body would wait for the server's delayed ACK (~40 ms on Linux loopback).
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(transport=transport, timeout=30.0, trust_env=False) as client:
        # one warm-up request per connection, not measured
        await asyncio.gather(*(client.post(url, json=payloads[0]) for _ in range(concurrency)))

        async def client_loop():
            for i in counter:
                body = json.dumps(payloads[i % len(payloads)])
                start = time.perf_counter()
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                latencies[i] = (time.perf_counter() - start) * 1000.0
                statuses[i] = response.status_code

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    return {"latencies_ms": latencies, "status": statuses, "duration_s": duration}


def _loadgen_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m rai.serving loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--payloads", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-requests", type=int, required=True)
    parser.add_argument("--concurrency", required=True, help="one level, or several separated by commas")
    args = parser.parse_args(argv)
    payloads = json.loads(Path(args.payloads).read_text())
    results = [asyncio.run(_load(args.url, payloads, args.n_requests, int(c))) for c in args.concurrency.split(",")]
    Path(args.out).write_text(json.dumps(results))


# --------------------------------------------------------------------------- plot

def plot_load_results(summary, runs: dict[str, dict[str, Any]] | None = None):
    """Left: p50 and p95 latency against concurrency; right: throughput against concurrency.

    ``summary`` is a DataFrame with columns ``mode``, ``concurrency``, ``p50_ms``,
    ``p95_ms``, ``throughput_rps`` (one row per load run).  Returns the Figure.
    """
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {}
    for mode, part in summary.groupby("mode", sort=False):
        part = part.sort_values("concurrency")
        line, = ax_lat.plot(part["concurrency"], part["p50_ms"], "o-", label=f"{mode}: p50")
        colors[mode] = line.get_color()
        ax_lat.plot(part["concurrency"], part["p95_ms"], "s--", color=line.get_color(), label=f"{mode}: p95")
        ax_tp.plot(part["concurrency"], part["throughput_rps"], "o-", color=line.get_color(), label=mode)
    for ax in (ax_lat, ax_tp):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
    ax_lat.set_ylabel("latency seen by the client (ms)")
    ax_lat.set_title("Latency: median (p50) and tail (p95)")
    ax_tp.set_ylabel("requests per second")
    ax_tp.set_title("Throughput")
    ax_tp.set_ylim(bottom=0)
    ax_lat.legend(fontsize=8)
    ax_tp.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "loadgen":
        sys.exit("usage: python -m rai.serving loadgen --url URL --payloads FILE --out FILE "
                 "--n-requests N --concurrency C[,C...]")
    _loadgen_main(sys.argv[2:])
