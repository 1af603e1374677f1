"""Step 4 -- score: nbgrader's grade semantics on an executed notebook.

A test cell scores its points when it raised nothing (and wrote nothing to
stderr, as in nbgrader); manually graded answers wait for a person (or score 0
when left blank).  One rule is added: a test cell that never ran -- the kernel
died or the notebook ran out of time before reaching it -- scores 0, where
nbgrader would see an empty output and give full marks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from nbformat import NotebookNode
from nbgrader import utils as nbutils

from .execute import NOT_RUN


@dataclass
class CellScore:
    notebook: str
    grade_id: str
    max_score: float
    auto_score: float | None     # None: waits for a manual grade
    no_response: bool = False    # an answer cell left as released
    error: str | None = None     # one line: why a test cell scored 0

    def to_dict(self) -> dict:
        return asdict(self)


def _first_error(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename', 'Error')}: {value[0] if value else ''}".strip().rstrip(":")
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            text = str(output.get("text", "")).strip().splitlines()
            return f"wrote to stderr: {text[0] if text else ''}"
    return None


def _did_not_run(cell) -> bool:
    status = cell.get("metadata", {}).get("autograder", {})
    if status.get("status") == NOT_RUN:
        return True
    if status.get("checked"):  # a trusted check ran it outside the kernel (autograder.trusted)
        return False
    return cell.cell_type == "code" and cell.get("execution_count") is None


def score_cell(cell, notebook: str) -> CellScore | None:
    """The score of one cell, or None if it is not a grade cell."""
    if not nbutils.is_grade(cell):
        return None
    auto_score, max_score = nbutils.determine_grade(cell)
    gid = cell.metadata.nbgrader["grade_id"]
    no_response = False
    error = None
    if nbutils.is_solution(cell):
        no_response = auto_score == 0
    elif cell.cell_type == "code":
        if _did_not_run(cell):
            auto_score = 0.0
            error = _first_error(cell) or "did not run"
        elif auto_score is not None and auto_score < max_score:
            error = _first_error(cell)
    return CellScore(notebook=notebook, grade_id=gid, max_score=float(max_score),
                     auto_score=None if auto_score is None else float(auto_score),
                     no_response=no_response, error=error)


def score_notebook(nb: NotebookNode, notebook: str) -> list[CellScore]:
    return [s for s in (score_cell(c, notebook) for c in nb.cells) if s is not None]


def zero_scores(template: NotebookNode, notebook: str, reason: str) -> list[CellScore]:
    """Scores for a notebook that could not run at all: every grade cell 0."""
    scores = []
    for cell in template.cells:
        if nbutils.is_grade(cell):
            scores.append(CellScore(notebook=notebook, grade_id=cell.metadata.nbgrader["grade_id"],
                                    max_score=float(cell.metadata.nbgrader["points"]),
                                    auto_score=0.0, no_response=nbutils.is_solution(cell), error=reason))
    return scores


def unanswered(nb: NotebookNode) -> list[str]:
    """Grade ids of answer cells still as released (nbgrader's "No response.")."""
    return [
        cell.metadata.nbgrader["grade_id"]
        for cell in nb.cells
        if nbutils.is_solution(cell)
        and cell.metadata.nbgrader.get("checksum") == nbutils.compute_checksum(cell)
    ]
