"""``autograder release LAB``: nbgrader's generate_assignment, on this course's layout."""
from __future__ import annotations

import contextlib
import io
import logging

from pathlib import Path

from .course import COURSE_ID, Course, CourseError


def nbgrader_api(course: Course):
    """nbgrader's own API object, configured for ``course``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = course.nbgrader_config()
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def _quiet(result: dict, what: str) -> dict:
    if not result.get("success"):
        log = (result.get("error") or "") + "\n" + (result.get("log") or "")
        raise CourseError(f"{what} failed:\n{log.strip()}")
    return result


def release_lab(course: Course, lab_name: str) -> list[str]:
    """Generate ``labs/LAB`` from ``solutions/LAB`` and register the lab in the gradebook.

    Returns the released notebook paths.
    """
    lab = course.lab(lab_name)
    api = nbgrader_api(course)
    # nbgrader logs at INFO to stderr; the API captures it into the result
    with contextlib.redirect_stderr(io.StringIO()):
        logging.getLogger("traitlets").setLevel(logging.WARNING)
        _quiet(api.generate_assignment(lab.name, force=True, create=True), f"releasing {lab.name}")
    released = [str(course.release / lab.name / nb) for nb in lab.notebooks]
    return released



def publish_lab(course: Course, lab_name: str) -> str:
    """Copy ``labs/LAB`` into nbgrader's exchange, where ``nbgrader fetch_assignment`` finds it.

    This is nbgrader's own ``release_assignment`` (into the exchange's
    ``outbound``), replacing an earlier publication of the lab.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    lab = course.lab(lab_name)
    config = course.nbgrader_config()
    config.ExchangeReleaseAssignment.force = True
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    with contextlib.redirect_stderr(io.StringIO()):
        _quiet(api.release_assignment(lab.name), f"publishing {lab.name} to nbgrader's exchange")
    return str(Path(config.Exchange.root) / COURSE_ID / "outbound" / lab.name)
