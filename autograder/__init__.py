"""Papermill-driven, sandboxed autograding for nbgrader courses.

The pipeline, one module a step: :mod:`~autograder.assemble` ->
:mod:`~autograder.parameterize` -> :mod:`~autograder.execute` ->
:mod:`~autograder.score` -> :mod:`~autograder.record`.  A worker
(:mod:`~autograder.worker`) runs the first four for one submission; the
coordinator (:mod:`~autograder.coordinator`) runs workers and is the only
writer of the gradebook.
"""
__version__ = "0.1.0"
