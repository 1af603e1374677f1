"""``autograder demo``: the whole course in one command.

Builds the book, releases every lab, grades a demo set of submissions for each
(the instructor's solution, the blank release, and a partial answer), writes
feedback and a grades CSV, and prints the grades and where the HTML is.  The
demo's instructor state lives in its own course directory (default
``_build/demo-course``) so it never mixes with a real class's gradebook.
"""
from __future__ import annotations

import copy
import shutil
import sys
import time
from pathlib import Path

import nbformat

from .assemble import grade_id, is_answer_cell
from .course import Course, default_db_url, find_project_root

DEMO_STUDENTS = ("demo-solution", "demo-blank", "demo-partial")


def solution_text(source: str) -> str:
    """An answer cell's source with nbgrader's solution markers removed."""
    return "\n".join(line for line in source.split("\n")
                     if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)


def student_version(release_nb, source_nb, solved: set[str] | None = None, answers: dict[str, str] | None = None):
    """A student's notebook: the release with the ``solved`` answers taken from the source."""
    nb = copy.deepcopy(release_nb)
    solutions = {grade_id(c): c.source for c in source_nb.cells if is_answer_cell(c)}
    for cell in nb.cells:
        gid = grade_id(cell)
        if solved and gid in solved and gid in solutions:
            cell.source = solution_text(solutions[gid])
        if answers and gid in answers:
            cell.source = answers[gid]
    return nb


def answer_ids(source_nb) -> list[str]:
    return [grade_id(c) for c in source_nb.cells if is_answer_cell(c)]


def make_demo_submissions(course: Course, lab_name: str) -> list[str]:
    """Write the demo students' submissions of ``lab_name`` into ``course.submitted``."""
    lab = course.lab(lab_name)
    for student in DEMO_STUDENTS:
        dest = course.submitted / student / lab.name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        (dest / "timestamp.txt").write_text(time.strftime("%Y-%m-%d %H:%M:%S.000000 UTC", time.gmtime()))
        for name in lab.notebooks:
            source = nbformat.read(lab.source_dir / name, as_version=4)
            release = nbformat.read(course.release / lab.name / name, as_version=4)
            ids = answer_ids(source)
            solved = {"demo-solution": set(ids), "demo-blank": set(), "demo-partial": set(ids[: len(ids) // 2])}
            nbformat.write(student_version(release, source, solved[student]), dest / name)
    return list(DEMO_STUDENTS)


def build_book_html(project: Path) -> tuple[Path, float]:
    """Build the Jupyter Book at the project root; return its index.html and the seconds it took.

    Pages run in parallel and are cached (``_build/.jupyter_cache``): a page whose code has not
    changed is not executed again.
    """
    from .book import build_book

    result = build_book(project, strict=False)
    if result.returncode != 0:
        raise RuntimeError(f"the book did not build (jupyter-book exited {result.returncode})")
    return result.html / "index.html", result.seconds


def run_demo(course_dir: Path | None = None, with_book: bool = True, workers: int | None = None) -> int:
    from .coordinator import GradeOptions, format_table, grade_lab
    from .export import export_grades
    from .feedback import generate_feedback
    from .release import release_lab

    project = find_project_root()
    if project is None:
        print("autograder demo: run it inside the course repository", file=sys.stderr)
        return 2
    root = Path(course_dir or project / "_build" / "demo-course")
    # its own SQLite gradebook, whatever AUTOGRADER_DB_URL says: a demo never writes a real class's
    course = Course(root, db_url=default_db_url(root))
    course.root.mkdir(parents=True, exist_ok=True)
    index = None
    if with_book:
        print("== building the book")
        index, seconds = build_book_html(project)
        print(f"book built in {seconds:.1f} s")
    summary = []
    for lab in course.lab_names():
        print(f"\n== {lab}: release, demo submissions, grading")
        for path in release_lab(course, lab):
            print(f"released {path}")
        make_demo_submissions(course, lab)
        rows = grade_lab(course, lab, GradeOptions(workers=workers, students=list(DEMO_STUDENTS), force=True))
        print(format_table(rows))
        feedback = generate_feedback(course, lab)
        summary.append((lab, rows, feedback))
    grades = export_grades(course, course.root / "grades.csv")
    print("\n== summary")
    for lab, rows, feedback in summary:
        for row in rows:
            print(f"{lab:24s} {row.student:16s} {row.score:6g} / {row.max_score:<6g} {row.status_line}")
        print(f"feedback: {course.feedback}/*/{lab}/")
    print(f"grades:   {grades}")
    print(f"gradebook: {course.root / 'gradebook.db'}")
    if index is not None:
        print(f"book:     {index}  (built in {seconds:.1f} s; open it in a browser)")
    return 0
