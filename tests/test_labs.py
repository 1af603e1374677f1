"""Every lab follows one contract, and under its grading profile the solution earns
every autograded point while the blank release earns none."""
from __future__ import annotations

import shutil
import tomllib

import nbformat
import pytest
from nbgrader import utils as nbutils
from nbgrader.api import Gradebook

from autograder.course import Course
from autograder.demo import answer_ids, student_version
from autograder.parameterize import has_parameters_cell
from conftest import REPO, run_cli

LABS = Course(REPO).lab_names()

# Which points a notebook answering only the first half of the answer cells must earn:
# the tests of those answers pass, the tests of the others fail (a specification per lab).
EXPECTED_PARTIAL = {
    "day2-fairness": {"test-group-metrics": 3, "test-gaps": 3, "test-mitigation": 0, "test-results": 0,
                      "written-answer": 0},
}


def wrong_answers(lab: str) -> list[dict]:
    """The lab's typical wrong answers (``[[wrong_answers]]`` in its lab.toml, never released)::

        [[wrong_answers]]
        what = "equalized odds computed from the TPR gap alone"
        cell = "gaps-answer"                       # an answer cell of the solution
        replace = [["old code", "new code"]]       # applied to that cell's solution code
        loses = ["test-gaps", "test-results"]      # exactly these tests lose all their points
    """
    return tomllib.loads((REPO / "solutions" / lab / "lab.toml").read_text()).get("wrong_answers", [])


def wrong_answer_groups(wrongs: list[dict]) -> list[list[int]]:
    """Pack the wrong answers into submissions: one submission may carry several mistakes when they
    sit in different answer cells and lose disjoint tests (each then still loses exactly its own
    tests, and the batch CI grades is several times smaller).  First fit, in declaration order."""
    groups: list[list[int]] = []
    for i, wrong in enumerate(wrongs):
        for group in groups:
            if all(wrongs[j]["cell"] != wrong["cell"] and not set(wrongs[j]["loses"]) & set(wrong["loses"])
                   for j in group):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def wrong_answer_sources(lab: str, wrong: dict) -> dict[str, str]:
    """{answer cell: its source in the full solution with the wrong answer's edits made}."""
    from autograder.demo import solution_text

    cells = {c.metadata.nbgrader["grade_id"]: c
             for nb in source_notebooks(lab).values() for c in nb.cells if nbutils.is_solution(c)}
    code = solution_text(cells[wrong["cell"]].source)
    for old, new in wrong["replace"]:
        assert old in code, f"{lab}: wrong answer {wrong['what']!r}: {old!r} is not in {wrong['cell']}"
        code = code.replace(old, new)
    return {wrong["cell"]: code}


def source_notebooks(lab: str) -> dict[str, nbformat.NotebookNode]:
    course_lab = Course(REPO).lab(lab)
    return {name: nbformat.read(course_lab.source_dir / name, as_version=4) for name in course_lab.notebooks}


@pytest.mark.parametrize("lab", LABS)
def test_first_code_cell_holds_every_parameter(lab):
    config = tomllib.loads((REPO / "solutions" / lab / "lab.toml").read_text())
    profile = config["profiles"]["grading"]
    for name, nb in source_notebooks(lab).items():
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), f"{name}: first code cell is not tagged parameters"
        assert first.metadata.get("nbgrader", {}).get("locked"), f"{name}: the parameters cell must be read-only"
        assert has_parameters_cell(nb)
        assigned = {line.split("=", 1)[0].strip() for line in first.source.splitlines()
                    if "=" in line and not line.lstrip().startswith("#")}
        assert set(profile) <= assigned, f"grading profile sets unknown parameters: {set(profile) - assigned}"
        for knob in ("seed", "num_processes"):
            assert knob in assigned, f"{name}: no {knob} parameter"


@pytest.mark.parametrize("lab", LABS)
def test_tests_are_visible_and_hidden_and_one_answer_is_written(lab):
    manual = 0
    for name, nb in source_notebooks(lab).items():
        for cell in nb.cells:
            if not nbutils.is_grade(cell):
                continue
            if nbutils.is_solution(cell):
                if cell.cell_type == "markdown":
                    manual += 1
                    answer = cell.source.partition("### BEGIN SOLUTION")[2].lstrip()
                    assert answer.startswith("**Rubric for graders"), \
                        f"{name}/{cell.metadata.nbgrader['grade_id']}: the model answer must start with a rubric for graders"
                continue
            visible, _, hidden = cell.source.partition("### BEGIN HIDDEN TESTS")
            gid = cell.metadata.nbgrader["grade_id"]
            assert "assert" in visible, f"{name}/{gid}: no visible test"
            assert hidden.strip(), f"{name}/{gid}: no hidden test"
            assert "rai.checks" in cell.source or "from rai" in cell.source, \
                f"{name}/{gid}: tests must use the type-strict helpers of rai.checks"
    assert manual >= 1, "at least one manually graded written answer"


@pytest.mark.parametrize("lab", LABS)
def test_test_cells_work_as_trusted_checks(lab):
    """Test cells run outside the kernel when grading: plain Python, and nothing later depends on them."""
    import ast

    from autograder.trusted import free_names

    for name, nb in source_notebooks(lab).items():
        defined_by_tests: set[str] = set()
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if nbutils.is_grade(cell) and not nbutils.is_solution(cell):
                tree = ast.parse(cell.source)  # no IPython magics in a test
                defined_by_tests |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                                     and not isinstance(n.ctx, ast.Load)}
                continue
            try:
                later = set(free_names(cell.source))
            except SyntaxError:  # a magic in an ordinary cell: no names to check there
                continue
            assert not later & defined_by_tests, \
                f"{name}/{gid}: reads {later & defined_by_tests}, which only a test cell defines"


@pytest.fixture(scope="module", params=LABS)
def graded_lab(request, tmp_path_factory):
    """Solution, blank release and a half-answered notebook, graded under the grading profile."""
    lab = request.param
    root = tmp_path_factory.mktemp(lab)
    shutil.copytree(REPO / "solutions" / lab, root / "solutions" / lab)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    run_cli("release", lab, "--course-dir", str(root))
    sources = source_notebooks(lab)
    students = {"solution": (lambda ids: set(ids), {}), "blank": (lambda ids: set(), {}),
                "partial": (lambda ids: set(ids[: len(ids) // 2]), {})}
    wrongs = wrong_answers(lab)
    for g, group in enumerate(wrong_answer_groups(wrongs)):
        edits = {cell: code for i in group for cell, code in wrong_answer_sources(lab, wrongs[i]).items()}
        students[f"wrong-{g}"] = (lambda ids: set(ids), edits)
    for student, (pick, answers) in students.items():
        dest = root / "submitted" / student / lab
        dest.mkdir(parents=True)
        for name, src in sources.items():
            rel = nbformat.read(root / "labs" / lab / name, as_version=4)
            nbformat.write(student_version(rel, src, pick(answer_ids(src)), answers), dest / name)
    proc = run_cli("grade", lab, "--course-dir", str(root), "--workers", "2", timeout=900)
    scores: dict[str, dict[str, float | None]] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for submission in gb.assignment_submissions(lab):
            scores[submission.student.id] = {g.name: g.auto_score for nb in submission.notebooks for g in nb.grades}
        max_points = {g.name: g.max_score for nb in gb.find_assignment(lab).notebooks for g in nb.grade_cells}
        manual = {g.name for nb in gb.find_assignment(lab).notebooks for g in nb.grade_cells
                  if g.cell_type == "markdown"}
    import json

    seconds = {p.stem: json.loads(p.read_text()).get("seconds", {})
               for p in (root / ".autograder" / lab / "results").glob("*.json")}
    return lab, scores, max_points, manual, proc.stdout, seconds, root


def test_solution_earns_every_autograded_point(graded_lab, pytestconfig):
    from book_build import report as say

    lab, scores, max_points, manual, report, seconds, _ = graded_lab
    solution = seconds.get("solution", {})
    say(pytestconfig, f"[labs] {lab}: the solution graded in {solution.get('total', float('nan')):.1f} s "
                      f"({solution.get('cells', float('nan')):.1f} s in cells), "
                      f"{sum(p for g, p in max_points.items() if g not in manual):g} autograded points")
    for gid, points in max_points.items():
        if gid in manual:
            assert scores["solution"][gid] is None, f"{gid} should wait for a person"
        else:
            assert scores["solution"][gid] == points, f"{lab}: solution lost points on {gid}\n{report}"


def test_blank_release_earns_nothing(graded_lab):
    lab, scores, max_points, manual, report, *_ = graded_lab
    assert all(score == 0 for score in scores["blank"].values()), f"{lab}: blank earned {scores['blank']}"


def test_partial_answer_earns_part(graded_lab):
    lab, scores, max_points, manual, report, *_ = graded_lab
    earned = sum(s or 0 for s in scores["partial"].values())
    total = sum(p for g, p in max_points.items() if g not in manual)
    assert 0 < earned < total, f"{lab}: partial earned {earned} of {total}"
    if lab in EXPECTED_PARTIAL:
        assert scores["partial"] == EXPECTED_PARTIAL[lab], report


def test_typical_wrong_answers_lose_exactly_their_tests(graded_lab):
    """A plausible mistake in one answer costs the tests that check it, and nothing else."""
    lab, scores, max_points, manual, report, *_ = graded_lab
    wrongs = wrong_answers(lab)
    if not wrongs:
        pytest.skip(f"{lab} declares no typical wrong answer yet")
    for g, group in enumerate(wrong_answer_groups(wrongs)):
        loses = {gid for i in group for gid in wrongs[i]["loses"]}
        what = "; ".join(wrongs[i]["what"] for i in group)
        expected = {gid: (0 if gid in loses else points)
                    for gid, points in max_points.items() if gid not in manual}
        got = {gid: scores[f"wrong-{g}"][gid] for gid in expected}
        assert got == expected, f"{lab}: {what}: expected {expected}, got {got}\n{report}"


def _region_lines(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) > 20:
            lines.append(" ".join(line.split()))
    return lines


def test_feedback_never_shows_hidden_tests_or_solutions(graded_lab):
    from bs4 import BeautifulSoup

    lab, root = graded_lab[0], graded_lab[-1]      # the course this session graded, nothing older
    run_cli("feedback", lab, "--course-dir", str(root))
    hidden, solutions = [], []
    for src in source_notebooks(lab).values():
        for cell in src.cells:
            hidden += _region_lines(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
            solutions += _region_lines(cell.source, "BEGIN SOLUTION", "END SOLUTION")
    # lines that also stand in the release (a repeated import, say) are no secret
    released = "".join("".join(c.source.split()) for p in (root / "labs" / lab).glob("*.ipynb")
                       for c in nbformat.read(p, as_version=4).cells)
    squash = lambda text: "".join(text.split())  # noqa: E731 -- HTML splits code into spaced tokens
    hidden = [squash(line) for line in hidden if squash(line) not in released]
    solutions = [squash(line) for line in solutions if squash(line) not in released]
    assert hidden and solutions
    for student in ("solution", "blank", "partial"):
        for page in (root / "feedback" / student / lab).glob("*.html"):
            text = squash(BeautifulSoup(page.read_text(), "html.parser").get_text())
            assert "Score" in text
            leaked = [line for line in hidden if line in text]
            assert not leaked, f"{student}: hidden tests in feedback: {leaked[:3]}"
            if student == "blank":
                shown = [line for line in solutions if line in text]
                assert not shown, f"solution code in a blank submission's feedback: {shown[:3]}"
