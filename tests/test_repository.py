"""The repository as a whole: README commands, CI, released labs up to date."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

from autograder.course import Course
from conftest import REPO, run_cli


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = readme_commands()
    assert "autograder demo" in main_job and "\n" not in main_job
    assert "pytest" in tests and "\n" not in tests
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert tests in ci, f".ci/run must run the README's test command: {tests!r}"


def test_nbgrader_config_points_at_solutions_and_labs():
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    assert Path(config.CourseDirectory.source_directory) == REPO / "solutions"
    assert Path(config.CourseDirectory.release_directory) == REPO / "labs"
    assert Path(config.CourseDirectory.root) == REPO


def test_released_labs_are_not_stale(tmp_path):
    """Regenerating labs/ from solutions/ changes nothing."""
    labs = Course(REPO).lab_names()
    assert labs, "the course has no labs"
    twin = tmp_path / "twin"
    shutil.copytree(REPO / "solutions", twin / "solutions")
    shutil.copy(REPO / "nbgrader_config.py", twin / "nbgrader_config.py")
    for lab in labs:
        run_cli("release", lab, "--course-dir", str(twin))
        for fresh in sorted((twin / "labs" / lab).rglob("*")):
            committed = REPO / "labs" / lab / fresh.relative_to(twin / "labs" / lab)
            if fresh.is_file():
                assert committed.is_file(), f"{committed} is missing: run `autograder release {lab}`"
                assert committed.read_bytes() == fresh.read_bytes(), \
                    f"{committed} is stale: run `autograder release {lab}` and commit labs/"
        extra = {p.relative_to(REPO / "labs" / lab) for p in (REPO / "labs" / lab).rglob("*") if p.is_file()} - \
                {p.relative_to(twin / "labs" / lab) for p in (twin / "labs" / lab).rglob("*") if p.is_file()}
        assert not extra, f"labs/{lab} has files the release does not produce: {extra}"


def test_released_notebooks_hold_no_solutions_or_hidden_tests():
    for nb_path in (REPO / "labs").rglob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
                assert marker not in cell.source, f"{nb_path}: {marker}"
