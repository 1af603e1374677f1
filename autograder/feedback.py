"""``autograder feedback LAB``: nbgrader's feedback HTML, without hidden tests.

nbgrader's own ``generate_feedback`` renders the autograded notebook as it
ran, hidden tests and their tracebacks included (nbgrader issue #917).  We run
the same nbgrader converter with one more preprocessor,
:class:`RedactHiddenTests`, which removes hidden test code and everything
those lines could reveal: a failure inside the hidden part shows only that a
hidden test failed, and the cell's printed output is dropped.
"""
from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader import utils as nbutils

from .course import Course, CourseError

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
_CELL_LINE = re.compile(r"(?:Cell In\s*\[\d*\]|<ipython-input-[^>]*>|File [^,]*), line (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def hidden_line_range(source: str) -> tuple[int, int] | None:
    """1-based first and last line of the hidden region (markers included)."""
    lines = source.split("\n")
    begin = next((i for i, line in enumerate(lines, 1) if BEGIN in line), None)
    if begin is None:
        return None
    end = next((i for i, line in enumerate(lines, 1) if i > begin and END in line), len(lines))
    return begin, end


def _failing_line(traceback: list[str]) -> int | None:
    """Line of the test cell where the error was raised.

    IPython lists frames outermost first, so the first frame that names a cell is
    the test cell itself, even when the error came from a student's function.
    """
    for frame in traceback:
        match = _CELL_LINE.search(_ANSI.sub("", frame))
        if match:
            return int(match.group(1))
    return None


class RedactHiddenTests(NbGraderPreprocessor):
    """Remove hidden tests and what their execution could leak from a graded notebook."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not nbutils.is_grade(cell):
            return cell, resources
        hidden = hidden_line_range(cell.source)
        if hidden is None:
            return cell, resources
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue  # printed or displayed output may come from hidden lines
            line = _failing_line(output.get("traceback", []))
            output.ename = output.get("ename", "Error")
            if line is None or hidden[0] <= line <= hidden[1]:
                output.evalue = "a hidden test failed (hidden tests are not shown)"
                output.traceback = [f"{output.ename}: {output.evalue}"]
            else:
                # IPython's traceback quotes the lines around the failure, hidden ones too
                output.traceback = [f"{output.ename} at line {line} of this cell: {output.get('evalue', '')}"]
            outputs.append(output)
        cell.outputs = outputs
        lines = cell.source.split("\n")
        kept = lines[: hidden[0] - 1] + ["# (hidden tests not shown)"] + lines[hidden[1]:]
        cell.source = "\n".join(kept)
        return cell, resources


def generate_feedback(course: Course, lab_name: str, student: str | None = None) -> list[str]:
    """Write ``feedback/STUDENT/LAB/*.html`` for every graded submission; return the paths."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    lab = course.lab(lab_name)
    config = course.nbgrader_config()
    config.GenerateFeedback.preprocessors = [GetGrades, RedactHiddenTests, CSSHTMLHeaderPreprocessor]
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    students = [student] if student else sorted(
        p.parent.name for p in course.autograded.glob(f"*/{lab.name}") if p.is_dir())
    written = []
    for sid in students:
        result = api.generate_feedback(lab.name, student_id=sid, force=True)
        if not result.get("success"):
            raise CourseError(f"feedback for {sid} failed:\n{result.get('error') or result.get('log')}")
        written += [str(course.feedback / sid / lab.name / nb.replace(".ipynb", ".html")) for nb in lab.notebooks]
    return written
