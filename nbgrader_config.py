"""nbgrader configuration: this repository *is* the nbgrader course.

nbgrader's ``source`` directory is ``solutions/`` (instructor notebooks with
solutions and hidden tests) and its ``release`` directory is ``labs/`` (what
students get). Instructor state -- ``submitted/``, ``autograded/``,
``feedback/`` and ``gradebook.db`` -- lives next to them and is git-ignored;
``autograder --course-dir D`` keeps it in any other directory instead.

The layout itself is defined once, in :mod:`autograder.course`, so nbgrader's
own apps (formgrader, the exchange) and the ``autograder`` command agree.
"""
import os

from autograder.course import configure_nbgrader

configure_nbgrader(get_config(), os.path.dirname(os.path.abspath(__file__)))  # noqa: F821
