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

import datetime as dt
import warnings
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from .worker import GradingResult


class GradebookWriter:
    """Open the gradebook once and record many results into it."""

    def __init__(self, db_url: str, course_id: str | None = None):
        self.gradebook = Gradebook(db_url, course_id) if course_id else Gradebook(db_url)

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
            self._record(result, timestamp, changed)

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
