"""Sphinx extension: the ``lab`` directive links a chapter to its graded lab.

In a MyST page::

    ```{lab} day2-fairness
    **What it asks.** ... (any MyST: the lab's summary for this chapter)
    ```

renders a "Graded lab" box with, for each notebook of the lab's student release
(``labs/LAB/*.ipynb``, listed in ``solutions/LAB/lab.toml``), a download link (Sphinx copies the
file into ``_downloads/``) and a launch link that opens it on the course's JupyterHub through
nbgitpuller. The link is built from three settings in ``_config.yml`` (``sphinx.config``):
``course_jupyterhub_url``, ``course_repository_url`` and ``course_repository_branch``.

A lab that is planned but not released yet (no ``labs/LAB/``) still renders, plainly marked "not
released yet" (CSS class ``lab-missing``), so the gap is visible to readers and to the tests rather
than a broken link; the build log lists such chapters at the end (as information, not a warning).
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlencode

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def nbgitpuller_url(hub: str, repository: str, branch: str, path: str) -> str:
    """The link that clones (or updates) the course repository on a JupyterHub and opens ``path``.

    nbgitpuller checks the repository out into a folder named after it, in the user's home; the
    ``urlpath`` opens the notebook in JupyterLab there.
    """
    folder = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    query = urlencode({"repo": repository, "branch": branch, "urlpath": f"lab/tree/{folder}/{path}"})
    return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"


def lab_info(root: Path, lab: str) -> tuple[str | None, list[str]]:
    """(title, notebooks) from solutions/LAB/lab.toml, or (None, []) when the lab has no source."""
    toml = root / "solutions" / lab / "lab.toml"
    if not toml.is_file():
        return None, []
    meta = tomllib.loads(toml.read_text(encoding="utf-8")).get("lab", {})
    return meta.get("title"), list(meta.get("notebooks", []))


class LabDirective(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {"title": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        lab = self.arguments[0].strip()
        root = Path(self.env.srcdir)
        title, notebooks = lab_info(root, lab)
        title = title or self.options.get("title") or lab
        released = [nb for nb in notebooks if (root / "labs" / lab / nb).is_file()]

        box = nodes.admonition(classes=["important", "course-lab"])
        box += nodes.title(text=f"Graded lab: {title}")
        if released:
            box["classes"].append("lab-released")
            for nb in released:
                box += self.links(lab, nb)
        else:
            box["classes"].append("lab-missing")
            box += nodes.paragraph(text=f"This lab ({lab}) is not released yet: the chapter's exercises "
                                        "stand in for it until it is.")
            self.env.course_labs_missing.setdefault(self.env.docname, set()).add(lab)
        if self.content:
            box += self.parse_content_to_nodes()
        return [box]

    def links(self, lab: str, notebook: str) -> nodes.paragraph:
        config = self.env.config
        target = f"labs/{lab}/{notebook}"
        # Sphinx resolves a download target that starts with "/" against the source root.
        download = addnodes.download_reference("", "", refdoc=self.env.docname, refdomain="",
                                               reftype="download", refexplicit=True,
                                               reftarget=f"/{target}", refwarn=True)
        download += nodes.literal(text=notebook)
        para = nodes.paragraph(classes=["lab-links"])
        para += nodes.strong(text="Download ")
        para += download
        if config.course_jupyterhub_url:
            url = nbgitpuller_url(config.course_jupyterhub_url, config.course_repository_url,
                                  config.course_repository_branch, target)
            para += nodes.Text(" · ")
            para += nodes.reference("", "Open on the course JupyterHub", refuri=url,
                                    classes=["lab-launch"])
        return para


def purge(app: Sphinx, env, docname: str) -> None:
    env.course_labs_missing.pop(docname, None)


def merge(app: Sphinx, env, docnames, other) -> None:
    env.course_labs_missing.update(other.course_labs_missing)


def init(app: Sphinx, env, docnames) -> None:
    if not hasattr(env, "course_labs_missing"):
        env.course_labs_missing = {}


def report(app: Sphinx, exception) -> None:
    missing = getattr(app.env, "course_labs_missing", {})
    if exception is None and missing:
        listing = "; ".join(f"{doc}: {', '.join(sorted(labs))}" for doc, labs in sorted(missing.items()))
        logger.info(f"chapters whose lab is not released yet: {listing}")


def setup(app: Sphinx) -> dict:
    app.add_config_value("course_jupyterhub_url", "", "env")
    app.add_config_value("course_repository_url", "", "env")
    app.add_config_value("course_repository_branch", "main", "env")
    app.add_directive("lab", LabDirective)
    app.connect("env-before-read-docs", init)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("build-finished", report)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
