"""The course directory and its labs.

A course directory is an nbgrader course: ``solutions/LAB`` (nbgrader's
*source*), ``labs/LAB`` (nbgrader's *release*), and the instructor state
``submitted/``, ``autograded/``, ``feedback/``, ``gradebook.db``.  This module
is the one place that knows that layout; nbgrader's own configuration
(``nbgrader_config.py``) is written from :func:`configure_nbgrader` so the two
never disagree.

Each lab keeps a ``lab.toml`` beside its notebooks (never released)::

    [lab]
    title = "Day 2 · Fairness metrics and mitigation"
    notebooks = ["fairness.ipynb"]

    [grading]                # defaults for `autograder grade`
    timeout = 600            # whole notebook, seconds
    cell_timeout = 300       # one cell, seconds
    memory_limit = "6G"
    disk_limit = "1G"        # what the kernel may write (its working directory and /tmp)

    [profiles.grading]       # injected into the `parameters` cell when grading
    n_samples = 6000

Files in ``solutions/LAB/hidden/`` are *hidden data*: never released, they are
visible read-only at ``hidden/`` next to the notebook while it is graded (and
when the instructor runs the source notebook in place), e.g. a held-out split
that only hidden tests read.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_DIR = "solutions"
RELEASE_DIR = "labs"
SUBMITTED_DIR = "submitted"
AUTOGRADED_DIR = "autograded"
FEEDBACK_DIR = "feedback"
STATE_DIR = ".autograder"  # our own bookkeeping: templates, results, digests
GRADEBOOK = "gradebook.db"
COURSE_ID = "responsible-ai-at-scale"
# never copied into a student release
HIDDEN_DIR = "hidden"  # solutions/LAB/hidden: data for grading only
RELEASE_IGNORE = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "lab.toml", HIDDEN_DIR]
DEFAULT_DISK_LIMIT = 2**30

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


class CourseError(Exception):
    """A problem with the course itself (not with one submission)."""


def parse_size(text: str | int | None) -> int | None:
    """``"6G"`` -> 6 * 2**30 bytes; ``None``/``""`` -> None; ints pass through."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 6G)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** " KMGT".index(unit.upper() or " "))


@dataclass(frozen=True)
class GradingLimits:
    """Limits for executing one submission (per-lab defaults, CLI overrides)."""

    timeout: float = 900.0       # the whole notebook, seconds
    cell_timeout: float = 300.0  # one cell, seconds
    memory_limit: int | None = None  # bytes, kernel and children together
    disk_limit: int = DEFAULT_DISK_LIMIT  # bytes the kernel may write (working directory and /tmp)

    def override(self, timeout=None, cell_timeout=None, memory_limit=None, disk_limit=None) -> "GradingLimits":
        return GradingLimits(
            timeout=self.timeout if timeout is None else float(timeout),
            cell_timeout=self.cell_timeout if cell_timeout is None else float(cell_timeout),
            memory_limit=self.memory_limit if memory_limit is None else parse_size(memory_limit),
            disk_limit=self.disk_limit if disk_limit is None else parse_size(disk_limit),
        )


@dataclass(frozen=True)
class Lab:
    """One lab (an nbgrader assignment) as the instructor wrote it."""

    name: str
    source_dir: Path
    title: str
    notebooks: tuple[str, ...]
    limits: GradingLimits
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def grading_profile(self) -> dict[str, Any]:
        """Parameters papermill injects when grading (fast enough for 2 CPU cores)."""
        return dict(self.profiles.get("grading", {}))

    @property
    def hidden_dir(self) -> Path | None:
        """``solutions/LAB/hidden``: files that exist only while grading (never released)."""
        path = self.source_dir / HIDDEN_DIR
        return path if path.is_dir() else None

    @classmethod
    def load(cls, source_dir: Path) -> "Lab":
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise CourseError(f"no lab source directory {source_dir}")
        config: dict[str, Any] = {}
        toml_path = source_dir / "lab.toml"
        if toml_path.exists():
            try:
                config = tomllib.loads(toml_path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise CourseError(f"{toml_path}: {exc}") from exc
        meta = config.get("lab", {})
        notebooks = tuple(meta.get("notebooks") or sorted(p.name for p in source_dir.glob("*.ipynb")))
        if not notebooks:
            raise CourseError(f"lab {source_dir.name} has no notebooks in {source_dir}")
        for nb in notebooks:
            if not (source_dir / nb).is_file():
                raise CourseError(f"{toml_path} names {nb}, which is not in {source_dir}")
        grading = config.get("grading", {})
        limits = GradingLimits().override(
            timeout=grading.get("timeout"),
            cell_timeout=grading.get("cell_timeout"),
            memory_limit=grading.get("memory_limit"),
            disk_limit=grading.get("disk_limit"),
        )
        return cls(
            name=source_dir.name,
            source_dir=source_dir,
            title=meta.get("title", source_dir.name),
            notebooks=notebooks,
            limits=limits,
            profiles={k: dict(v) for k, v in config.get("profiles", {}).items()},
        )


DB_URL_ENV = "AUTOGRADER_DB_URL"


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding ``nbgrader_config.py``."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "nbgrader_config.py").is_file() and (candidate / SOURCE_DIR).is_dir():
            return candidate
    return None


class Course:
    """Paths of one course directory.

    ``root`` holds the instructor state.  Lab sources and releases are read from
    ``root/solutions`` and ``root/labs`` when ``root`` has a ``solutions/``
    directory, otherwise from the project (the repository this command runs
    in), so that ``--course-dir`` can keep state for the repository's labs
    anywhere.
    """

    def __init__(self, root: Path | str | None = None, db_url: str | None = None):
        self._db_url = db_url
        project = find_project_root()
        if root is None:
            if project is None:
                raise CourseError(
                    "not inside a course: no nbgrader_config.py with a solutions/ directory "
                    "here or above; pass --course-dir"
                )
            root = project
        self.root = Path(root).resolve()
        if (self.root / SOURCE_DIR).is_dir():
            self.labs_root = self.root
        elif project is not None:
            self.labs_root = project
        else:
            raise CourseError(f"{self.root} has no {SOURCE_DIR}/ directory and no project was found")

    # -- layout -------------------------------------------------------------
    @property
    def source(self) -> Path:
        return self.labs_root / SOURCE_DIR

    @property
    def release(self) -> Path:
        return self.labs_root / RELEASE_DIR

    @property
    def submitted(self) -> Path:
        return self.root / SUBMITTED_DIR

    @property
    def autograded(self) -> Path:
        return self.root / AUTOGRADED_DIR

    @property
    def feedback(self) -> Path:
        return self.root / FEEDBACK_DIR

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_url(self) -> str:
        """The gradebook: any SQLAlchemy URL nbgrader supports.

        In order: ``--db URL``; the ``AUTOGRADER_DB_URL`` environment variable; a
        ``c.CourseDirectory.db_url`` set in the course's ``nbgrader_config.py`` (the
        setting nbgrader's own apps read); else SQLite in the course directory.
        """
        if self._db_url:
            return self._db_url
        if os.environ.get(DB_URL_ENV):
            return os.environ[DB_URL_ENV]
        return self._configured_db_url() or default_db_url(self.root)

    def _configured_db_url(self) -> str | None:
        config_file = self.root / "nbgrader_config.py"
        if not config_file.is_file():
            return None
        from traitlets.config.loader import PyFileConfigLoader

        try:
            config = PyFileConfigLoader(config_file.name, path=str(self.root)).load_config()
        except Exception as exc:  # noqa: BLE001 -- the instructor's file: say which and why
            raise CourseError(f"cannot read {config_file}: {type(exc).__name__}: {exc}") from None
        url = config.get("CourseDirectory", {}).get("db_url")
        return str(url) if url else None

    def lab(self, name: str) -> Lab:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise CourseError(f"not a lab name: {name!r}")
        path = self.source / name
        if not path.is_dir():
            known = ", ".join(self.lab_names()) or "none"
            raise CourseError(f"no lab {name!r} in {self.source} (labs: {known})")
        return Lab.load(path)

    def lab_names(self) -> list[str]:
        if not self.source.is_dir():
            return []
        return sorted(p.name for p in self.source.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))

    def student_ids(self, lab: str) -> list[str]:
        """Students with a submission directory for ``lab``."""
        if not self.submitted.is_dir():
            return []
        return sorted(p.parent.name for p in self.submitted.glob(f"*/{lab}") if p.is_dir())

    # -- nbgrader -------------------------------------------------------------
    def nbgrader_config(self):
        """A traitlets Config for nbgrader's apps and API on this course."""
        from traitlets.config import Config

        config = Config()
        configure_nbgrader(config, self.root, labs_root=self.labs_root, db_url=self.db_url)
        return config


def default_db_url(root: Path | str) -> str:
    return f"sqlite:///{Path(root).resolve() / GRADEBOOK}"


def configure_nbgrader(c, root: Path | str, labs_root: Path | str | None = None, db_url: str | None = None) -> None:
    """Write this course's layout into an nbgrader config object ``c``.

    Used by ``nbgrader_config.py`` (so ``nbgrader formgrader`` and friends see
    the same course) and by :meth:`Course.nbgrader_config`.
    """
    root = Path(root).resolve()
    labs_root = Path(labs_root or root).resolve()
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    # nbgrader joins these onto root; absolute paths let sources live elsewhere
    c.CourseDirectory.source_directory = str(labs_root / SOURCE_DIR)
    c.CourseDirectory.release_directory = str(labs_root / RELEASE_DIR)
    c.CourseDirectory.ignore = list(RELEASE_IGNORE)
    # a course's nbgrader_config.py may set another db_url after this call (e.g. PostgreSQL)
    c.CourseDirectory.db_url = db_url or os.environ.get(DB_URL_ENV) or default_db_url(root)
    c.Exchange.root = os.environ.get("AUTOGRADER_EXCHANGE", str(root / ".exchange"))
