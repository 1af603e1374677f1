"""The web book, built once per test session for every test that reads it.

The book is built as the README's main job builds it (``autograder book``: the pages executed in
parallel into jupyter-book's cache, then ``jupyter-book build``) with Sphinx's strict flags
(``-W -n --keep-going``: any warning — a broken link or reference, a missing download, a chapter
whose code fails — fails the build), into a temporary directory so that the repository's own
``_build/`` is left alone.  The build time from clean is printed.

While writing tests, ``BOOK_OUTPUT=DIR`` reuses a build made with
``jupyter-book build . --path-output DIR -W -n --keep-going`` instead of building again.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class BookBuild:
    command: list[str]
    returncode: int
    log: str
    seconds: float
    html: Path
    cache: Path


def report(pytestconfig, line: str) -> None:
    """Write a line to the terminal even without ``-s`` (build times, where screenshots are)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)


@pytest.fixture(scope="session")
def book(tmp_path_factory, pytestconfig) -> BookBuild:
    """``autograder book``'s build (pages executed in parallel into the cache, then
    ``jupyter-book build -W -n --keep-going``), from clean, into a temporary directory."""
    from autograder.book import build_book

    reuse = os.environ.get("BOOK_OUTPUT")
    if reuse:
        out = Path(reuse)
        return BookBuild(["(reused)", str(out)], 0, "build succeeded (reused)", 0.0,
                         out / "_build" / "html", out / "_build" / ".jupyter_cache")
    out = tmp_path_factory.mktemp("book")
    result = build_book(REPO, out, strict=True, capture=True)
    report(pytestconfig, f"[book] built from clean in {result.seconds:.1f} s ({result.pages_executed} pages "
                         f"executed in parallel in {result.execute_seconds:.1f} s), exit {result.returncode}")
    return BookBuild(["autograder book --output", str(out)], result.returncode, result.log, result.seconds,
                     out / "_build" / "html", out / "_build" / ".jupyter_cache")


@pytest.fixture(scope="session")
def built(book: BookBuild) -> BookBuild:
    """The build, which must have succeeded for any later check to mean something."""
    if book.returncode != 0:
        pytest.fail(f"`{' '.join(book.command)}` exited {book.returncode}:\n{problems(book.log)}")
    return book


def problems(log: str) -> str:
    """The warnings and errors of a build log, then its end (where jupyter-book puts tracebacks)."""
    flagged = [line for line in log.splitlines() if re.search(r"WARNING: |ERROR|Error", line)]
    return "\n".join(flagged[:40]) + "\n...\n" + log[-3000:]
