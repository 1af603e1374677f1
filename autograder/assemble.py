"""Step 1 -- assemble: rebuild the graded notebook from the instructor's source.

The student controls only the *source text* of their answer cells.  Everything
else -- test cells (with hidden tests), points, read-only cells, cell types,
notebook metadata and kernelspec -- comes from the instructor's source, so a
student who edits or deletes a test cell, raises the points in metadata or
changes the kernelspec changes nothing.

Two functions:

* :func:`grading_template` turns a source notebook into the blank notebook
  nbgrader itself stores in the gradebook at release time (solutions replaced
  by stubs, hidden tests kept, checksums computed), using nbgrader's own
  preprocessors so "no response" detection matches ``nbgrader autograde``.
* :func:`assemble_submission` fills that template's answer cells with the
  student's sources, matched by nbgrader ``grade_id``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

from .errors import SubmissionError


def is_answer_cell(cell) -> bool:
    """An nbgrader *solution* cell: the only cells whose text the student owns."""
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False))


def grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    if isinstance(meta, dict):
        gid = meta.get("grade_id")
        return gid if isinstance(gid, str) else None
    return None


def grading_template(source_nb: NotebookNode) -> NotebookNode:
    """The source notebook as nbgrader saves it in the gradebook: blank answers, hidden tests kept."""
    from nbgrader.preprocessors import ClearOutput, ClearSolutions, ComputeChecksums, LockCells

    nb = copy.deepcopy(source_nb)
    resources: dict = {}
    for preprocessor in (LockCells(), ClearSolutions(), ClearOutput(), ComputeChecksums()):
        nb, resources = preprocessor.preprocess(nb, resources)
    return nb


@dataclass
class Assembly:
    """The assembled notebook plus what the instructor should know about it."""

    notebook: NotebookNode
    notes: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # grade ids taken from the student


def read_submission(raw: bytes, name: str) -> NotebookNode:
    """Parse a submitted notebook, or raise :class:`SubmissionError` saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{name} is not UTF-8 text (byte {exc.start}): not a notebook") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{name} is not valid notebook JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError(f"{name} is JSON but not a notebook (no list of cells)")
    major = data.get("nbformat")
    if major != 4:
        raise SubmissionError(f"{name} has nbformat {major!r}; only version 4 notebooks can be graded")
    return nbformat.from_dict(data)


def assemble_submission(template: NotebookNode, submitted: NotebookNode) -> Assembly:
    """Rebuild ``template`` with the student's answer sources from ``submitted``.

    Answer cells are matched by grade id; the first of duplicate ids wins (as
    in nbgrader's ``DeduplicateIds``).  A missing answer keeps the blank stub
    (scored as "no response").  Cells the student added are not graded.
    """
    answers: dict[str, str] = {}
    notes: list[str] = []
    extra = 0
    template_ids = {grade_id(c) for c in template.cells if is_answer_cell(c)}
    for cell in submitted.cells:
        gid = grade_id(cell)
        source = cell.get("source", "")
        if isinstance(source, list):  # nbformat allows a list of lines on disk
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            continue
        if gid is None or gid not in template_ids:
            extra += gid is None and cell.get("cell_type") == "code" and bool(source.strip())
            continue
        if gid in answers:
            notes.append(f"answer cell '{gid}' appears more than once; the first copy was graded")
            continue
        answers[gid] = source

    nb = copy.deepcopy(template)
    answered = []
    for cell in nb.cells:
        if not is_answer_cell(cell):
            continue
        gid = grade_id(cell)
        if gid in answers:
            cell.source = answers[gid]
            answered.append(gid)
        else:
            notes.append(f"answer cell '{gid}' is missing from the submission; graded as no response")
    if extra:
        notes.append(f"{extra} code cell(s) added by the student were not graded (only answer cells are)")
    return Assembly(notebook=nb, notes=notes, answered=answered)
