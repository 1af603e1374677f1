"""Exceptions with messages an instructor (and a student) can act on."""


class AutograderError(Exception):
    """Base class."""


class SubmissionError(AutograderError):
    """This one submission cannot be graded as it is (it scores 0 where nothing can run)."""
