"""``autograder book``: build the web book offline, executing its pages on every core.

``jupyter-book build .`` alone builds the book too, but Jupyter Book 1.x executes the pages one
after another (it has no ``-j``), and most of a build from clean is the pages' kernels starting and
importing numpy, pandas, torch.  The book is configured for jupyter-cache (``execute_notebooks:
cache``), so this command first executes the pages into that cache side by side with
jupyter-cache's own parallel executor, reading each page with MyST-NB's reader plugin
(``myst_nb_md``) exactly as the build will, then runs ``jupyter-book build``, which finds every
page already executed (a page that failed is executed again by the build and fails it, with its
traceback).  The result is the same HTML.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

MYST_NB_READER = {"name": "myst_nb_md", "type": "plugin"}


@dataclass
class BookBuild:
    returncode: int
    seconds: float            # the whole build
    execute_seconds: float    # of which executing the pages
    pages_executed: int
    html: Path
    log: str


def toc_pages(project: Path) -> list[Path]:
    """Every page of ``_toc.yml`` (root first), as source files."""
    toc = yaml.safe_load((project / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    pages = []
    for name in names:
        path = project / name
        pages.append(next((p for p in (path, path.with_suffix(".md"), path.with_suffix(".ipynb")) if p.is_file()),
                          path.with_suffix(".md")))
    return pages


def executable_pages(project: Path) -> list[Path]:
    """The pages MyST-NB executes: MyST notebooks (``file_format: mystnb`` front matter)."""
    pages = []
    for page in toc_pages(project):
        if page.suffix == ".md" and page.is_file():
            head = page.read_text(encoding="utf-8")[:1000]
            if head.startswith("---") and "file_format: mystnb" in head.split("\n---", 1)[0]:
                pages.append(page)
    return pages


def execute_pages(project: Path, build_dir: Path, timeout: int = 120) -> int:
    """Execute the book's pages into jupyter-book's cache (``BUILD/.jupyter_cache``) in parallel.

    Pages whose code has not changed since they were cached are not executed again.  Returns how
    many pages were executed.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    cache = get_cache(str(build_dir / ".jupyter_cache"))
    for page in executable_pages(project):
        cache.add_nb_to_project(str(page), read_data=MYST_NB_READER)
    result = load_executor("temp-parallel", cache=cache).run_and_cache(timeout=timeout, allow_errors=False)
    return len(result.succeeded) + len(result.excepted) + len(result.errored)


def build_book(project: Path, output: Path | None = None, strict: bool = True, parallel: bool = True,
               capture: bool = False) -> BookBuild:
    """Build the book into ``OUTPUT/_build/html`` (default: the project's own ``_build``).

    ``strict``: Sphinx warnings are errors (``-W -n --keep-going``).  ``parallel``: execute the
    pages on every core first (see the module docstring).
    """
    project = Path(project).resolve()
    output = Path(output).resolve() if output else project
    build_dir = output / "_build"
    timeout = int(((yaml.safe_load((project / "_config.yml").read_text()) or {}).get("execute") or {})
                  .get("timeout", 120))
    start = time.perf_counter()
    executed = execute_pages(project, build_dir, timeout) if parallel else 0
    execute_seconds = time.perf_counter() - start
    exe = Path(sys.executable).parent / "jupyter-book"
    command = [str(exe if exe.exists() else "jupyter-book"), "build", str(project), "--builder", "html",
               "--path-output", str(output)] + (["-W", "-n", "--keep-going"] if strict else [])
    proc = subprocess.run(command, cwd=project, text=True, capture_output=capture,
                          env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    log = (proc.stdout or "") + (proc.stderr or "") if capture else ""
    return BookBuild(proc.returncode, time.perf_counter() - start, execute_seconds, executed,
                     build_dir / "html", log)
