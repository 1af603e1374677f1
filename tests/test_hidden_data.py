"""Hidden data: files in solutions/LAB/hidden/ exist only while grading, read-only, and are never released."""
from __future__ import annotations

import json
import textwrap

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from conftest import run_cli
from course_factory import TOY_LAB, TOY_NOTEBOOK, _meta, fill_answers, make_course, submit, toy_source_notebook
from test_grading import ALL_ANSWERS, cell_scores

HELDOUT = [[-7, 49], [12, 144], [-0.5, 0.25]]  # the inputs students never see
MARKER = "heldout-planted-7f3a"

HELDOUT_TEST = new_code_cell(textwrap.dedent("""\
    assert square(2) == 4
    ### BEGIN HIDDEN TESTS
    import json
    cases = json.load(open("hidden/heldout.json"))["cases"]
    assert len(cases) == 3
    assert all(square(x) == y for x, y in cases)
    ### END HIDDEN TESTS"""), metadata=_meta("test_heldout", grade=True, locked=True, points=2))

# wrong for negative numbers, and tries to make the held-out cases easy by rewriting them
CHEAT = textwrap.dedent("""\
    import json
    try:
        json.dump({"cases": [[2, 4]] * 3}, open("hidden/heldout.json", "w"))
    except OSError as exc:
        print("cannot rewrite the held-out data:", exc)
    def square(x):
        return x * abs(x)""")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = make_course(tmp_path_factory.mktemp("hidden"), source_nb=toy_source_notebook([HELDOUT_TEST]))
    hidden = root / "solutions" / TOY_LAB / "hidden"
    hidden.mkdir()
    (hidden / "heldout.json").write_text(json.dumps({"cases": HELDOUT, "note": MARKER}))
    (root / "solutions" / TOY_LAB / "shipped.txt").write_text("a data file the lab ships")
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    rel = nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
    src = toy_source_notebook([HELDOUT_TEST])
    submit(root, "solution", fill_answers(rel, src, solved=ALL_ANSWERS))
    submit(root, "cheat", fill_answers(rel, src, solved=ALL_ANSWERS - {"square"}, answers={"square": CHEAT}))
    reads = "print(open('hidden/heldout.json').read()[:0] or 'found')\ndef square(x):\n    return x * x"
    submit(root, "reads", fill_answers(rel, src, solved=ALL_ANSWERS - {"square"}, answers={"square": reads}))
    before = (hidden / "heldout.json").read_bytes()
    sandboxed = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2", "--no-progress")
    scores = cell_scores(root)
    unsandboxed = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2", "--no-progress",
                          "--no-sandbox", "--student", "solution")
    return root, before, scores, cell_scores(root), sandboxed.stdout + unsandboxed.stdout


def test_hidden_data_is_never_released(course):
    root = course[0]
    release = root / "labs" / TOY_LAB
    assert (release / "shipped.txt").is_file()  # ordinary lab files are released
    assert not (release / "hidden").exists()
    for path in release.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_text(errors="replace"), path
    assert "hidden/heldout.json" not in (release / TOY_NOTEBOOK).read_text()  # hidden tests are gone too


def test_hidden_tests_read_hidden_data_while_grading(course):
    root, _, scores, unsandboxed, report = course
    assert scores["solution"]["test_heldout"] == 2
    assert unsandboxed["solution"]["test_heldout"] == 2  # without the sandbox it is copied in
    # a student may read it while graded (as the hidden tests do) but it changes nothing
    assert scores["reads"]["test_heldout"] == 2
    assert "found" in (root / "autograded" / "reads" / TOY_LAB / TOY_NOTEBOOK).read_text()


def test_hidden_data_is_read_only(course):
    root, before, scores, _, _ = course
    # the rewrite failed, so the wrong square() met the real held-out cases
    assert scores["cheat"]["test_heldout"] == 0
    assert scores["cheat"]["test_square"] == 0  # square(-4) is wrong too: an honest wrong answer
    graded = (root / "autograded" / "cheat" / TOY_LAB / TOY_NOTEBOOK).read_text()
    assert "cannot rewrite the held-out data" in graded and "Read-only file system" in graded
    assert (root / "solutions" / TOY_LAB / "hidden" / "heldout.json").read_bytes() == before
    # nor did it land in the graded copy of the submission
    assert not (root / "autograded" / "cheat" / TOY_LAB / "hidden").exists()
