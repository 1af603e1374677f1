"""Each pipeline step alone, on notebooks built in memory (no kernel, no gradebook)."""
from __future__ import annotations

import json

import nbformat
import pytest

from autograder.assemble import assemble_submission, grading_template, read_submission
from autograder.errors import SubmissionError
from autograder.parameterize import inject_profile
from autograder.score import score_notebook, unanswered
from course_factory import toy_source_notebook
from autograder.demo import student_version


@pytest.fixture
def template():
    return grading_template(toy_source_notebook())


def gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def test_template_blanks_answers_but_keeps_hidden_tests(template):
    cells = {gid(c): c for c in template.cells}
    assert "BEGIN SOLUTION" not in cells["square"].source and "NotImplementedError" in cells["square"].source
    assert "square(-4) == 16" in cells["test_square"].source
    assert cells["why_mean"].source.endswith("YOUR ANSWER HERE") and "every value" not in cells["why_mean"].source
    assert unanswered(template) == ["square", "mean", "total", "why_mean"]


def test_assemble_takes_only_answer_sources_from_the_student(template):
    student = student_version(template, toy_source_notebook(), solved={"square"})
    for cell in student.cells:
        if gid(cell) == "test_square":
            cell.source = "pass"
            cell.metadata.nbgrader["points"] = 99
        if gid(cell) == "square":
            cell.metadata.nbgrader["points"] = 50  # metadata of an answer cell is not taken either
    student.cells.append(nbformat.v4.new_code_cell("print('extra')"))
    student.metadata["kernelspec"]["name"] = "evil"
    assembly = assemble_submission(template, student)
    cells = {gid(c): c for c in assembly.notebook.cells}
    assert cells["test_square"].source == {gid(c): c for c in template.cells}["test_square"].source
    assert cells["test_square"].metadata.nbgrader["points"] == 2
    assert "points" not in cells["square"].metadata.nbgrader
    assert "return x * x" in cells["square"].source
    assert assembly.notebook.metadata["kernelspec"]["name"] == "python3"
    assert len(assembly.notebook.cells) == len(template.cells)
    assert any("not graded" in note for note in assembly.notes)
    assert assembly.answered == ["square", "mean", "total", "why_mean"]


def test_duplicate_and_missing_answer_cells(template):
    student = student_version(template, toy_source_notebook(), answers={"square": "def square(x):\n    return 1"})
    first = next(c for c in student.cells if gid(c) == "square")
    twin = nbformat.from_dict(json.loads(json.dumps(first)))
    twin.source = "def square(x):\n    return x * x"
    student.cells.append(twin)
    student.cells = [c for c in student.cells if gid(c) != "mean"]
    assembly = assemble_submission(template, student)
    cells = {gid(c): c for c in assembly.notebook.cells}
    assert cells["square"].source.endswith("return 1")  # the first copy wins, as in nbgrader
    assert "NotImplementedError" in cells["mean"].source  # missing: graded as no response
    assert any("more than once" in n for n in assembly.notes)
    assert any("'mean' is missing" in n for n in assembly.notes)


@pytest.mark.parametrize("raw,cause", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
    (b"{", "not valid notebook JSON"),
    (b"[1, 2]", "not a notebook"),
    (json.dumps({"cells": [], "nbformat": 3}).encode(), "nbformat 3"),
])
def test_read_submission_explains_what_is_wrong(raw, cause):
    with pytest.raises(SubmissionError, match=cause):
        read_submission(raw, "lab.ipynb")


def test_parameterize_injects_after_the_parameters_cell(template):
    nb = inject_profile(template, {"n": 3, "scale": 2.5})
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    index = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[index + 1]
    assert "n = 3" in nb.cells[index + 1].source and "scale = 2.5" in nb.cells[index + 1].source


def test_score_uses_nbgrader_semantics_and_zeroes_cells_that_never_ran(template):
    nb = nbformat.from_dict(json.loads(json.dumps(template)))
    for cell in nb.cells:
        if gid(cell) == "test_square":  # ran cleanly
            cell.execution_count, cell.outputs = 3, []
        elif gid(cell) == "test_mean":  # raised
            cell.execution_count = 4
            cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="no", traceback=[])]
        # test_total never ran: nbgrader would see no output and give full marks
    scores = {s.grade_id: s for s in score_notebook(nb, "toy")}
    assert scores["test_square"].auto_score == 2
    assert scores["test_mean"].auto_score == 0 and scores["test_mean"].error == "AssertionError: no"
    assert scores["test_total"].auto_score == 0
    assert scores["why_mean"].auto_score == 0 and scores["why_mean"].no_response
