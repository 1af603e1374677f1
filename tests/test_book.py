"""The web book: it builds offline, strictly, and ships what a learner needs.

The book is built once per test session with the command a reader would use, plus Sphinx's strict
flags (``-W -n --keep-going``: any warning — a broken link or reference, a missing download, a
chapter whose code fails — fails the build), into a temporary directory so that the repository's
own ``_build/`` is left alone.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import REPO

DAY2 = "book/ethical-ml/day2-afternoon-fairness"
LAB_NOTEBOOK = REPO / "labs" / "day2-fairness" / "fairness.ipynb"
# the markers nbgrader's source notebooks carry and its release strips
SOURCE_ONLY_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
# a chapter's code runs at every build: keep each executed page well under a minute
MAX_PAGE_EXECUTION_S = 60


@dataclass
class BookBuild:
    command: list[str]
    returncode: int
    log: str
    seconds: float
    html: Path
    cache: Path


def jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    return str(exe) if exe.exists() else "jupyter-book"


@pytest.fixture(scope="session")
def book(tmp_path_factory, pytestconfig) -> BookBuild:
    out = tmp_path_factory.mktemp("book")
    command = [jupyter_book(), "build", str(REPO), "--builder", "html", "--path-output", str(out),
               "-W", "-n", "--keep-going"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():   # report the build time even without -s
            reporter.write_line(f"\n[test_book] jupyter-book build -W -n --keep-going: {seconds:.1f} s, "
                                f"exit {proc.returncode}")
    return BookBuild(command, proc.returncode, proc.stdout + proc.stderr, seconds,
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


def toc_files() -> list[str]:
    """Every page named in _toc.yml (the root included), without extension."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def page(built: BookBuild, docname: str) -> str:
    return (built.html / f"{docname}.html").read_text(encoding="utf-8")


def test_book_builds_strictly_without_warnings(book: BookBuild):
    assert book.returncode == 0, f"book build failed:\n{problems(book.log)}"
    assert "build succeeded" in book.log
    warnings = re.findall(r"WARNING: .*", book.log)      # Sphinx's format; kernel log lines differ
    assert not warnings, "the build logged warnings:\n" + "\n".join(warnings)


def test_index_html_exists(built: BookBuild):
    assert (built.html / "index.html").is_file()


def test_every_toc_entry_became_a_page(built: BookBuild):
    files = toc_files()
    assert DAY2 in files and len(files) == len(set(files)), "_toc.yml lists a page twice or lacks Day 2"
    missing = [f for f in files if not (built.html / f"{f}.html").is_file()]
    assert not missing, f"pages in _toc.yml with no HTML: {missing}"


def test_only_book_pages_are_rendered(built: BookBuild):
    """Nothing of the course, the package or the instructor state is a page."""
    pages = {p.relative_to(built.html).as_posix() for p in built.html.rglob("*.html")}
    pages = {p for p in pages if not p.startswith("_static/")}     # the theme's HTML snippets
    expected = {f"{f}.html" for f in toc_files()} | {"index.html", "genindex.html", "search.html"}
    assert pages == expected, f"unexpected pages: {sorted(pages - expected)}"
    for folder in ("labs", "solutions", "submitted", "autograded", "feedback", "tests", "autograder", "rai"):
        assert not (built.html / folder).exists(), f"{folder}/ was rendered into the book"
        assert not (built.html / "_sources" / folder).exists(), f"{folder}/ was read as book source"


def test_day2_chapter_was_executed(built: BookBuild):
    html = page(built, DAY2)
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    figures = [src for src in images if "_images/" in src]
    assert len(figures) >= 2, f"expected the chapter's figures as <img> outputs, found {images}"
    for src in figures:
        assert (built.html / posixpath.normpath(posixpath.join(posixpath.dirname(DAY2), src))).is_file(), src
    assert "Traceback" not in html, "a cell of the chapter raised"
    assert "cell_output" in html and "output stderr" not in html, "the chapter printed to stderr"
    assert "MetricFrame" in html and "ExponentiatedGradient" in html and "ThresholdOptimizer" in html


def test_executed_pages_are_quick(built: BookBuild):
    from jupyter_cache import get_cache

    records = get_cache(built.cache).list_cache_records()
    runs = {Path(r.uri).relative_to(REPO).with_suffix("").as_posix(): r.data.get("execution_seconds")
            for r in records}
    assert DAY2 in runs, f"the Day 2 chapter was not executed: {runs}"
    slow = {doc: s for doc, s in runs.items() if s is None or s > MAX_PAGE_EXECUTION_S}
    assert not slow, f"pages executing for more than {MAX_PAGE_EXECUTION_S} s: {slow}"


def test_day2_links_the_student_release_of_the_lab(built: BookBuild):
    html = page(built, DAY2)
    links = [h for h in re.findall(r'href="([^"#]+)"', html) if h.endswith("fairness.ipynb")]
    assert links, "the Day 2 chapter has no link to the lab notebook"
    for href in links:
        assert "_downloads/" in href, f"the lab is not shipped as a download: {href}"
        target = built.html / posixpath.normpath(posixpath.join(posixpath.dirname(DAY2), href))
        assert target.is_file(), f"the link {href} points at no file in the build"
        assert target.read_bytes() == LAB_NOTEBOOK.read_bytes(), "the download is not labs/day2-fairness/fairness.ipynb"
        nb = nbformat.read(target, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            for marker in SOURCE_ONLY_MARKERS:
                assert marker not in cell.source, f"the downloadable lab contains {marker!r}: it is not the release"
    assert html.count("Graded lab") >= 2, "the chapter needs a 'Graded lab' box at the top and the bottom"


def test_stub_chapters_say_they_are_in_preparation(built: BookBuild):
    for docname in toc_files():
        source = (REPO / f"{docname}.md").read_text()
        if "{code-cell}" in source or docname.startswith(("book/intro", "book/start-here", "book/instructors")):
            continue
        assert "(chapter in preparation)" in page(built, docname), f"{docname} is neither written nor marked"


def test_book_pages_launch_nothing(built: BookBuild):
    """No Binder/Thebe/Colab launchers: the book is read offline and labs are downloaded."""
    html = page(built, DAY2)
    for launcher in ("mybinder.org", "thebe-launch-button", "colab.research.google.com"):
        assert launcher not in html
