"""Small nbgrader courses built in code, for tests and benchmarks.

The toy lab has everything a real lab has -- a ``parameters`` cell, answer
cells, test cells with visible and hidden tests, a manually graded answer --
but runs in about a second.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.demo import student_version

TOY_LAB = "toy"
TOY_NOTEBOOK = "toy.ipynb"


def _meta(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id,
            "schema_version": 3, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def toy_source_notebook(extra_cells: list | None = None) -> nbformat.NotebookNode:
    dedent = textwrap.dedent
    cells = [
        new_markdown_cell("# Toy lab\nSquares and means.", metadata=_meta("intro", locked=True)),
        new_code_cell("scale = 1\nn = 10", metadata={**_meta("params", locked=True), "tags": ["parameters"]}),
        new_code_cell(dedent("""\
            def square(x):
                ### BEGIN SOLUTION
                return x * x
                ### END SOLUTION"""), metadata=_meta("square", solution=True)),
        new_code_cell(dedent("""\
            assert square(3) == 9
            ### BEGIN HIDDEN TESTS
            assert square(-4) == 16
            ### END HIDDEN TESTS"""), metadata=_meta("test_square", grade=True, locked=True, points=2)),
        new_code_cell(dedent("""\
            def mean(xs):
                ### BEGIN SOLUTION
                return sum(xs) / len(xs)
                ### END SOLUTION"""), metadata=_meta("mean", solution=True)),
        new_code_cell(dedent("""\
            assert mean([1, 2, 3]) == 2
            ### BEGIN HIDDEN TESTS
            assert abs(mean([0.5, 1.5]) - 1.0) < 1e-12
            ### END HIDDEN TESTS"""), metadata=_meta("test_mean", grade=True, locked=True, points=3)),
        new_code_cell(dedent("""\
            ### BEGIN SOLUTION
            total = scale * sum(square(i) for i in range(n))
            ### END SOLUTION"""), metadata=_meta("total", solution=True)),
        new_code_cell(dedent("""\
            assert isinstance(total, int)
            ### BEGIN HIDDEN TESTS
            assert total == scale * sum(i * i for i in range(n))
            ### END HIDDEN TESTS"""), metadata=_meta("test_total", grade=True, locked=True, points=1)),
        new_markdown_cell(dedent("""\
            Why is the mean sensitive to outliers?
            ### BEGIN SOLUTION
            Because every value enters the sum with the same weight.
            ### END SOLUTION"""), metadata=_meta("why_mean", grade=True, solution=True, points=2)),
    ]
    nb = new_notebook(cells=cells + list(extra_cells or []))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


TOY_LAB_TOML = """\
[lab]
title = "Toy lab"
notebooks = ["toy.ipynb"]

[grading]
timeout = 120
cell_timeout = 60

[profiles.grading]
n = 5
"""


def make_course(root: Path, source_nb: nbformat.NotebookNode | None = None, lab_toml: str = TOY_LAB_TOML,
                lab: str = TOY_LAB) -> Path:
    """A course directory with one lab in ``solutions/`` (not yet released)."""
    root = Path(root)
    src = root / "solutions" / lab
    src.mkdir(parents=True, exist_ok=True)
    nbformat.write(source_nb or toy_source_notebook(), src / TOY_NOTEBOOK)
    (src / "lab.toml").write_text(lab_toml)
    (root / "nbgrader_config.py").write_text(
        "from autograder.course import configure_nbgrader\n"
        "import os\nconfigure_nbgrader(get_config(), os.path.dirname(os.path.abspath(__file__)))\n"
    )
    return root


def submit(root: Path, student: str, nb: nbformat.NotebookNode | bytes, lab: str = TOY_LAB,
           name: str = TOY_NOTEBOOK, timestamp: str | None = "2026-11-20 10:00:00.000000 UTC") -> Path:
    """Place a submission where nbgrader's collect would: submitted/STUDENT/LAB/."""
    dest = Path(root) / "submitted" / student / lab
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if isinstance(nb, bytes):
        (dest / name).write_bytes(nb)
    else:
        nbformat.write(nb, dest / name)
    if timestamp:
        (dest / "timestamp.txt").write_text(timestamp)
    return dest


def fill_answers(release_nb, source_nb, answers: dict[str, str] | None = None, solved: set[str] | None = None):
    """A student's notebook: the release with ``solved`` answers from the source and ``answers`` as given."""
    return student_version(release_nb, source_nb, solved=solved, answers=answers)


def released_course(root: Path):
    """A toy course, released: (root, the released notebook, the source notebook)."""
    from conftest import run_cli

    make_course(root)
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    return root, nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4), toy_source_notebook()
