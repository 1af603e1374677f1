"""Step 5 -- record: store results in nbgrader's gradebook through nbgrader's API.

Only the coordinator calls this (one writer).  The semantics are those of
nbgrader's ``SaveAutoGrades``: the autograder writes ``auto_score`` and never
``manual_score``, so a grade or comment given in formgrader survives a regrade
(nbgrader flags it for review) -- unless the answer it was given for changed:
then it is cleared, and the coordinator tells the instructor and keeps it in a log.  A grade cell with no score in the result --
its notebook was missing or could not run -- scores 0, as in
``nbgrader autograde``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
import warnings
from pathlib import Path

from nbgrader.api import Gradebook, InvalidEntry, MissingEntry

from .course import CourseError
from .worker import GradingResult

# several coordinators (one per lab) may write one gradebook server at once:
# a write that collides with another's (the same new student added by both) is retried
WRITE_ATTEMPTS = 6
SCHEMA_LOCK_KEY = 0x6E62677264   # "nbgrd": the advisory lock taken while nbgrader creates its tables


@contextlib.contextmanager
def _schema_lock(db_url: str):
    """On PostgreSQL, one process at a time creates nbgrader's tables (two at once collide)."""
    if not db_url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def open_gradebook(db_url: str, course_id: str | None = None) -> Gradebook:
    """nbgrader's Gradebook on any SQLAlchemy URL, safe when several processes open a new one at once."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        with _schema_lock(db_url):
            return Gradebook(db_url, course_id) if course_id else Gradebook(db_url)
    except (DBAPIError, ArgumentError, ImportError) as exc:
        why = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise CourseError(f"cannot open the gradebook {shown_url(db_url)}: {why[0] if why else type(exc).__name__}"
                          ) from None


def shown_url(db_url: str) -> str:
    """A database URL fit to print: the password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "(an unreadable database URL)"


class GradebookWriter:
    """Open the gradebook once and record many results into it."""

    def __init__(self, db_url: str, course_id: str | None = None):
        self.gradebook = open_gradebook(db_url, course_id)

    def close(self) -> None:
        self.gradebook.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def has_submission(self, lab: str, student: str) -> bool:
        try:
            self.gradebook.find_submission(lab, student)
            return True
        except MissingEntry:
            return False

    def manual_work(self, lab: str, student: str, cells: set[str]) -> list[dict]:
        """What a person gave (manual score, extra credit, comment) for these "notebook/grade_id" cells."""
        if not cells:
            return []
        try:
            submission = self.gradebook.find_submission(lab, student)
        except MissingEntry:
            return []
        found: dict[str, dict] = {}
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                key = f"{notebook.name}/{grade.name}"
                if key in cells and (grade.manual_score is not None or grade.extra_credit):
                    found.setdefault(key, {}).update(manual_score=grade.manual_score, extra_credit=grade.extra_credit)
            for comment in notebook.comments:
                key = f"{notebook.name}/{comment.name}"
                if key in cells and comment.manual_comment:
                    found.setdefault(key, {})["comment"] = comment.manual_comment
        return [{"cell": key, **what} for key, what in sorted(found.items())]

    def record(self, result: GradingResult, timestamp: dt.datetime | None = None,
               changed: set[str] = frozenset()) -> None:
        """Record ``result``; for the answers in ``changed`` ("notebook/grade_id"), clear what a
        person gave (see :meth:`manual_work`): it was for another answer."""
        with warnings.catch_warnings():
            # nbgrader 0.9 builds its rows in a way SQLAlchemy 2 warns about (harmless)
            warnings.filterwarnings("ignore", message=".*not in session.*")
            self._retrying(lambda: self._record(result, timestamp, changed))

    def _retrying(self, write):
        """Run one transaction; if another writer's transaction got in its way, roll back and redo it."""
        from sqlalchemy.exc import DBAPIError

        for attempt in range(WRITE_ATTEMPTS):
            try:
                return write()
            except (InvalidEntry, DBAPIError):
                self.gradebook.db.rollback()
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def _record(self, result: GradingResult, timestamp: dt.datetime | None, changed: set[str]) -> None:
        gb = self.gradebook
        gb.update_or_create_student(result.student)
        kwargs = {"timestamp": timestamp} if timestamp else {}
        submission = gb.update_or_create_submission(result.lab, result.student, **kwargs)
        by_cell = {(s["notebook"], s["grade_id"]): s for s in result.scores}
        blank = set(result.no_response)
        ran = {s["notebook"] for s in result.scores} - set(result.failed_notebooks)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if f"{notebook.name}/{grade.name}" in changed:
                    grade.manual_score = None
                    grade.extra_credit = None
                score = by_cell.get((notebook.name, grade.name))
                auto = 0.0 if score is None else score["auto_score"]
                grade.auto_score = auto
                # as SaveAutoGrades: a person must look when there is a manual
                # grade already or when the autograder cannot decide
                grade.needs_manual_grade = grade.manual_score is not None or auto is None
            for comment in notebook.comments:
                if f"{notebook.name}/{comment.name}" in changed:
                    comment.manual_comment = None
                # a notebook that never ran counts as no response throughout
                answered = notebook.name in ran and f"{notebook.name}/{comment.name}" not in blank
                comment.auto_comment = None if answered else "No response."
        gb.db.commit()


def read_timestamp(submission_dir: Path) -> dt.datetime | None:
    """nbgrader's ``timestamp.txt`` of a submission, if it has a readable one."""
    from nbgrader.utils import parse_utc

    path = Path(submission_dir) / "timestamp.txt"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return parse_utc(path.read_text(encoding="utf-8", errors="replace").strip()[:100])
    except (ValueError, OverflowError):
        return None
