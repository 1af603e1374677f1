"""The web book: it builds offline, strictly, and ships what a learner needs.

The book is built once per test session with the command a reader would use, plus Sphinx's strict
flags (``-W -n --keep-going``: any warning — a broken link or reference, a missing download, a
chapter whose code fails — fails the build), into a temporary directory so that the repository's
own ``_build/`` is left alone.
"""
from __future__ import annotations

import posixpath
import re
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import nbformat
import yaml

from book_build import BookBuild, problems, report
from conftest import REPO

DAY2 = "book/ethical-ml/day2-afternoon-fairness"
# the markers nbgrader's source notebooks carry and its release strips
SOURCE_ONLY_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
# a chapter's code runs at every build: keep each executed page well under a minute
MAX_PAGE_EXECUTION_S = 60

# the parts the course promises, and the chapters each must hold (issue 6)
REQUIRED_PARTS = {
    "Start here": ["book/start-here/how-this-course-works", "book/start-here/prerequisites",
                   "book/start-here/setup", "book/start-here/running-at-scale"],
    **{caption: [f"book/ethical-ml/day{d}-morning-{m}", f"book/ethical-ml/day{d}-afternoon-{a}"]
       for caption, d, m, a in [("Day 1: Ethics and decision frameworks", 1, "ethics", "decision-frameworks"),
                                ("Day 2: Bias and fairness", 2, "bias", "fairness"),
                                ("Day 3: Transparency and interpretability", 3, "transparency", "interpretability"),
                                ("Day 4: Privacy and security", 4, "privacy", "security"),
                                ("Day 5: Societal impact and governance", 5, "societal-impact", "governance")]},
    "Module 8: Advanced topics": [f"book/module8/{c}" for c in ("scaling", "prompt-engineering", "applications",
                                                               "generative-ai-ethics", "deployment-serving",
                                                               "assessment")],
    "HPC workshops": [f"book/workshops/{c}" for c in ("running-on-a-cluster", "dnn-places365", "ethical-ai-laion",
                                                      "sustainable-ai")],
    "For instructors": [f"book/instructors/{c}" for c in ("running-the-course", "grading", "grading-on-a-cluster",
                                                          "writing-a-lab", "threat-model")],
}
REQUIRED_PARTS["Day 5: Societal impact and governance"].append("book/ethical-ml/final-project")
# every chapter that teaches with a graded lab, and the labs it links to
LAB_CHAPTERS = {
    "book/ethical-ml/day1-morning-ethics": ["day1-frameworks"],
    "book/ethical-ml/day1-afternoon-decision-frameworks": ["day1-frameworks"],
    "book/ethical-ml/day2-morning-bias": ["day2-bias-audit"],
    "book/ethical-ml/day2-afternoon-fairness": ["day2-fairness"],
    "book/ethical-ml/day3-morning-transparency": ["day3-tabular-explanations"],
    "book/ethical-ml/day3-afternoon-interpretability": ["day3-explaining-cnn"],
    "book/ethical-ml/day4-morning-privacy": ["day4-privacy"],
    "book/ethical-ml/day4-afternoon-security": ["day4-robustness"],
    "book/ethical-ml/day5-morning-societal-impact": ["day5-impact-assessment"],
    "book/ethical-ml/day5-afternoon-governance": ["day5-monitoring"],
    "book/ethical-ml/final-project": ["final-project"],
    "book/module8/scaling": ["m8-scaling"],
    "book/module8/prompt-engineering": ["m8-prompts"],
    "book/module8/applications": ["m8-augmentation"],
    "book/module8/generative-ai-ethics": ["m8-generative-bias"],
    "book/module8/deployment-serving": ["m8-serving"],
    "book/module8/assessment": ["m8-scaling", "m8-prompts", "m8-augmentation", "m8-generative-bias", "m8-serving"],
    "book/workshops/dnn-places365": ["ws-places365"],
    "book/workshops/ethical-ai-laion": ["ws-laion"],
    "book/workshops/sustainable-ai": ["ws-sustainable"],
}
NO_CODE_CHAPTERS = {"book/module8/assessment"}
MIN_WORDS_CHAPTER = 1500   # a chapter: prose, not counting code
MIN_WORDS_PAGE = 350       # start-here and instructors' pages


def prose(html: str) -> str:
    """The words of a page's article, without code, outputs or markup."""
    main = re.search(r"<article[^>]*>(.*)</article>", html, re.S)
    text = main.group(1) if main else html
    text = re.sub(r'<div class="(?:cell_output|highlight)[^"]*".*?</div>', " ", text, flags=re.S)
    text = re.sub(r"<(script|style|pre)\b.*?</\1>", " ", text, flags=re.S)
    return unescape(re.sub(r"<[^>]+>", " ", text))


def toc_files() -> list[str]:
    """Every page named in _toc.yml (the root included), without extension."""
    from autograder.book import toc_pages

    return [page.relative_to(REPO).with_suffix("").as_posix() for page in toc_pages(REPO)]


def page(built: BookBuild, docname: str) -> str:
    return (built.html / f"{docname}.html").read_text(encoding="utf-8")


def test_book_builds_strictly_without_warnings(book: BookBuild):
    assert book.returncode == 0, f"book build failed:\n{problems(book.log)}"
    assert "build succeeded" in book.log
    warnings = re.findall(r"WARNING: .*", book.log)      # Sphinx's format; kernel log lines differ
    assert not warnings, "the build logged warnings:\n" + "\n".join(warnings)


def test_the_build_used_the_pages_executed_in_parallel(built: BookBuild):
    """Every executable page was found in the cache: none was executed again, one by one."""
    from autograder.book import executable_pages

    pages = executable_pages(REPO)
    cached = re.findall(r"(\S+\.md): Using cached notebook", built.log)
    assert len(pages) >= 20 and sorted(cached) == sorted(str(p) for p in pages), \
        f"pages executed during the build instead of before it: {sorted(set(map(str, pages)) - set(cached))}"


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


def lab_boxes(html: str) -> list[tuple[str, str]]:
    """(classes, inner HTML) of every "Graded lab" box of a page."""
    boxes = []
    for match in re.finditer(r'<div class="([^"]*\bcourse-lab\b[^"]*)">', html):
        depth, pos = 1, match.end()
        for tag in re.finditer(r"<(/?)div\b[^>]*>", html[pos:]):
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                boxes.append((match.group(1), html[pos:pos + tag.start()]))
                break
    return boxes


def test_parts_and_chapters_of_the_curriculum(built: BookBuild):
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    parts = {part["caption"]: [c["file"] for c in part["chapters"]] for part in toc["parts"]}
    for caption, files in REQUIRED_PARTS.items():
        assert caption in parts, f"_toc.yml has no part {caption!r}"
        missing = [f for f in files if f not in parts[caption]]
        assert not missing, f"part {caption!r} lacks {missing}"


def test_every_page_is_written(built: BookBuild):
    """No stub: every page has real content (words of prose, not counting code)."""
    thin = {}
    for docname in toc_files():
        html = page(built, docname)
        assert "(chapter in preparation)" not in html, f"{docname} is still a stub"
        words = len(prose(html).split())
        minimum = MIN_WORDS_CHAPTER if docname in LAB_CHAPTERS else MIN_WORDS_PAGE
        if words < minimum:
            thin[docname] = words
    assert not thin, f"pages with too little prose (words): {thin}"


def test_chapters_run_code_make_figures_and_end_with_exercises(built: BookBuild):
    from jupyter_cache import get_cache

    executed = {Path(r.uri).relative_to(REPO).with_suffix("").as_posix()
                for r in get_cache(built.cache).list_cache_records()}
    for docname in LAB_CHAPTERS:
        if docname in NO_CODE_CHAPTERS:     # an assessment page: it is the exercise
            continue
        html = page(built, docname)
        assert re.search(r"<h2[^>]*>.*?Exercises", html), f"{docname} has no Exercises section"
        assert docname in executed, f"{docname} runs no code at build time"
        figures = [src for src in re.findall(r'<img[^>]+src="([^"]+)"', html) if "_images/" in src]
        assert figures, f"{docname} makes no figure"
        for src in figures:
            assert (built.html / posixpath.normpath(posixpath.join(posixpath.dirname(docname), src))).is_file(), src
        assert "Traceback" not in html, f"a cell of {docname} raised"
        assert "output stderr" not in html, f"{docname} printed to stderr"


def test_every_chapter_links_its_lab_at_top_and_bottom(built: BookBuild):
    for docname, labs in LAB_CHAPTERS.items():
        boxes = lab_boxes(page(built, docname))
        named = [lab for lab in labs if sum(lab_names(inner).count(lab) for _, inner in boxes) < 1]
        assert not named, f"{docname} has no lab box for {named}"
        if docname not in NO_CODE_CHAPTERS:
            assert len(boxes) >= 2, f"{docname} needs its lab box at the top and under 'Graded lab'"


def lab_names(inner: str) -> list[str]:
    """The labs a box links to, or names as not released."""
    released = re.findall(r"labs/([\w.-]+)/[\w.-]+\.ipynb", unquote(inner))
    missing = re.findall(r"This lab \(([\w.-]+)\) is not released yet", inner)
    return released + missing


def test_released_labs_are_downloads_and_launch_links(built: BookBuild):
    """Every released lab box: the download is the committed student release; the launch link
    is an nbgitpuller URL (from _config.yml) that opens the same file."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    checked = 0
    for docname in toc_files():
        for classes, inner in lab_boxes(page(built, docname)):
            if "lab-released" not in classes:
                continue
            downloads = re.findall(r'<a class="reference download internal"[^>]*href="([^"]+)"', inner)
            launches = [unescape(h) for h in re.findall(r'<a class="lab-launch[^"]*"[^>]*href="([^"]+)"', inner)]
            assert downloads and len(launches) == len(downloads), f"{docname}: a released lab box lacks its links"
            for href, launch in zip(downloads, launches):
                target = built.html / posixpath.normpath(posixpath.join(posixpath.dirname(docname), href))
                url = urlparse(launch)
                query = parse_qs(url.query)
                path = query["urlpath"][0].split("/", 3)[3]              # lab/tree/<checkout>/labs/LAB/NB
                release = REPO / path
                assert release.is_file() and release.parent.parent.name == "labs", launch
                assert target.read_bytes() == release.read_bytes(), f"{href} is not {path}"
                nb = nbformat.read(target, as_version=4)
                nbformat.validate(nb)
                for cell in nb.cells:
                    for marker in SOURCE_ONLY_MARKERS:
                        assert marker not in cell.source, f"{path} contains {marker!r}: it is not the release"
                assert launch.startswith(config["course_jupyterhub_url"].rstrip("/") + "/hub/user-redirect/git-pull?")
                assert query["repo"] == [config["course_repository_url"]]
                assert query["branch"] == [config["course_repository_branch"]]
                checked += 1
    assert checked >= 2, "the Day 2 chapter's lab box (top and bottom) was not found"


def test_chapters_waiting_for_their_lab(built: BookBuild, pytestconfig):
    """A planned lab not yet in labs/ is shown as such, never as a broken link; list them."""
    waiting = {}
    for docname in toc_files():
        for classes, inner in lab_boxes(page(built, docname)):
            for lab in lab_names(inner):
                released = (REPO / "labs" / lab).is_dir()
                assert released == ("lab-released" in classes), \
                    f"{docname}: lab {lab} is {'released' if released else 'missing'} but its box says otherwise"
                if not released:
                    waiting.setdefault(docname, set()).add(lab)
    report(pytestconfig, f"[book] {len(waiting)} chapters wait for their lab: " +
           "; ".join(f"{doc.split('/')[-1]} ({', '.join(sorted(labs))})" for doc, labs in sorted(waiting.items())))


def test_book_pages_launch_nothing(built: BookBuild):
    """No Binder/Thebe/Colab launchers: the book is read offline and labs are downloaded."""
    html = page(built, DAY2)
    for launcher in ("mybinder.org", "thebe-launch-button", "colab.research.google.com"):
        assert launcher not in html
