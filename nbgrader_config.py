"""nbgrader configuration: this repository *is* the nbgrader course.

nbgrader's ``source`` directory is ``solutions/`` (instructor notebooks with
solutions and hidden tests) and its ``release`` directory is ``labs/`` (what
students get). Instructor state -- ``submitted/``, ``autograded/``,
``feedback/`` and ``gradebook.db`` -- lives next to them and is git-ignored;
``autograder --course-dir D`` puts it in any other directory instead.
"""
import os

c = get_config()  # noqa: F821 -- provided by traitlets when nbgrader loads this file

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "responsible-ai-at-scale"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# lab.toml (grading profile, limits) and hidden/ (grading-only data) stay with
# the instructor: never copied into a release.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
    "lab.toml", "hidden",
]
