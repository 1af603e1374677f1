"""``autograder watch``: grade each submission as it arrives.

The grading loop turns every new version a student hands in into an attempt
(:mod:`autograder.attempts`) and grades the attempts waiting, oldest first:

1. **ingest**: a new entry in nbgrader's exchange (``EXCHANGE/COURSE/inbound/
   STUDENT+LAB+TIMESTAMP+RANDOM``, what ``nbgrader submit`` writes), or a
   changed ``submitted/STUDENT/LAB`` (what ``nbgrader collect`` or an instructor
   writes), or an upload stored by ``autograder serve``;
2. **install** the newest waiting attempt of each student into
   ``submitted/STUDENT/LAB`` (byte for byte, with its ``timestamp.txt``), so
   nbgrader's formgrader and our batch commands see the same submission;
3. **grade** them with the same coordinator, workers and sandbox as
   ``autograder grade`` (a version whose digest was graded before is not run
   again);
4. **feedback**: nbgrader's feedback HTML without hidden tests, kept with the
   attempt and, for an exchange submission, released where ``nbgrader
   fetch_feedback`` looks for it.

Restarts: attempts are stored before they are graded and their status is
written atomically, so a loop killed at any moment finds on restart what
arrived meanwhile (exchange entries are ingested by name, once) and what it
was grading (graded again, or recorded from the finished result without
running again).  One loop per course: a second one is refused.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from .attempts import (ERROR, GRADED, GRADING, PENDING, SUPERSEDED, Attempt, AttemptStore, iter_dirs, read_files,
                       utcnow)
from .coordinator import Coordinator, GradeOptions, Row, _tree_digest, pid_lock
from .course import COURSE_ID, Course, CourseError
from .record import read_timestamp
from .worker import MAX_SUBMISSION_BYTES, atomic_write

SETTLE_SECONDS = 2.0  # an exchange entry without nbgrader's submission_secret.txt is taken once this old
MAX_TRIES = 3         # grader failures (not the student's) before an attempt is reported as an error
EXTRA_FILES = ("timestamp.txt", "submission_secret.txt")


def _lock_path(course: Course) -> Path:
    return course.state / "intake" / "lock"


def exchange_root(course: Course) -> Path:
    """Where nbgrader's exchange keeps this course (``Exchange.root`` / course id)."""
    return Path(course.nbgrader_config().Exchange.root) / COURSE_ID


class GradingLoop:
    """Ingest, install, grade and give feedback until stopped (see the module docstring)."""

    def __init__(self, course: Course, workers: int | None = None, poll: float = 0.5, *,
                 exchange: bool = True, submitted: bool = True, sandbox: bool = True,
                 log: Callable[[str], None] | None = None):
        self.course = course
        self.store = AttemptStore(course)
        self.workers = workers
        self.poll = poll
        self.use_exchange = exchange
        self.use_submitted = submitted
        self.sandbox = sandbox
        self.log = log or _print
        self.exchange = exchange_root(course)
        self.state = course.state / "intake"
        self._skipped: set[str] = set()   # exchange entries reported once as unusable
        self._ingested: set[str] = set()  # exchange entries already stored (cache of the store)
        self._signatures: dict[str, tuple] = {}  # submitted/STUDENT/LAB -> stat signature last seen
        self._known: dict[str, str] | None = None

    # -- one loop per course ------------------------------------------------------
    def exclusive(self):
        return pid_lock(_lock_path(self.course), lambda pid: (
            f"a grading loop (`autograder watch` or `serve`) already runs on this course (pid {pid})"))

    def run(self, stop: threading.Event | None = None, until_idle: bool = False) -> None:
        """Loop until ``stop`` is set (or, with ``until_idle``, until nothing is waiting)."""
        stop = stop or threading.Event()
        with self.exclusive():
            self.log(f"watching {self._sources()} of {self.course.root}")
            while not stop.is_set():
                try:
                    busy = self.step()
                except Exception:  # noqa: BLE001 -- a service: say what broke, keep serving the others
                    self.log("the grading loop failed; trying again in 5 s:\n" + traceback.format_exc())
                    stop.wait(max(self.poll, 5))
                    continue
                if not busy:
                    if until_idle:
                        return
                    stop.wait(self.poll)

    def _sources(self) -> str:
        where = ["uploads"]
        if self.use_exchange:
            where.append(f"the exchange ({self.exchange / 'inbound'})")
        if self.use_submitted:
            where.append(f"{self.course.submitted}")
        return ", ".join(where)

    def step(self) -> bool:
        """Ingest what arrived, grade one lab's waiting attempts; False when there was nothing to do."""
        if self.use_exchange:
            self.ingest_exchange()
        if self.use_submitted:
            self.ingest_submitted()
        waiting = self.store.waiting()
        if not waiting:
            return False
        self.grade(self.next_batch(waiting))
        return True

    # -- 1. ingest ------------------------------------------------------------------
    def ingest_exchange(self) -> list[Attempt]:
        from nbgrader.utils import parse_utc

        inbound = self.exchange / "inbound"
        labs = set(self.course.lab_names())
        added = []
        for entry in iter_dirs(inbound):
            name = entry.name
            if name in self._ingested or name in self._skipped:
                continue
            parts = name.rsplit("+", 3)
            if len(parts) < 3 or parts[1] not in labs:
                self._skip(name, f"not a submission to a lab of this course ({', '.join(sorted(labs))})")
                continue
            student, lab_name, stamp = parts[0], parts[1], parts[2]
            if not (entry / "submission_secret.txt").is_file():
                # nbgrader writes the secret after the notebooks; older versions write none
                try:
                    if time.time() - entry.stat().st_mtime < SETTLE_SECONDS:
                        continue
                except OSError:
                    continue
            try:
                attempt = self._store_folder(entry, student, lab_name, "exchange", parse_utc(stamp),
                                             seed=f"exchange:{name}", origin=name)
            except (CourseError, ValueError, OverflowError, OSError) as exc:
                self._skip(name, str(exc))
                continue
            self._ingested.add(name)
            if attempt.status == PENDING and attempt.started is None:
                added.append(attempt)
                self.log(f"{attempt.student} {attempt.lab}: submitted through the exchange ({name})")
        return added

    def _store_folder(self, folder: Path, student: str, lab_name: str, source: str, timestamp, *,
                      seed: str, origin: str) -> Attempt:
        """The lab's notebooks and nbgrader's records in ``folder``, stored as an attempt (once per seed)."""
        lab = self.course.lab(lab_name)
        files = read_files(folder, [*lab.notebooks, *EXTRA_FILES], MAX_SUBMISSION_BYTES)
        return self.store.add(student, lab_name, files, source, timestamp=timestamp, seed=seed, origin=origin)

    def _skip(self, name: str, why: str) -> None:
        self._skipped.add(name)
        self.log(f"exchange entry {name!r} ignored: {why}")

    def ingest_submitted(self) -> list[Attempt]:
        """A ``submitted/STUDENT/LAB`` that changed since the loop last saw or wrote it becomes an attempt."""
        known = self._known_submitted()
        added = []
        students = list(iter_dirs(self.course.submitted))
        for lab_name in self.course.lab_names():
            for student_dir in students:
                path = student_dir / lab_name
                key = f"{student_dir.name}/{lab_name}"
                signature = _signature(path)
                if signature is None or self._signatures.get(key) == signature:
                    continue
                digest = _tree_digest(path).hexdigest()
                self._signatures[key] = signature
                if known.get(key) == digest:
                    continue
                if key not in known and self._graded_since_changed(path, student_dir.name, lab_name):
                    self._remember_submitted(key, digest)  # a batch graded it: not a new version
                    continue
                try:
                    attempt = self._store_folder(path, student_dir.name, lab_name, "submitted", read_timestamp(path),
                                                 seed=f"submitted:{key}:{digest}", origin=str(path))
                except CourseError as exc:
                    self.log(f"{path} ignored: {exc}")
                    continue
                self._remember_submitted(key, digest)
                added.append(attempt)
                self.log(f"{attempt.student} {attempt.lab}: new version in {path}")
        return added

    def _graded_since_changed(self, path: Path, student: str, lab_name: str) -> bool:
        """``autograder grade`` recorded a result for this student after their files last changed."""
        recorded = self.course.state / lab_name / "recorded" / f"{student}.json"
        try:
            changed = max((e.stat(follow_symlinks=False).st_mtime for e in os.scandir(path)), default=0.0)
            return recorded.stat().st_mtime >= changed
        except OSError:
            return False

    def _known_submitted(self) -> dict[str, str]:
        """Digest of each ``submitted/STUDENT/LAB`` as last seen or written (read once: the loop alone writes it)."""
        if self._known is None:
            try:
                self._known = json.loads((self.state / "submitted.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._known = {}
        return self._known

    def _remember_submitted(self, key: str, digest: str) -> None:
        known = self._known_submitted()
        known[key] = digest
        atomic_write(self.state / "submitted.json", json.dumps(known, indent=1, sort_keys=True))

    # -- 2. choose and install -------------------------------------------------------
    def next_batch(self, waiting: list[Attempt]) -> list[Attempt]:
        """The newest waiting attempt of each student of one lab (the lab waiting longest).

        Older waiting attempts of the same student and lab are superseded: like
        ``nbgrader collect``, the newest version is the one graded.
        """
        newest: dict[tuple[str, str], Attempt] = {}
        for attempt in waiting:  # oldest first
            key = (attempt.lab, attempt.student)
            if key in newest:
                older = newest[key]
                older.status, older.finished = SUPERSEDED, utcnow().isoformat()
                older.message = f"a newer version (attempt {attempt.id}) arrived before this one was graded"
                self.store.save(older)
            newest[key] = attempt
        first = min(newest.values(), key=lambda a: a.id)
        return sorted((a for a in newest.values() if a.lab == first.lab), key=lambda a: a.id)

    def install(self, attempt: Attempt) -> None:
        """Make ``submitted/STUDENT/LAB`` this attempt's files (whole, by two renames)."""
        dest = self.course.submitted / attempt.student / attempt.lab
        dest.parent.mkdir(parents=True, exist_ok=True)
        incoming, old = dest.parent / f".{attempt.lab}.incoming", dest.parent / f".{attempt.lab}.old"
        for leftover in (incoming, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(self.store.files(attempt), incoming)
        if dest.exists():
            os.rename(dest, old)
        os.rename(incoming, dest)
        shutil.rmtree(old, ignore_errors=True)
        key = f"{attempt.student}/{attempt.lab}"
        self._remember_submitted(key, _tree_digest(dest).hexdigest())
        self._signatures[key] = _signature(dest)

    # -- 3. grade ---------------------------------------------------------------------
    def grade(self, batch: list[Attempt]) -> None:
        lab = self.course.lab(batch[0].lab)
        by_student = {a.student: a for a in batch}
        options = GradeOptions(students=sorted(by_student), workers=self.workers, progress=False,
                               sandbox=self.sandbox, on_row=lambda row: self.finish(by_student[row.student], row))
        coordinator = Coordinator(self.course, lab, options)
        try:
            with coordinator.exclusive():
                for attempt in batch:
                    self.install(attempt)
                    # the first hand-over stays: autograded files written since then are this attempt's
                    attempt.status, attempt.started = GRADING, attempt.started or utcnow().isoformat()
                    self.store.save(attempt)
                self.log(f"grading {lab.name}: {', '.join(sorted(by_student))}")
                coordinator.run_locked()
        except CourseError as exc:  # e.g. an instructor's `autograder grade` holds the lab: wait for it
            self.log(f"{lab.name}: {exc}; trying again in {max(self.poll, 5):g} s")
            time.sleep(max(self.poll, 5))

    # -- 4. feedback ------------------------------------------------------------------
    def finish(self, attempt: Attempt, row: Row) -> None:
        """Record what grading ``attempt`` gave: its feedback, score and status."""
        if row.retry:
            attempt.tries += 1
            if attempt.tries < MAX_TRIES:
                attempt.status = PENDING
                self.store.save(attempt)
                self.log(f"{attempt.student} {attempt.lab}: the grader failed ({row.message}); trying again")
                return
        attempt.feedback = self.feedback(attempt, fresh_only=row.status != "unchanged")
        attempt.status = GRADED if row.status in ("graded", "unchanged") else ERROR
        attempt.score, attempt.max_score = row.score, row.max_score
        attempt.manual_pending = row.manual_pending
        attempt.message = row.message
        if row.status == "unchanged":
            attempt.message = "not run again: the same notebook as the last version graded (its score stands)"
        attempt.run_seconds = row.seconds.get("cells") if row.seconds else None
        attempt.finished = utcnow().isoformat()
        self.store.save(attempt)
        manual = f" (+{row.manual_pending:g} by hand)" if row.manual_pending else ""
        self.log(f"{attempt.student} {attempt.lab}: {attempt.status} {row.score:g}/{row.max_score:g}{manual}"
                 f"{' -- ' + attempt.message if attempt.message else ''}; feedback {attempt.latency:.1f} s "
                 f"after it was handed in")

    def feedback(self, attempt: Attempt, fresh_only: bool = True) -> list[str]:
        """nbgrader's feedback HTML of this attempt: kept with it, and released to the exchange.

        ``fresh_only``: only from autograded notebooks written since this attempt was
        handed to the grader (not an earlier version's, when grading it failed).
        """
        from .feedback import generate_feedback

        lab = self.course.lab(attempt.lab)
        graded = [self.course.autograded / attempt.student / lab.name / nb for nb in lab.notebooks]
        started = dt.datetime.fromisoformat(attempt.started).timestamp() if attempt.started else 0.0
        if not _newer(graded, [], since=started - 1 if fresh_only else 0.0):
            return []  # nothing ran (the message says why)
        written = [self.course.feedback / attempt.student / lab.name / (Path(nb).stem + ".html")
                   for nb in lab.notebooks]
        if not _newer(written, graded):  # a version not run again keeps the feedback it has (1 s saved)
            try:
                written = [Path(p) for p in generate_feedback(self.course, lab.name, attempt.student)]
            except Exception as exc:  # noqa: BLE001 -- the score stands without feedback; say why
                attempt.notes.append(f"no feedback: {type(exc).__name__}: {exc}".splitlines()[0])
                self.log(f"{attempt.student} {attempt.lab}: {attempt.notes[-1]}")
                return []
        out = self.store.feedback_dir(attempt)
        out.mkdir(parents=True, exist_ok=True)
        for html in written:
            atomic_write(out / html.name, html.read_bytes())
        secret = self.store.files(attempt) / "submission_secret.txt"
        if attempt.source == "exchange" and secret.is_file():
            self.release_feedback(secret.read_text(encoding="utf-8"), written)
        return [html.name for html in written]

    def release_feedback(self, secret: str, htmls: list[Path]) -> None:
        """Put feedback where ``nbgrader fetch_feedback`` looks: ``feedback/<notebook_hash>.html``.

        nbgrader's ``release_feedback`` does this from ``feedback/STUDENT/LAB``,
        which holds the secret of the version graded last; an attempt that was
        not run again (the same notebook) has a secret of its own, so the name is
        computed here with nbgrader's own ``notebook_hash``.
        """
        from nbgrader.utils import notebook_hash

        outbound = self.exchange / "feedback"
        outbound.mkdir(mode=0o755, parents=True, exist_ok=True)
        for html in htmls:
            checksum = notebook_hash(secret=secret, notebook_id=html.stem)
            tmp = outbound / f".{checksum}.tmp"
            shutil.copyfile(html, tmp)
            os.chmod(tmp, 0o644)  # students read it with their own user id
            os.replace(tmp, outbound / f"{checksum}.html")


def loop_pid(course: Course) -> int | None:
    """The pid of the grading loop running on ``course`` (``watch`` or ``serve``'s), or None."""
    import psutil

    try:
        pid = int(_lock_path(course).read_text().strip())
        return pid if "autograder" in " ".join(psutil.Process(pid).cmdline()) else None
    except (OSError, ValueError, psutil.Error):
        return None


def _newer(outputs: list[Path], inputs: list[Path], since: float = 0.0) -> bool:
    """Every output exists and was written after every input (and after ``since``)."""
    try:
        return min(p.stat().st_mtime for p in outputs) >= max([since, *(p.stat().st_mtime for p in inputs)])
    except (OSError, ValueError):
        return False


def _signature(path: Path) -> tuple | None:
    """Names, sizes and modification times of the files directly in ``path`` (None: not a directory)."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        return tuple((e.name, e.stat(follow_symlinks=False).st_size, e.stat(follow_symlinks=False).st_mtime_ns)
                     for e in entries)
    except (NotADirectoryError, FileNotFoundError):
        return None


def _print(line: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {line}", file=sys.stdout, flush=True)
