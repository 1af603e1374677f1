"""Trusted checks: a test cell's verdict is reached outside the student's kernel.

In nbgrader (and most graders) a test cell runs in the student's own Python
process, so the student can make it pass without answering: patch builtins or
numpy, rebind ``AssertionError``, install an input transformer that blanks
later cells, return objects whose ``==`` is always true.  Here, when a lab is
graded, test cells never run in the student's kernel.  Instead:

1. The test cell's source (hidden tests included: they never enter the
   student's kernel) runs in the *grading worker*, a process the student's code
   never touched, in a fresh namespace.
2. Its free names are bound, in this order, to: the lab's parameters
   (the source's ``parameters`` cell and the injected grading profile, evaluated
   here), the imports of the instructor's own cells (re-done here: ``np``,
   ``pd``, ``rai.checks`` helpers are the real ones), and last the student's
   answers, *exported* from the kernel as plain data.
3. Plain data is ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``,
   ``bytes``, ``list``, ``tuple``, ``dict``, ``set`` of plain data (exact types,
   no subclasses), numpy arrays and scalars (``.npy`` read with
   ``allow_pickle=False``), pandas frames and series (columns as ``.npy``) and
   torch tensors (as ``.npy``).  It travels as JSON: nothing that arrives can
   carry code.
4. Anything else -- a function the student wrote, a model -- is bound to a
   :class:`KernelObject`: calling it (or a method of it) runs that call *in the
   student's kernel* on arguments sent as plain data (the test's inputs, hidden
   ones too), and the result comes back the same way.  A kernel object cannot
   be compared, tested for truth, iterated or converted: the check fails.

Fail closed: if an answer cannot be exported (not plain data, missing, a kernel
that does not answer or answers nonsense, a timeout), the check fails and its
output says why.  The released lab is unchanged: a student runs a test cell in
their own kernel and sees pass or fail at once; only the grade moves out.
"""
from __future__ import annotations

import ast
import base64
import builtins
import contextlib
import importlib
import io
import json
import linecache
import secrets
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

#: most bytes one answer may take on the way out of the kernel
MAX_EXPORT_BYTES = 256 * 2**20

#: sent to the kernel with each request and run there in a namespace of its own;
#: it reads ``__request__`` (JSON) and leaves its JSON answer in the user namespace
KERNEL_BRIDGE = r'''
def _bridge(request, user_ns):
    import base64, io, json, sys, types, traceback
    request = json.loads(request)
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    torch = sys.modules.get("torch")
    refs = user_ns.setdefault("__autograder_refs__", {})
    size = [0]

    def npy(array):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        data = buf.getvalue()
        size[0] += len(data)
        if size[0] > request["max_bytes"]:
            raise OverflowError("the answer is too large to export")
        return base64.b64encode(data).decode("ascii")

    def ref(value):
        key = str(len(refs))
        refs[key] = value
        kind = type(value)
        return {"t": "ref", "id": key, "type": f"{kind.__module__}.{kind.__qualname__}",
                "callable": callable(value)}

    def enc(x, depth=0):
        if depth > 50:
            raise RecursionError("the answer is nested too deeply to export")
        t = type(x)
        if x is None:
            return {"t": "none"}
        if t is bool:
            return {"t": "bool", "v": x}
        if t is int:
            return {"t": "int", "v": str(x)}
        if t is float:
            return {"t": "float", "v": repr(x)}
        if t is complex:
            return {"t": "complex", "v": [repr(x.real), repr(x.imag)]}
        if t is str:
            size[0] += len(x)
            return {"t": "str", "v": x}
        if t is bytes:
            size[0] += len(x)
            return {"t": "bytes", "v": base64.b64encode(x).decode("ascii")}
        if t in (list, tuple, set, frozenset):
            return {"t": t.__name__, "v": [enc(v, depth + 1) for v in x]}
        if t is dict:
            return {"t": "dict", "v": [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in x.items()]}
        if t is types.ModuleType:
            return {"t": "module", "name": x.__name__}
        if np is not None and t is np.ndarray and x.dtype.kind in "biufcUSmM":
            return {"t": "ndarray", "npy": npy(x)}
        if np is not None and isinstance(x, np.generic) and t.__module__ == "numpy" and x.dtype.kind in "biufcUSmM":
            return {"t": "npscalar", "npy": npy(np.asarray(x))}
        if pd is not None and t in (pd.DataFrame, pd.Series):
            frame = x.to_frame() if t is pd.Series else x
            columns = []
            for _, column in frame.items():
                if column.dtype.kind in "biufcmM":
                    columns.append({"t": "ndarray", "npy": npy(column.to_numpy())})
                else:
                    columns.append(enc([None if v is None else v for v in column.tolist()], depth + 1))
            index = x.index
            out = {"t": "series" if t is pd.Series else "frame",
                   "columns": enc([c for c in frame.columns], depth + 1),
                   "name": enc(x.name if t is pd.Series else None, depth + 1),
                   "index": enc(index.tolist(), depth + 1), "data": columns}
            return out
        if torch is not None and t is torch.Tensor:
            return {"t": "tensor", "npy": npy(x.detach().cpu().numpy())}
        return ref(x)

    def dec(x):
        t = x["t"]
        if t == "none": return None
        if t in ("bool", "str"): return x["v"]
        if t == "int": return int(x["v"])
        if t == "float": return float(x["v"])
        if t == "complex": return complex(float(x["v"][0]), float(x["v"][1]))
        if t == "bytes": return base64.b64decode(x["v"])
        if t in ("list", "tuple", "set", "frozenset"):
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[t](dec(v) for v in x["v"])
        if t == "dict": return {dec(k): dec(v) for k, v in x["v"]}
        if t in ("ndarray", "npscalar", "tensor"):
            value = np.load(io.BytesIO(base64.b64decode(x["npy"])), allow_pickle=False)
            if t == "npscalar": return value[()]
            if t == "tensor": return torch.from_numpy(value)
            return value
        if t == "ref": return refs[x["id"]]
        if t == "frame" or t == "series":
            data = {dec(c): dec(v) for c, v in zip(x["columns"]["v"], x["data"])}
            frame = pd.DataFrame(data, index=dec(x["index"]))
            return frame.iloc[:, 0].rename(dec(x["name"])) if t == "series" else frame
        raise ValueError(f"unknown tag {t!r}")

    def resolve(path):
        head, *attrs = path
        value = refs[head[1:]] if head.startswith("#") else user_ns[head]
        for name in attrs:
            value = getattr(value, name)
        return value

    try:
        if request["op"] == "get":
            try:
                value = resolve(request["path"])
            except (KeyError, AttributeError) as exc:
                answer = {"missing": f"{type(exc).__name__}: {exc}"}
            else:
                answer = {"value": enc(value)}
        elif request["op"] == "call":
            target = resolve(request["path"])
            args = [dec(a) for a in request["args"]]
            kwargs = {k: dec(v) for k, v in request["kwargs"].items()}
            try:
                result = target(*args, **kwargs)
            except Exception as exc:
                answer = {"raised": [type(exc).__name__, str(exc)[:2000],
                                     "".join(traceback.format_exception(exc)[-8:])[-6000:]]}
            else:
                answer = {"value": enc(result)}
        else:
            answer = {"error": "unknown request"}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    answer["nonce"] = request["nonce"]
    user_ns["__autograder_answer__"] = json.dumps(answer)

_bridge(__request__, __user_ns__)
'''


class ExportError(Exception):
    """An answer could not be brought out of the student's kernel as plain data."""


class KernelObjectError(TypeError):
    """A kernel object was used as if it were plain data."""


class StudentCodeError(RuntimeError):
    """The student's code raised an exception that is not a builtin one."""


# -- the trusted side: decoding -------------------------------------------------------------

def _decode(x: Any, bridge: "KernelBridge | None") -> Any:
    if not isinstance(x, dict) or not isinstance(x.get("t"), str):
        raise ExportError("the kernel's answer is not in the export format")
    t = x["t"]
    if t == "none":
        return None
    if t == "bool":
        return _exact(x["v"], bool)
    if t == "int":
        return int(_exact(x["v"], str))
    if t == "float":
        return float(_exact(x["v"], str))
    if t == "complex":
        real, imag = x["v"]
        return complex(float(real), float(imag))
    if t == "str":
        return _exact(x["v"], str)
    if t == "bytes":
        return base64.b64decode(_exact(x["v"], str))
    if t in ("list", "tuple", "set", "frozenset"):
        kind = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[t]
        return kind(_decode(v, bridge) for v in _exact(x["v"], list))
    if t == "dict":
        return {_decode(k, bridge): _decode(v, bridge) for k, v in _exact(x["v"], list)}
    if t in ("ndarray", "npscalar", "tensor"):
        import numpy as np

        value = np.load(io.BytesIO(base64.b64decode(_exact(x["npy"], str))), allow_pickle=False)
        if t == "npscalar":
            return value[()]
        if t == "tensor":
            import torch

            return torch.from_numpy(value.copy())
        return value
    if t in ("frame", "series"):
        import pandas as pd

        columns = _decode(x["columns"], bridge)
        data = {c: _decode(v, bridge) for c, v in zip(columns, _exact(x["data"], list), strict=True)}
        frame = pd.DataFrame(data, index=_decode(x["index"], bridge), columns=columns)
        return frame.iloc[:, 0].rename(_decode(x["name"], bridge)) if t == "series" else frame
    if t == "module":
        name = _exact(x["name"], str)
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise ExportError(f"module {name} cannot be imported by the grader: {exc}") from None
    if t == "ref":
        if bridge is None:
            raise ExportError("a kernel object where plain data was expected")
        return KernelObject(bridge, ["#" + _exact(x["id"], str)], _exact(x["type"], str))
    raise ExportError(f"unknown export tag {t!r}")


def _exact(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise ExportError("the kernel's answer is not in the export format")
    return value


def _encode(x: Any, depth: int = 0) -> dict:
    """Arguments of a call into the kernel: plain data (the test's own inputs) or kernel objects."""
    if depth > 50:
        raise ValueError("argument nested too deeply")
    if isinstance(x, KernelObject):
        return {"t": "ref", "id": x._path[0][1:]} if len(x._path) == 1 and x._path[0].startswith("#") \
            else _encode(x._bridge.get(x._path, raw=True), depth)
    t = type(x)
    if x is None:
        return {"t": "none"}
    if t is bool:
        return {"t": "bool", "v": x}
    if t is int:
        return {"t": "int", "v": str(x)}
    if t is float:
        return {"t": "float", "v": repr(x)}
    if t is complex:
        return {"t": "complex", "v": [repr(x.real), repr(x.imag)]}
    if t is str:
        return {"t": "str", "v": x}
    if t is bytes:
        return {"t": "bytes", "v": base64.b64encode(x).decode("ascii")}
    if t in (list, tuple, set, frozenset):
        return {"t": t.__name__, "v": [_encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"t": "dict", "v": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in x.items()]}
    module = t.__module__.split(".")[0]
    if module == "numpy":
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(x), allow_pickle=False)
        return {"t": "ndarray" if t is np.ndarray else "npscalar", "npy": base64.b64encode(buf.getvalue()).decode()}
    if module == "pandas":
        frame = x.to_frame() if t.__name__ == "Series" else x
        return {"t": "series" if t.__name__ == "Series" else "frame",
                "columns": _encode(list(frame.columns), depth + 1),
                "name": _encode(x.name if t.__name__ == "Series" else None, depth + 1),
                "index": _encode(x.index.tolist(), depth + 1),
                "data": [_encode(col.to_numpy() if col.dtype.kind in "biufcmM" else col.tolist(), depth + 1)
                         for _, col in frame.items()]}
    if module == "torch":
        buf = io.BytesIO()
        import numpy as np

        np.save(buf, x.detach().cpu().numpy(), allow_pickle=False)
        return {"t": "tensor", "npy": base64.b64encode(buf.getvalue()).decode()}
    raise TypeError(f"cannot send a {t.__name__} into the student's kernel: only plain data")


# -- talking to the kernel ----------------------------------------------------------------

@dataclass
class KernelBridge:
    """Requests to the student's kernel.  ``execute(code, user_expressions) -> reply content``
    is supplied by the caller (the grading client), with its own timeout."""

    execute: Callable[[str, dict], dict]
    requests: int = 0

    def request(self, op: str, path: list[str], **extra: Any) -> dict:
        nonce = secrets.token_hex(16)
        request = {"op": op, "path": path, "nonce": nonce, "max_bytes": MAX_EXPORT_BYTES, **extra}
        code = f"exec({KERNEL_BRIDGE!r}, {{'__request__': {json.dumps(request)!r}, " \
               f"'__user_ns__': get_ipython().user_ns}})"
        self.requests += 1
        try:
            content = self.execute(code, {"answer": "__autograder_answer__"})
        except TimeoutError:
            raise ExportError("the student's kernel did not answer in time") from None
        except Exception as exc:  # a dead kernel, a closed channel
            raise ExportError(f"the student's kernel did not answer: {type(exc).__name__}: {exc}") from None
        try:
            data = content["user_expressions"]["answer"]["data"]["text/plain"]
            text = ast.literal_eval(data)
            if type(text) is not str or len(text) > 2 * MAX_EXPORT_BYTES:
                raise ValueError
            answer = json.loads(text)
            if type(answer) is not dict or answer.get("nonce") != nonce:
                raise ValueError
        except Exception:
            raise ExportError("the student's kernel did not answer the grader's request "
                              "(its answer was missing, stale or malformed)") from None
        if "error" in answer:
            raise ExportError(f"the answer could not be exported: {answer['error']}")
        return answer

    def get(self, path: list[str], raw: bool = False) -> Any:
        answer = self.request("get", path)
        if "missing" in answer:
            raise NameError(f"{'.'.join(p for p in path if not p.startswith('#'))} is not defined "
                            f"in the student's kernel")
        return answer["value"] if raw else _decode(answer["value"], self)

    def call(self, path: list[str], args: tuple, kwargs: dict) -> Any:
        answer = self.request("call", path, args=[_encode(a) for a in args],
                              kwargs={str(k): _encode(v) for k, v in kwargs.items()})
        if "raised" in answer:
            name, message, trace = (str(part) for part in answer["raised"])
            kind = getattr(builtins, name, None)
            if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
                exc = kind(message)
            else:
                exc = StudentCodeError(f"{name}: {message}")
            exc.student_traceback = trace  # type: ignore[attr-defined]
            raise exc
        return _decode(answer["value"], self)


class KernelObject:
    """Something in the student's kernel that is not plain data: only its attributes and calls reach it."""

    __slots__ = ("_bridge", "_path", "_type")

    def __init__(self, bridge: KernelBridge, path: list[str], type_name: str):
        object.__setattr__(self, "_bridge", bridge)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._bridge.get([*self._path, name])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._bridge.call(self._path, args, kwargs)

    def __repr__(self) -> str:
        return f"<{self._type} in the student's kernel>"

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise KernelObjectError(f"{self!r} is not plain data: a test can call it, not compare, convert or "
                                f"inspect it (export plain data, e.g. a list, a number or an array)")

    __setattr__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _refuse
    __bool__ = __len__ = __iter__ = __contains__ = __getitem__ = __setitem__ = _refuse
    __int__ = __float__ = __index__ = __complex__ = __array__ = __str__ = __format__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __neg__ = __abs__ = __round__ = __matmul__ = __pow__ = __mod__ = _refuse


def kernel_type(value: Any) -> str:
    """The type name of an answer: for a kernel object, as the kernel reports it (``module.Qualname``)."""
    if isinstance(value, KernelObject):
        return object.__getattribute__(value, "_type")
    return f"{type(value).__module__}.{type(value).__qualname__}"


# -- the trusted namespace ------------------------------------------------------------------

def free_names(source: str) -> list[str]:
    """Names a cell reads but never binds (approximately: a name bound anywhere in the cell is its own)."""
    tree = ast.parse(source)
    loaded, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.append(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    seen = []
    for name in loaded:
        if name not in bound and name not in seen and not hasattr(builtins, name):
            seen.append(name)
    return seen


def import_statements(source: str) -> str:
    """The import statements of a cell (at any depth of its top level), as source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.unparse(node) for node in imports)


@dataclass
class TrustedContext:
    """What the instructor's notebook gives every test: parameters and imports, evaluated by the grader."""

    namespace: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_notebook(cls, nb) -> "TrustedContext":
        """Parameters (``parameters`` and ``injected-parameters`` cells) and the imports of every cell
        that is not an answer or a test, in notebook order."""
        ctx = cls()
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            meta = cell.get("metadata", {}).get("nbgrader", {})
            tags = cell.get("metadata", {}).get("tags", [])
            if meta.get("solution") or (meta.get("grade") and not meta.get("solution")):
                continue
            source = cell.source if ({"parameters", "injected-parameters"} & set(tags)) \
                else import_statements(cell.source)
            if not source.strip():
                continue
            try:
                exec(compile(source, f"<{meta.get('grade_id') or 'setup'}>", "exec"), ctx.namespace)
            except Exception as exc:  # e.g. an import the grader's environment lacks
                ctx.problems.append(f"{type(exc).__name__}: {exc}")
        ctx.namespace.pop("__builtins__", None)
        return ctx


@dataclass
class CheckResult:
    outputs: list[dict]
    passed: bool
    export_problem: str | None = None  # why an answer could not be brought out, if that failed the check


def run_check(source: str, label: str, context: TrustedContext, bridge: KernelBridge) -> CheckResult:
    """Run one test cell's source here, against the student's answers brought out of the kernel."""
    import nbformat

    filename = f"<test cell {label}>"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    namespace: dict[str, Any] = {"__name__": "__autograder_check__", "__builtins__": builtins}
    namespace.update(context.namespace)
    stdout = io.StringIO()
    outputs: list[dict] = []
    problem = None
    try:
        tree = ast.parse(source, filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        for name in free_names(source):
            if name in namespace:
                continue
            try:
                namespace[name] = bridge.get([name])
            except NameError:
                pass  # the test will raise NameError itself, as it would in the kernel
        with contextlib.redirect_stdout(stdout):
            exec(compile(tree, filename, "exec"), namespace)
            value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace) if last else None
        if stdout.getvalue():
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=stdout.getvalue()))
        if value is not None:
            outputs.append(nbformat.v4.new_output("execute_result", data={"text/plain": repr(value)},
                                                  execution_count=None))
        return CheckResult(outputs, True)
    except BaseException as exc:  # noqa: BLE001 -- every failure of a check is a failed check
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, ExportError):
            problem = str(exc)
        if stdout.getvalue():
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=stdout.getvalue()))
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        trace = ["Traceback (checked by the grader, outside your kernel):\n"]
        trace += traceback.format_list(frames)
        trace += traceback.format_exception_only(type(exc), exc)
        student = getattr(exc, "student_traceback", None)
        if student:
            trace += ["\nIn your code, in the kernel:\n", student]
        outputs.append(nbformat.v4.new_output("error", ename=type(exc).__name__, evalue=str(exc)[:2000],
                                              traceback=[line.rstrip("\n") for line in trace]))
        return CheckResult(outputs, False, problem)
    finally:
        linecache.cache.pop(filename, None)
        sys.stdout.flush()
