"""Every version a student hands in, kept on disk before anything grades it.

Both of the student's paths end here: a notebook uploaded to ``autograder
serve`` and a submission landing in nbgrader's exchange (``autograder watch``)
become an *attempt*, written in full and renamed into place before it is queued,
so a service killed at any moment loses nothing: pending attempts are graded
when it starts again.  The layout, one directory per attempt::

    .autograder/attempts/LAB/STUDENT/ATTEMPT/
        attempt.json     what happened to it (status, score, message, times)
        files/           the notebook(s) as received, nbgrader's timestamp.txt
                         (and submission_secret.txt for an exchange submission)
        feedback/        the feedback HTML of this very attempt, once graded

An attempt's id starts with its UTC arrival time, so ids sort by arrival; the
rest is random (an upload: 64 bits, so an id cannot be guessed) or derived from
the exchange entry's name (ingesting the same entry twice finds the attempt
already there).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .course import Course, CourseError
from .worker import atomic_write

ATTEMPTS_DIR = "attempts"
PENDING = "pending"      # stored, waiting for a grader
GRADING = "grading"      # handed to the grader (still so after a crash: graded again on restart)
GRADED = "graded"
ERROR = "error"          # nothing could be graded (the message says why); scored 0
SUPERSEDED = "superseded"  # a newer attempt arrived before this one was graded
WAITING = (PENDING, GRADING)
FINISHED = (GRADED, ERROR, SUPERSEDED)

# ids as nbgrader accepts them in the exchange (no '+', '*', '/', no leading dot)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_ATTEMPT_ID = re.compile(r"\d{8}T\d{6}\d{6}Z-[0-9a-f]{16}")
NBGRADER_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f %Z"


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise CourseError(f"not a valid {kind}: {value!r} (letters, digits, '_', '.', '@', '-'; at most 64)")
    return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_attempt_id(when: dt.datetime, seed: str | None = None) -> str:
    """``20261123T200101123456Z-<16 hex>``: random, or derived from ``seed`` (idempotent ingestion)."""
    tail = hashlib.sha256(seed.encode()).hexdigest()[:16] if seed is not None else secrets.token_hex(8)
    return f"{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S%f}Z-{tail}"


@dataclass
class Attempt:
    id: str
    student: str
    lab: str
    source: str                  # "upload" | "exchange" | "submitted"
    received: str                # ISO time it was stored
    submitted: str = ""          # ISO time the student handed it in (nbgrader's timestamp; else ``received``)
    status: str = PENDING
    score: float | None = None
    max_score: float | None = None
    message: str = ""
    manual_pending: float = 0.0  # points still to be graded by a person
    started: str | None = None   # ISO time a grader took it
    finished: str | None = None  # ISO time its score and feedback were available
    run_seconds: float | None = None  # how long executing the notebook took (the lab's own time)
    feedback: list[str] = field(default_factory=list)  # feedback HTML file names
    origin: str = ""             # the exchange entry or upload file name it came from
    tries: int = 0               # grader failures (not the student's) so far
    notes: list[str] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        return self.status in WAITING

    @property
    def latency(self) -> float | None:
        """Seconds from handing it in to its score and feedback being available."""
        if not self.finished:
            return None
        start = dt.datetime.fromisoformat(self.submitted or self.received)
        return (dt.datetime.fromisoformat(self.finished) - start).total_seconds()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Attempt":
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class AttemptStore:
    """The attempts of one course (see the module's docstring for the layout)."""

    def __init__(self, course: Course):
        self.course = course
        self.root = course.state / ATTEMPTS_DIR

    # -- paths ------------------------------------------------------------------
    def path(self, attempt: Attempt) -> Path:
        return self.root / attempt.lab / attempt.student / attempt.id

    def files(self, attempt: Attempt) -> Path:
        return self.path(attempt) / "files"

    def feedback_dir(self, attempt: Attempt) -> Path:
        return self.path(attempt) / "feedback"

    # -- writing ----------------------------------------------------------------
    def add(self, student: str, lab: str, files: dict[str, bytes], source: str, *,
            timestamp: dt.datetime | None = None, seed: str | None = None, origin: str = "") -> Attempt:
        """Store a new attempt (all of it, or nothing) and return it, status ``pending``.

        ``files`` maps file names (no directories) to their bytes; nbgrader's
        ``timestamp.txt`` is written from ``timestamp`` unless given.  With
        ``seed`` the id is derived from it and adding the same seed again
        returns the attempt already stored.
        """
        check_id("student id", student)
        self.course.lab(lab)  # a lab of this course, or a CourseError naming the labs
        when = timestamp or utcnow()
        attempt = Attempt(id=new_attempt_id(when, seed), student=student, lab=lab, source=source,
                          received=utcnow().isoformat(), submitted=when.astimezone(dt.timezone.utc).isoformat(),
                          origin=origin)
        final = self.path(attempt)
        if seed is not None:
            for existing in final.parent.glob(f"*-{attempt.id.rsplit('-', 1)[1]}/attempt.json"):
                return self.load(existing.parent)
        # queued first: a marker whose attempt never arrived is dropped by waiting(), while an
        # attempt without its marker would never be graded
        self._enqueue(attempt)
        incoming = self.root / ".incoming" / attempt.id
        shutil.rmtree(incoming, ignore_errors=True)
        (incoming / "files").mkdir(parents=True)
        files = dict(files)
        files.setdefault("timestamp.txt", when.astimezone(dt.timezone.utc).strftime(NBGRADER_TIMESTAMP).encode())
        for name, data in files.items():
            if Path(name).name != name or name.startswith("."):
                raise CourseError(f"not a plain file name: {name!r}")
            _write_synced(incoming / "files" / name, data)
        _write_synced(incoming / "attempt.json", attempt.to_json().encode())
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(incoming, final)
        except OSError:
            shutil.rmtree(incoming, ignore_errors=True)
            if (final / "attempt.json").is_file():  # another process stored the same seed first
                return self.load(final)
            raise
        _fsync_dir(final.parent)
        return attempt

    def save(self, attempt: Attempt) -> None:
        atomic_write(self.path(attempt) / "attempt.json", attempt.to_json())
        if attempt.waiting:
            self._enqueue(attempt)
        else:
            (self.root / ".queue" / attempt.id).unlink(missing_ok=True)

    def _enqueue(self, attempt: Attempt) -> None:
        marker = self.root / ".queue" / attempt.id
        if not marker.exists():
            atomic_write(marker, f"{attempt.lab}/{attempt.student}/{attempt.id}")

    # -- reading ----------------------------------------------------------------
    def load(self, path: Path) -> Attempt:
        return Attempt.from_json((Path(path) / "attempt.json").read_text(encoding="utf-8"))

    def find(self, attempt_id: str) -> Attempt | None:
        """The attempt with this id, or None (ids that are not ids find nothing)."""
        if not isinstance(attempt_id, str) or not _ATTEMPT_ID.fullmatch(attempt_id):
            return None
        for path in self.root.glob(f"*/*/{attempt_id}"):
            try:
                return self.load(path)
            except (OSError, ValueError, TypeError):
                return None
        return None

    def all(self, lab: str | None = None, student: str | None = None) -> list[Attempt]:
        """Attempts in arrival order (oldest first), optionally of one lab and/or student."""
        pattern = f"{lab or '*'}/{student or '*'}/*/attempt.json"
        found = []
        for path in self.root.glob(pattern):
            try:
                found.append(self.load(path.parent))
            except (OSError, ValueError, TypeError):
                continue  # a file being replaced: seen on the next look
        return sorted(found, key=lambda a: a.id)

    def waiting(self) -> list[Attempt]:
        """Attempts still to be graded, oldest first (read from the queue, not from every attempt)."""
        found = []
        for marker in sorted((self.root / ".queue").glob("*")):
            if marker.name.startswith("."):
                continue
            try:
                attempt = self.load(self.root / marker.read_text(encoding="utf-8").strip())
            except (OSError, ValueError, TypeError):
                # its attempt was never stored (a crash in add) or is being replaced: look again later
                with contextlib.suppress(OSError):
                    if time.time() - marker.stat().st_mtime > 60:
                        marker.unlink()
                continue
            if attempt.waiting:
                found.append(attempt)
            else:
                marker.unlink(missing_ok=True)
        return found

    def latest(self, lab: str) -> dict[str, Attempt]:
        """Each student's newest attempt of ``lab``."""
        return {a.student: a for a in self.all(lab=lab)}


def read_files(directory: Path, names: Iterable[str], limit: int) -> dict[str, bytes]:
    """Regular files of ``directory`` with these names (symlinks ignored), at most ``limit`` bytes in all."""
    files, used = {}, 0
    for name in names:
        path = Path(directory) / name
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        if used + size > limit:
            raise CourseError(f"{directory}: more than {limit // 2**20} MiB in the submission")
        used += size
        files[name] = path.read_bytes()
    return files


def iter_dirs(path: Path) -> Iterator[Path]:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            yield Path(entry.path)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
