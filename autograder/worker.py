"""One worker grades one submission: assemble -> parameterize -> execute -> score.

A :class:`GradingJob` and a :class:`GradingResult` are plain data (JSON), so a
worker needs nothing but the job: it can run in a local process pool or as a
Slurm array task.  The worker never touches the gradebook; it writes the
autograded notebooks and its result file atomically and returns the result to
the coordinator, which records it.
"""
from __future__ import annotations

import atexit
import multiprocessing.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .assemble import assemble_submission, read_submission
from .course import HIDDEN_DIR
from .errors import AutograderError, SubmissionError
from .parameterize import inject_profile
from .score import score_notebook, unanswered, zero_scores

# the worker copies no more than this from a submission directory (issue: huge files)
MAX_SUBMISSION_BYTES = 64 * 2**20


@dataclass
class GradingJob:
    student: str
    lab: str
    submission_dir: str
    output_dir: str            # autograded/STUDENT/LAB
    result_path: str           # where the worker writes its GradingResult (JSON)
    templates: dict[str, str]  # notebook name -> grading template path
    lab_files_dir: str | None  # the lab's source directory (non-notebook files are copied in)
    profile: dict[str, Any]
    kernel_name: str
    timeout: float
    cell_timeout: float
    memory_limit: int | None
    digest: str
    scratch_root: str | None = None  # where scratch directories go (None: the system's temp dir)
    sandbox: bool = True             # run the kernel under bubblewrap (autograder.sandbox)
    readonly_paths: list[str] = field(default_factory=list)  # what the sandbox shows besides Python
    pids_limit: int | None = 1024    # processes + threads of one kernel and its children (fork bombs)
    disk_limit: int | None = None    # bytes the kernel may write (sandbox: a tmpfs of this size)
    hidden_dir: str | None = None    # the lab's hidden data, read-only at hidden/ while grading
    trusted_checks: bool = True      # test cells run in the worker against exported answers (autograder.trusted)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GradingJob":
        return cls(**json.loads(text))


@dataclass
class GradingResult:
    student: str
    lab: str
    digest: str
    status: str                       # "graded" | "error"
    message: str = ""                 # one line for the report
    scores: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # limits hit: kind, notebook, cell
    no_response: list[str] = field(default_factory=list)  # "notebook/grade_id" of blank answers
    failed_notebooks: list[str] = field(default_factory=list)  # could not run at all: scored 0
    retry: bool = False  # the grader failed, not the submission: grade it again next run
    answers: dict[str, str] = field(default_factory=dict)  # "notebook/grade_id" -> sha256 of the answer
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(s["auto_score"] or 0.0 for s in self.scores)

    @property
    def max_score(self) -> float:
        return sum(s["max_score"] for s in self.scores)

    @property
    def manual_pending(self) -> float:
        """Points that wait for a person (written answers)."""
        return sum(s["max_score"] for s in self.scores if s["auto_score"] is None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "GradingResult":
        return cls(**json.loads(text))


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _copy_plain_files(src: Path, dest: Path, skip: set[str], budget: int) -> list[str]:
    """Copy regular files under ``src`` into ``dest``; return notes on what was left out.

    Symlinks are never followed (one could point at another student's work), and
    files that would take the copy past ``budget`` bytes are left out, not fatal:
    the notebook is still graded.
    """
    used, notes = 0, []
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if d not in {".ipynb_checkpoints", "__pycache__", "hidden"}]
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(src)
            if str(rel) in skip or name == "lab.toml":
                continue
            if path.is_symlink() or not path.is_file():
                notes.append(f"{rel} is a link or not a regular file: not copied")
                continue
            size = path.stat().st_size
            if used + size > budget:
                notes.append(f"{rel} ({size / 2**20:.0f} MiB) left out: submissions may hold "
                             f"{budget // 2**20} MiB of files")
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            used += size
    return notes


@dataclass(frozen=True)
class KernelSettings:
    """What a kernel for a job needs: a warm kernel is reused only for the same settings."""

    kernel_name: str
    memory_limit: int | None = None
    sandbox: bool = True
    readonly_paths: tuple[str, ...] = ()
    pids_limit: int | None = None
    disk_limit: int | None = None
    hidden_dir: str | None = None

    @classmethod
    def of(cls, job: GradingJob) -> "KernelSettings":
        return cls(job.kernel_name, job.memory_limit, job.sandbox, tuple(job.readonly_paths), job.pids_limit,
                   job.disk_limit, job.hidden_dir)


def start_kernel(settings: KernelSettings, cwd: Path):
    """Start a kernel for one submission in ``cwd``: sandboxed, in a cgroup of its own.

    The cgroup (``km.autograder_cgroup``) caps the memory of the kernel and
    everything it starts, and lets :func:`stop_kernel` kill whatever it left
    behind; a sandboxed kernel joins it before bubblewrap starts, so nothing
    escapes it.  Where no cgroup can be made, memory is capped per process
    (``RLIMIT_DATA``).  A file can never be larger than the disk limit
    (``RLIMIT_FSIZE``); in the sandbox all the kernel writes goes to a tmpfs
    of that size.  The kernel's chatter goes nowhere near the report.
    """
    from jupyter_core.utils import run_sync

    from .limits import MemoryCgroup
    from .sandbox import LimitedKernelManager, SandboxedKernelManager

    cgroup = MemoryCgroup.create(settings.memory_limit, pids_limit=settings.pids_limit)
    rlimits = {"FSIZE": settings.disk_limit} if settings.disk_limit else {}
    if cgroup is None and settings.memory_limit:
        rlimits["DATA"] = settings.memory_limit
    if settings.sandbox:
        procs = os.pathsep.join(str(p) for p in cgroup.procs_files) if cgroup else ""
        km = SandboxedKernelManager(kernel_name=settings.kernel_name, readonly_paths=list(settings.readonly_paths),
                                    cgroup_procs=procs, rlimits=rlimits, scratch_size=settings.disk_limit or 0,
                                    workdir_mounts={HIDDEN_DIR: settings.hidden_dir} if settings.hidden_dir else {})
    else:
        # nbclient drives kernels asynchronously: it needs the async manager
        km = LimitedKernelManager(kernel_name=settings.kernel_name, rlimits=rlimits)
    try:
        run_sync(km.start_kernel)(cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except BaseException:
        if cgroup is not None:
            cgroup.destroy()
        raise
    if cgroup is not None and not settings.sandbox:
        try:
            cgroup.add(km.provisioner.process.pid)
        except OSError:
            cgroup.destroy()
            cgroup = None
    km.autograder_cgroup = cgroup
    km.autograder_rlimits = rlimits
    km.autograder_settings = settings
    return km


def stop_kernel(km) -> None:
    """Shut the kernel down and kill anything it started (daemons included)."""
    from jupyter_core.utils import run_sync

    try:
        run_sync(km.shutdown_kernel)(now=True)
    except Exception:  # already gone
        pass
    cgroup = getattr(km, "autograder_cgroup", None)
    if cgroup is not None:
        km.autograder_oom_kills = cgroup.oom_kills()  # read before the group is gone
        km.autograder_pids_hit = cgroup.pids_limit_hit()
        cgroup.destroy()


def kernel_alive(km) -> bool:
    from jupyter_core.utils import run_sync

    try:
        return bool(run_sync(km.is_alive)())
    except Exception:
        return False


class WarmKernel:
    """One kernel started ahead of time in an empty scratch directory.

    Starting a kernel costs most of a submission's overhead; a worker starts the
    next one while it finishes the current submission, so the next job finds it
    ready.  Each kernel still runs exactly one submission.
    """

    def __init__(self) -> None:
        self.settings: KernelSettings | None = None
        self.km = None
        self.scratch: Path | None = None
        # pool workers leave through multiprocessing's exit path, not atexit
        atexit.register(self.discard)
        multiprocessing.util.Finalize(self, self.discard, exitpriority=10)

    def start(self, settings: KernelSettings, prefix: str, root: str | None = None) -> None:
        self.discard()
        self.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        try:
            self.km = start_kernel(settings, self.scratch)
            self.settings = settings
        except Exception:  # no warm kernel this time; take() will say why
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def take(self, settings: KernelSettings, prefix: str, root: str | None = None):
        """A started kernel and its scratch directory: the warm one if ready, else a new one."""
        if self.km is not None and self.settings == settings and kernel_alive(self.km):
            km, scratch = self.km, self.scratch
            self.km = self.scratch = self.settings = None
            return km, scratch
        self.discard()
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        return start_kernel(settings, scratch), scratch

    def discard(self) -> None:
        if self.km is not None:
            stop_kernel(self.km)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.km = self.scratch = self.settings = None


_warm: WarmKernel | None = None


def preload() -> None:
    """Import what grading needs (a forked worker then starts with it loaded)."""
    import nbclient  # noqa: F401
    import papermill  # noqa: F401
    from nbgrader import preprocessors  # noqa: F401

    from . import execute  # noqa: F401


def preload_lab(lab) -> None:
    """Import what a lab's trusted checks import (pandas, fairlearn, torch...) before workers fork.

    A trusted check re-does the imports of the instructor's cells in the worker; done once here,
    each forked worker finds them loaded instead of paying for them on its first check.  Only the
    instructor's source is read; a failing import is ignored (the check will report it).
    """
    import nbformat

    from .trusted import TrustedContext

    for name in lab.notebooks:
        try:
            TrustedContext.from_notebook(nbformat.read(lab.source_dir / name, as_version=4))
        except Exception:  # noqa: BLE001 -- warming a cache must never stop grading
            continue


def _warm_imports(template_paths: list[str]) -> None:
    """:func:`preload_lab` for a lone worker, from the grading templates of its job."""
    from .trusted import TrustedContext

    for path in template_paths:
        try:
            TrustedContext.from_notebook(nbformat.read(path, as_version=4))
        except Exception:  # noqa: BLE001 -- warming a cache must never stop grading
            continue


def die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the coordinator dies (even by kill -9).

    The worker's own kernels watch their parent (ipykernel's parent poller) and follow.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() == 1:  # the coordinator died before we got here
        os._exit(1)


def worker_init(prestart: bool = True, in_pool: bool = True) -> None:
    """Process-pool initializer: imports done, a warm kernel slot of its own."""
    global _warm
    if in_pool:
        die_with_parent()
    preload()
    if prestart:
        _warm = WarmKernel()


def grade_submission(job: GradingJob) -> GradingResult:
    """Grade one submission end to end; never raises for a bad submission."""
    started = time.monotonic()
    result = GradingResult(student=job.student, lab=job.lab, digest=job.digest, status="graded")
    prefix = f"autograder-{job.lab}-"
    marker = started_marker(job)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))  # tells the coordinator which job a dead worker held
    if job.scratch_root:
        Path(job.scratch_root).mkdir(parents=True, exist_ok=True)
    km, scratch = None, Path(tempfile.mkdtemp(prefix=prefix, dir=job.scratch_root))
    executed: dict[str, nbformat.NotebookNode] = {}
    cells_seconds = 0.0
    try:
        submission = Path(job.submission_dir)
        # the student's files first, then the lab's own files over them (as nbgrader does)
        result.notes += _copy_plain_files(submission, scratch, skip=set(job.templates), budget=MAX_SUBMISSION_BYTES)
        if job.lab_files_dir:
            _copy_plain_files(Path(job.lab_files_dir), scratch, skip=set(job.templates), budget=2**40)
        for name, template_path in sorted(job.templates.items()):
            template = nbformat.read(template_path, as_version=4)
            try:
                nb_path = submission / name
                if nb_path.is_symlink() or not nb_path.is_file():
                    raise SubmissionError(f"{name} is missing from the submission")
                if nb_path.stat().st_size > MAX_SUBMISSION_BYTES:
                    raise SubmissionError(f"{name} is larger than {MAX_SUBMISSION_BYTES // 2**20} MiB")
                assembly = assemble_submission(template, read_submission(nb_path.read_bytes(), name))
            except SubmissionError as exc:
                result.status = "error"
                result.message = str(exc)
                result.scores += [s.to_dict() for s in zero_scores(template, name.removesuffix(".ipynb"), str(exc))]
                result.failed_notebooks.append(name.removesuffix(".ipynb"))
                executed[name] = _unreadable(template, str(exc))  # so feedback can say why
                continue
            result.no_response += [f"{name.removesuffix('.ipynb')}/{gid}" for gid in unanswered(assembly.notebook)]
            result.notes += [f"{name}: {note}" for note in assembly.notes]
            result.answers.update(answer_digests(assembly.notebook, name.removesuffix(".ipynb")))
            nb = inject_profile(assembly.notebook, job.profile, kernel_name=job.kernel_name)
            km, scratch = _kernel_for(job, scratch, prefix)
            kernel, km = km, None  # one kernel runs one notebook; _run stops it
            out = _run(nb, scratch, name, job, kernel)
            if job.memory_limit and getattr(kernel, "autograder_oom_kills", 0):
                _blame_memory(out, job.memory_limit)
            _blame_errors(out, memory="DATA" in kernel.autograder_rlimits, disk=bool(job.disk_limit))
            if getattr(kernel, "autograder_pids_hit", False):
                result.events.append({"kind": "process-limit", "cell": None, "grade_id": None, "notebook": name})
            record = out.metadata.get("autograder", {}).get("execution", {})
            cells_seconds += float(record.get("cells_seconds", 0.0))
            for event in record.get("events", []):
                result.events.append({**event, "notebook": name})
            executed[name] = out
            result.scores += [s.to_dict() for s in score_notebook(out, name.removesuffix(".ipynb"))]
        # write the autograded notebooks (nbgrader's layout, so formgrader and feedback find them),
        # with what the grader noticed on top, for the student and the instructor
        out_dir = Path(job.output_dir)
        for name, nb in executed.items():
            if result.notes:
                lines = "\n".join(f"- {note}" for note in result.notes)
                nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"**Notes from the autograder**\n\n{lines}"))
            atomic_write(out_dir / name, nbformat.writes(nb))
        # nbgrader's feedback carries these two on: its release_feedback names the
        # HTML after the submission's secret, so that fetch_feedback finds it
        for name in ("timestamp.txt", "submission_secret.txt"):
            stamp = Path(job.submission_dir) / name
            if stamp.is_file() and not stamp.is_symlink():
                atomic_write(out_dir / name, stamp.read_bytes()[:200])
            else:  # not one an earlier version left
                (out_dir / name).unlink(missing_ok=True)
        if result.events and result.status == "graded":
            result.message = "; ".join(_describe(e) for e in result.events)
    except SubmissionError as exc:
        result.status, result.message = "error", str(exc)
    except AutograderError as exc:
        result.status, result.message = "error", f"grading failed: {exc}"
    except Exception as exc:  # a bug or an environment problem: report it, keep the batch going
        result.status, result.retry = "error", True
        result.message = f"grading failed: {type(exc).__name__}: {exc}".splitlines()[0]
        result.notes.append(traceback.format_exc(limit=5))
    finally:
        if km is not None:  # a kernel that never got its notebook (grading failed before)
            stop_kernel(km)
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = {"total": round(time.monotonic() - started, 3), "cells": round(cells_seconds, 3)}
    atomic_write(Path(job.result_path), result.to_json())
    marker.unlink(missing_ok=True)
    return result


def started_marker(job: GradingJob) -> Path:
    return Path(job.result_path).with_suffix(".started")


def _kernel_for(job: GradingJob, scratch: Path, prefix: str):
    """A started kernel and the scratch directory it runs in, holding this submission's files.

    In a pool worker the kernel was started ahead of time (a warm kernel); the
    files already copied move into its directory.  The next warm kernel starts
    up while this notebook runs.
    """
    warm = _warm or WarmKernel()
    km, kernel_dir = warm.take(KernelSettings.of(job), prefix, job.scratch_root)
    try:
        if kernel_dir != scratch:
            for item in scratch.iterdir():
                os.replace(item, kernel_dir / item.name)
            shutil.rmtree(scratch, ignore_errors=True)
        if job.sandbox:  # hidden data is mounted; the files go into the kernel's private tmpfs
            from jupyter_core.utils import run_sync

            from .sandbox import SandboxError

            try:
                run_sync(km.load_submission)()
            except SandboxError as exc:
                raise (SubmissionError if "disk limit" in str(exc) else AutograderError)(str(exc)) from None
        elif job.hidden_dir:
            shutil.copytree(job.hidden_dir, kernel_dir / HIDDEN_DIR, dirs_exist_ok=True)
    except BaseException:
        stop_kernel(km)
        shutil.rmtree(kernel_dir, ignore_errors=True)
        raise
    if _warm is not None:
        _warm.start(KernelSettings.of(job), prefix, job.scratch_root)
    return km, kernel_dir


def answer_digests(nb, notebook: str) -> dict[str, str]:
    """``{"notebook/grade_id": sha256}`` of each answer cell's source (to notice a changed answer)."""
    import hashlib

    out = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and meta.get("grade_id"):
            out[f"{notebook}/{meta['grade_id']}"] = hashlib.sha256(cell.source.encode("utf-8")).hexdigest()
    return out


def _blame_errors(nb, memory: bool, disk: bool) -> None:
    """Name the limit behind a cell's error: a full disk (ENOSPC, EFBIG) or, where memory is capped
    per process (no cgroup), a ``MemoryError``."""
    record = nb.metadata.setdefault("autograder", {}).setdefault("execution", {"events": []})
    events = record.setdefault("events", [])
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            text = f"{output.get('ename')}: {output.get('evalue')}"
            kind = None
            if disk and ("[Errno 28]" in text or "[Errno 27]" in text or "No space left on device" in text):
                kind = "disk-limit"
            elif memory and output.get("ename") == "MemoryError":
                kind = "memory-limit"
            if kind and not any(e.get("cell") == index and e["kind"] == kind for e in events):
                gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                events.append({"kind": kind, "cell": index, "grade_id": gid})


def _blame_memory(nb, limit: int) -> None:
    """The OOM killer struck inside this kernel's cgroup: say so where it happened."""
    record = nb.metadata.setdefault("autograder", {}).setdefault("execution", {"events": []})
    died = [e for e in record["events"] if e["kind"] == "kernel-died"]
    for event in died:
        event["kind"] = "memory-limit"
    if not died:  # a child process (not the kernel) was killed: blame the first failed cell
        failed = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        gid = nb.cells[failed].get("metadata", {}).get("nbgrader", {}).get("grade_id") if failed is not None else None
        record["events"].append({"kind": "memory-limit", "cell": failed, "grade_id": gid})
    record["memory_limit"] = limit


def _unreadable(template, why: str):
    """The blank notebook with a note on top: what the student sees in feedback."""
    nb = template.copy()
    nb.cells = [nbformat.v4.new_markdown_cell(f"**This notebook could not be graded:** {why}")] + list(nb.cells)
    return nb


def _run(nb, scratch: Path, name: str, job: GradingJob, km=None):
    from .execute import execute_assembled

    # papermill saves the notebook as it runs, hidden tests included: never where
    # the kernel can read it (the scratch directory is the sandbox's working dir)
    private = Path(tempfile.mkdtemp(prefix="executed-", dir=job.scratch_root))
    try:
        return execute_assembled(
            nb, scratch, private / name,
            kernel_name=job.kernel_name,
            cell_timeout=job.cell_timeout,
            notebook_timeout=job.timeout,
            km=km,
            trusted_checks=job.trusted_checks,
            check_dir=job.lab_files_dir,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _describe(event: dict) -> str:
    where = f"{event.get('notebook')} cell {event.get('grade_id') or '#' + str(event.get('cell'))}"
    return {
        "cell-timeout": f"cell time limit hit in {where}",
        "notebook-timeout": f"notebook time limit hit in {where}",
        "kernel-died": f"kernel died in {where}",
        "kernel-broken": f"kernel broke the Jupyter protocol in {where} and was stopped",
        "memory-limit": f"memory limit hit in {where}",
        "disk-limit": f"disk limit hit in {where}",
        "export-failed": f"could not check {where}: {event.get('why')}",
        "output-limit": f"output limit hit in {where} (the rest of its output was dropped)",
        "process-limit": f"process limit hit in {event.get('notebook')} (a fork bomb?)",
    }.get(event["kind"], f"{event['kind']} in {where}")


def main(argv: list[str] | None = None) -> int:
    """Grade one job: ``python -m autograder.worker JOB.json``, or, as a Slurm array task,
    ``python -m autograder.worker --array DIR`` (the job is ``DIR/$SLURM_ARRAY_TASK_ID.json``)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--array":
        index = os.environ.get("SLURM_ARRAY_TASK_ID")
        if index is None:
            print("autograder.worker --array: SLURM_ARRAY_TASK_ID is not set (not a Slurm array task)",
                  file=sys.stderr)
            return 2
        path = Path(args[1]) / f"{int(index)}.json"
    elif len(args) == 1:
        path = Path(args[0])
    else:
        print("usage: python -m autograder.worker JOB.json | --array DIR", file=sys.stderr)
        return 2
    from .cli import _ensure_venv_on_path, _skip_slow_optional_imports

    _skip_slow_optional_imports()
    _ensure_venv_on_path()
    worker_init(prestart=False, in_pool=False)
    job = GradingJob.from_json(path.read_text(encoding="utf-8"))
    if job.trusted_checks:
        # a task grades one submission: what its checks import (pandas, torch...) is loaded
        # while the kernel runs the notebook, instead of after it, on the first check
        import threading

        threading.Thread(target=_warm_imports, args=(list(job.templates.values()),), daemon=True).start()
    result = grade_submission(job)
    print(f"{result.student} {result.lab}: {result.score:g}/{result.max_score:g} {result.status} {result.message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
