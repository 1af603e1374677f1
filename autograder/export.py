"""``autograder export``: grades out of the gradebook with nbgrader's own exporter.

nbgrader's ``CsvExportPlugin`` writes one row per student and assignment with
``student_id``, ``assignment``, ``score``, ``max_score`` (and names, email,
timestamp, late penalty); we only point it at the course and a file.
"""
from __future__ import annotations

from pathlib import Path

from .course import Course

FORMATS = {"csv": "nbgrader.plugins.export.CsvExportPlugin"}


def export_grades(course: Course, output: Path, fmt: str = "csv") -> Path:
    from nbgrader.plugins.export import CsvExportPlugin

    from .record import open_gradebook

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    plugin = CsvExportPlugin(to=str(output))
    with open_gradebook(course.db_url) as gb:
        plugin.export(gb)
    return output
