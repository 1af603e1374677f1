"""``autograder grade LAB``: the coordinator.

It finds the submissions, decides which need grading, hands one job per
submission to a pool of workers, and is the only writer of the gradebook.

Crash safety: a worker writes its result file atomically before the
coordinator sees it; the coordinator records a result in the gradebook (one
transaction) and only then marks it recorded.  Run the same command again
after a crash and finished results are recorded without re-running, unfinished
ones are graded, and nothing is recorded twice (a submission has one row per
student and lab in nbgrader's gradebook; recording again writes the same
scores).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import multiprocessing as mp
import nbformat

from . import __version__
from .assemble import grading_template
from .course import Course, CourseError, Lab
from .record import GradebookWriter, read_timestamp
from .worker import (GradingJob, GradingResult, atomic_write, grade_submission, preload, preload_lab, started_marker,
                     worker_init)

if TYPE_CHECKING:
    from .slurm import SlurmOptions


@dataclass
class GradeOptions:
    students: list[str] | None = None
    workers: int | None = None
    cell_timeout: float | None = None
    timeout: float | None = None
    memory_limit: str | int | None = None
    disk_limit: str | int | None = None
    force: bool = False
    progress: bool = True
    sandbox: bool = True
    trusted_checks: bool = True  # False: test cells run in the student's kernel, as in nbgrader
    backend: str = "local"       # "local": a pool of worker processes here; "slurm": a job array
    slurm: "SlurmOptions | None" = None
    on_row: "Callable[[Row], None] | None" = None  # told of each submission as soon as it is recorded


@dataclass
class Row:
    student: str
    score: float
    max_score: float
    status: str   # graded | error | unchanged
    message: str = ""
    seconds: dict = field(default_factory=dict)
    manual_pending: float = 0.0
    notes: int = 0
    retry: bool = False  # the grader failed, not the submission: it is graded again on the next run

    @property
    def status_line(self) -> str:
        text = self.status if not self.message else f"{self.status}: {self.message}"
        if self.notes:
            text += f" [{self.notes} note{'s' * (self.notes > 1)} in the feedback]"
        if self.manual_pending:
            text += f" (+{self.manual_pending:g} to grade by hand)"
        return text


# nbgrader's record of when and by which `nbgrader submit` a version came: not part of the version
SUBMISSION_RECORDS = frozenset({"timestamp.txt", "submission_secret.txt"})


def _tree_digest(root: Path, ignore: frozenset[str] = frozenset()) -> hashlib._Hash:
    """Digest of the regular files under ``root`` (names and contents; symlinks by target text).

    Top-level files named in ``ignore`` are left out.
    """
    h = hashlib.sha256()
    if not root.is_dir():
        h.update(b"<missing>")
        return h
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name in ignore and Path(dirpath) == root:
                continue
            path = Path(dirpath) / name
            rel = str(path.relative_to(root)).encode("utf-8", "surrogateescape")
            h.update(b"\0F" + rel + b"\0")
            if path.is_symlink():
                h.update(b"->" + os.readlink(path).encode("utf-8", "surrogateescape"))
            elif path.is_file():
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    return h


class Coordinator:
    def __init__(self, course: Course, lab: Lab, options: GradeOptions):
        self.course = course
        self.lab = lab
        self.options = options
        self.limits = lab.limits.override(options.timeout, options.cell_timeout, options.memory_limit,
                                          options.disk_limit)
        self.state = course.state / lab.name
        self.templates: dict[str, str] = {}
        self.template_digest = ""

    # -- preparation ------------------------------------------------------------
    def prepare_templates(self) -> None:
        """Write the grading template of each notebook once per run (workers read them)."""
        h = hashlib.sha256()
        kernel = None
        for name in self.lab.notebooks:
            source = nbformat.read(self.lab.source_dir / name, as_version=4)
            kernel = kernel or source.metadata.get("kernelspec", {}).get("name", "python3")
            text = nbformat.writes(grading_template(source))
            path = self.state / "templates" / name
            atomic_write(path, text)
            self.templates[name] = str(path)
            h.update(name.encode() + b"\0" + text.encode())
        self.kernel_name = kernel or "python3"
        h.update(json.dumps(self.lab.grading_profile, sort_keys=True, default=str).encode())
        h.update(json.dumps([self.limits.timeout, self.limits.cell_timeout, self.limits.memory_limit,
                             self.limits.disk_limit, self.options.sandbox,
                             self.options.trusted_checks]).encode())
        h.update(__version__.encode())
        files = _tree_digest(self.lab.source_dir)  # data files the lab ships
        h.update(files.digest())
        self.template_digest = h.hexdigest()

    def job_for(self, student: str) -> GradingJob:
        submission = self.course.submitted / student / self.lab.name
        # the same notebook handed in again is the same version: its grade stands, it is not run again
        version = _tree_digest(submission, ignore=SUBMISSION_RECORDS).hexdigest()
        digest = hashlib.sha256((self.template_digest + version).encode()).hexdigest()
        return GradingJob(
            student=student,
            lab=self.lab.name,
            submission_dir=str(submission),
            output_dir=str(self.course.autograded / student / self.lab.name),
            result_path=str(self.state / "results" / f"{student}.json"),
            templates=dict(self.templates),
            lab_files_dir=str(self.lab.source_dir),
            profile=self.lab.grading_profile,
            kernel_name=self.kernel_name,
            timeout=self.limits.timeout,
            cell_timeout=self.limits.cell_timeout,
            memory_limit=self.limits.memory_limit,
            disk_limit=self.limits.disk_limit,
            hidden_dir=str(self.lab.hidden_dir) if self.lab.hidden_dir else None,
            digest=digest,
            scratch_root=str(self.state / "scratch"),
            sandbox=self.options.sandbox,
            trusted_checks=self.options.trusted_checks,
            readonly_paths=sandbox_readonly_paths(),
        )

    def _recorded_path(self, student: str) -> Path:
        return self.state / "recorded" / f"{student}.json"

    def _load(self, path: Path) -> GradingResult | None:
        try:
            return GradingResult.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None  # absent or half-written by a killed process: ignore

    # -- the run ----------------------------------------------------------------
    def run(self) -> list[Row]:
        with self.exclusive():
            return self.run_locked()

    def run_locked(self) -> list[Row]:
        """:meth:`run`, for a caller that already holds :meth:`exclusive`."""
        if self.options.backend == "slurm":
            # first the array tasks of a killed run (they work in the scratch reaped below)
            self._slurm().cancel_leftovers()
        # what a killed run left: sandboxes still running in its scratch directories,
        # cgroups, the directories themselves.  Nothing there is needed.
        reap_leftovers(self.state / "scratch")
        shutil.rmtree(self.state / "scratch", ignore_errors=True)
        return self._run()

    def exclusive(self):
        """One coordinator per course and lab at a time (two would grade and record twice)."""
        return pid_lock(self.state / "lock", lambda pid: (
            f"another grader (`autograder grade`, `watch` or `serve`) is grading {self.lab.name} on this "
            f"course (pid {pid}); wait for it or stop it"))

    def _run(self) -> list[Row]:
        students = self.course.student_ids(self.lab.name)
        if self.options.students:
            wanted = set(self.options.students)
            unknown = wanted - set(students)
            students = [s for s in students if s in wanted]
            rows_unknown = [Row(s, 0.0, 0.0, "error", f"no submission in {self.course.submitted / s / self.lab.name}")
                            for s in sorted(unknown)]
        else:
            rows_unknown = []
        self.prepare_templates()
        if self.options.sandbox:
            from .sandbox import bwrap_available

            ok, why = bwrap_available()
            if not ok:
                raise CourseError(f"cannot sandbox student code: {why}. Install bubblewrap, or pass "
                                  "--no-sandbox to grade without one (student code then runs with your rights)")
        else:
            print("autograder: warning: --no-sandbox: student code runs with your rights, network and files",
                  file=sys.stderr)
        if self.limits.memory_limit:
            from .limits import memory_cgroup_support

            version, why = memory_cgroup_support()
            if version is None:
                print(f"autograder: warning: {why}", file=sys.stderr)
        rows: dict[str, Row] = {}
        todo: list[GradingJob] = []
        with GradebookWriter(self.course.db_url) as writer:
            self._ensure_lab_registered(writer)
            for student in students:
                job = self.job_for(student)
                recorded = self._load(self._recorded_path(student))
                if (not self.options.force and recorded is not None and recorded.digest == job.digest
                        and writer.has_submission(self.lab.name, student)):
                    rows[student] = self._told(Row(student, recorded.score, recorded.max_score, "unchanged",
                                                   recorded.message, manual_pending=recorded.manual_pending))
                    continue
                finished = self._load(Path(job.result_path))
                if (not self.options.force and finished is not None and finished.digest == job.digest
                        and not finished.retry):
                    # graded before a crash but never recorded: record it now, don't re-run
                    rows[student] = self._told(self._record(writer, job, finished))
                    continue
                todo.append(job)
            for job, result in self._execute(todo):
                rows[job.student] = self._told(self._record(writer, job, result))
        return rows_unknown + [rows[s] for s in students]

    def _told(self, row: Row) -> Row:
        if self.options.on_row is not None:
            self.options.on_row(row)
        return row

    def _ensure_lab_registered(self, writer: GradebookWriter) -> None:
        from nbgrader.api import MissingEntry

        try:
            writer.gradebook.find_assignment(self.lab.name)
        except MissingEntry:
            from .release import release_lab

            release_lab(self.course, self.lab.name)

    def _record(self, writer: GradebookWriter, job: GradingJob, result: GradingResult) -> Row:
        previous = self._load(self._recorded_path(job.student))
        changed = {key for key, digest in result.answers.items()
                   if previous is not None and previous.answers.get(key, digest) != digest}
        # what a person gave for an answer that has changed is cleared: log it first, so
        # that no kill at any moment loses it (a run killed before the log is complete
        # finds the grade still there and logs it again; the log keeps one entry)
        log = self.state / "cleared-manual-grades.jsonl"
        logged = _read_jsonl(log)
        seen = {(e.get("student"), e.get("cell"), e.get("answer")) for e in logged}
        for entry in writer.manual_work(self.lab.name, job.student, changed):
            entry.update(student=job.student, lab=self.lab.name, answer=result.answers[entry["cell"]])
            if (job.student, entry["cell"], entry["answer"]) not in seen:
                _append_jsonl(log, entry)
                logged.append(entry)
        writer.record(result, timestamp=read_timestamp(Path(job.submission_dir)), changed=changed)
        # tell the instructor (again, if a crash cut the run that first cleared them)
        told = {(e.get("student"), e.get("cell"), e.get("answer")) for e in logged}
        redo = sorted(key for key in changed if (job.student, key, result.answers[key]) in told)
        if not result.retry:  # a grader failure is graded again on the next run
            atomic_write(self._recorded_path(job.student), result.to_json())
        message = result.message
        if redo:
            cells = ", ".join(key.split("/", 1)[1] for key in redo)
            message = "; ".join(filter(None, [message, f"answer changed since graded by hand: {cells} "
                                                       f"(old grade kept in {log.name}); grade it again"]))
        return Row(result.student, result.score, result.max_score, result.status, message, result.seconds,
                   result.manual_pending, len(result.notes), result.retry)

    def _slurm(self):
        from .slurm import SlurmBackend, SlurmOptions, slurm_available

        ok, why = slurm_available()
        if not ok:
            raise CourseError(f"cannot grade on Slurm: {why}")
        return SlurmBackend(self.state, self.lab.name, self.options.slurm or SlurmOptions(),
                            progress=self.options.progress)

    def _execute(self, jobs: list[GradingJob]) -> Iterable[tuple[GradingJob, GradingResult]]:
        """Grade ``jobs`` where the backend says, yielding each result as it comes."""
        if self.options.backend == "slurm":
            yield from self._slurm().run(jobs, task_seconds=self.limits.timeout * len(self.lab.notebooks))
        else:
            yield from self._execute_locally(jobs)

    def _execute_locally(self, jobs: list[GradingJob]) -> Iterable[tuple[GradingJob, GradingResult]]:
        """Grade ``jobs`` in a pool of worker processes, yielding each result as it comes.

        Student code never runs in the coordinator.  If a worker process dies (killed
        from outside, or by the code it was grading), the pool is rebuilt and the jobs
        without a result go again; a job that was running when workers died twice is
        reported as an error rather than retried forever.
        """
        if not jobs:
            return
        workers = max(1, min(self.options.workers or os.cpu_count() or 1, len(jobs)))
        bar = _progress(len(jobs), self.lab.name, self.options.progress)
        # fork: workers start with everything already imported.  They fork from a
        # coordinator whose gradebook connection they never touch (a forked worker
        # leaves through os._exit, so no finalizer closes it either).
        preload()
        if self.options.trusted_checks:
            preload_lab(self.lab)
        deaths: Counter[str] = Counter()
        pending = list(jobs)
        try:
            while pending:
                with ProcessPoolExecutor(max_workers=min(workers, len(pending)), initializer=worker_init,
                                         mp_context=mp.get_context("fork")) as pool:
                    futures = {pool.submit(grade_submission, job): job for job in pending}
                    pending = []
                    for future in as_completed(futures):
                        job = futures[future]
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            started = started_marker(job)
                            if started.exists():  # it was being graded when its worker died
                                deaths[job.student] += 1
                                started.unlink(missing_ok=True)
                            if deaths[job.student] >= 2:
                                result = _crashed(job, "the grading worker died twice while grading this "
                                                  "submission", retry=False)
                            else:
                                pending.append(job)
                                continue
                        except Exception as exc:  # pickling trouble or a bug: report, retry next run
                            result = _crashed(job, f"{type(exc).__name__}: {exc}")
                        yield job, result
                        bar.update(1)
        finally:
            bar.close()


@contextlib.contextmanager
def pid_lock(path: Path, busy: Callable[[str], str]):
    """Hold an exclusive lock on ``path``, our pid written in it; else CourseError(busy(their pid)).

    The kernel releases the lock when its holder dies, however it dies.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise CourseError(busy(lock.read().strip() or "?")) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def reap_leftovers(scratch_root: Path) -> int:
    """Kill processes a killed run left working in ``scratch_root``; remove orphaned cgroups."""
    import psutil

    from .limits import remove_orphaned_cgroups

    root = str(scratch_root.resolve())
    killed = 0
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            where = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            if root in where and proc.pid != os.getpid():
                proc.kill()
                killed += 1
        except psutil.Error:
            pass
    remove_orphaned_cgroups()
    return killed


def sandbox_readonly_paths() -> list[str]:
    """Code the kernels import from outside the Python environment (editable installs such as ``rai``)."""
    import importlib.util

    paths = []
    for package in ("rai",):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        location = Path(list(spec.submodule_search_locations)[0]).resolve()
        if not str(location).startswith(str(Path(sys.prefix).resolve())):
            paths.append(str(location))
    return paths


def _read_jsonl(path: Path) -> list[dict]:
    """The entries of a JSON-lines log; a line cut short by a crash is skipped."""
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass
    return entries


def _append_jsonl(path: Path, entry: dict) -> None:
    """Append one line durably; a line a crash cut short stays on a line of its own."""
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _crashed(job: GradingJob, why: str, retry: bool = True) -> GradingResult:
    return GradingResult(student=job.student, lab=job.lab, digest=job.digest, status="error", retry=retry,
                         message=f"grading worker failed: {why}".splitlines()[0])


def _progress(total: int, lab: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"grading {lab}", unit="submission", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def grade_lab(course: Course, lab_name: str, options: GradeOptions | None = None) -> list[Row]:
    return Coordinator(course, course.lab(lab_name), options or GradeOptions()).run()


def format_table(rows: list[Row]) -> str:
    from tabulate import tabulate

    table = [[r.student, f"{r.score:g}", f"{r.max_score:g}", r.status_line] for r in rows]
    return tabulate(table, headers=["student", "score", "max", "status"], tablefmt="simple")
