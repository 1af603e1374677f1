"""Step 2 -- parameterize: inject the lab's grading profile with papermill.

Papermill finds the cell tagged ``parameters`` and adds an
``injected-parameters`` cell after it, so the profile overrides the defaults
the instructor wrote without touching any graded cell.
"""
from __future__ import annotations

from typing import Any

from nbformat import NotebookNode
from papermill.parameterize import parameterize_notebook

from .errors import AutograderError


def has_parameters_cell(nb: NotebookNode) -> bool:
    return any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells)


def prepare_for_papermill(nb: NotebookNode) -> NotebookNode:
    """Add the metadata papermill's own loader (``iorw.load_notebook_node``) adds."""
    from papermill import __version__ as papermill_version

    nb.metadata.setdefault("papermill", {"default_parameters": {}, "parameters": {},
                                         "environment_variables": {}, "version": papermill_version})
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
        cell.metadata.setdefault("papermill", {})
    return nb


def inject_profile(nb: NotebookNode, profile: dict[str, Any], kernel_name: str | None = None) -> NotebookNode:
    """Return ``nb`` with ``profile`` injected as papermill parameters."""
    prepare_for_papermill(nb)
    if not profile:
        return nb
    if not has_parameters_cell(nb):
        raise AutograderError("the lab has a grading profile but no cell tagged 'parameters' to inject it after")
    return parameterize_notebook(nb, dict(profile), kernel_name=kernel_name, language="python")
