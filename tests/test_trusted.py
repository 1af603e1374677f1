"""Trusted checks (autograder/trusted.py): forged verdicts fail.

A small lab is graded twice: with test cells run in the student's kernel (``--in-kernel-tests``,
what nbgrader does) and with trusted checks (the default).  Each attack leaves every answer wrong
and tries to pass the tests anyway.  In the kernel most of them work -- the corpus is real; with
trusted checks each scores exactly what the honest wrong answer scores.
"""
from __future__ import annotations

import textwrap

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.trusted import KernelObjectError, free_names
from conftest import run_cli
from course_factory import _meta, fill_answers, make_course, submit
from test_grading import cell_scores

LAB = "trust"
NB = "trust.ipynb"
D = textwrap.dedent


def source_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Trust lab", metadata=_meta("intro", locked=True)),
        new_code_cell("n = 3", metadata={**_meta("params", locked=True), "tags": ["parameters"]}),
        new_code_cell("import numpy as np\nfrom rai.checks import assert_close, assert_type",
                      metadata=_meta("setup", locked=True)),
        new_code_cell(D("""\
            def mean(xs):
                ### BEGIN SOLUTION
                return sum(xs) / len(xs)
                ### END SOLUTION"""), metadata=_meta("mean", solution=True)),
        new_code_cell(D("""\
            assert abs(mean([1, 2, 3]) - 2) < 1e-12
            ### BEGIN HIDDEN TESTS
            assert abs(mean([0.5, 1.5]) - 1.0) < 1e-12
            assert isinstance(mean([1.0, 4.0]), float)
            assert abs(mean(list(range(n))) - (n - 1) / 2) < 1e-12
            ### END HIDDEN TESTS"""), metadata=_meta("test_mean", grade=True, locked=True, points=3)),
        new_code_cell(D("""\
            ### BEGIN SOLUTION
            weights = np.array([0.25, 0.75])
            ### END SOLUTION"""), metadata=_meta("weights", solution=True)),
        new_code_cell(D("""\
            assert np.allclose(weights, [0.25, 0.75])
            ### BEGIN HIDDEN TESTS
            assert_type(weights, np.ndarray)
            assert np.isclose(weights.sum(), 1.0)
            ### END HIDDEN TESTS"""), metadata=_meta("test_weights", grade=True, locked=True, points=2)),
        new_code_cell(D("""\
            ### BEGIN SOLUTION
            label = "fair"
            ### END SOLUTION"""), metadata=_meta("label", solution=True)),
        new_code_cell(D("""\
            assert label == "fair"
            ### BEGIN HIDDEN TESTS
            assert sorted([label, "a"]) == ["a", "fair"]
            ### END HIDDEN TESTS"""), metadata=_meta("test_label", grade=True, locked=True, points=1)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


LAB_TOML = f'[lab]\nnotebooks = ["{NB}"]\n[grading]\ntimeout = 120\ncell_timeout = 20\n'

WRONG = {"mean": "def mean(xs):\n    return 0", "weights": "weights = np.array([0.5, 0.1])", "label": "label = 'unfair'"}

#: each attack goes first, in the answer cell for `mean`; every answer stays wrong
ATTACKS = {
    "patches-builtins": "import builtins\n_abs, _isinstance, _sorted = abs, isinstance, sorted\n"
                        "builtins.abs = lambda x: 0 if _isinstance(x, (int, float)) else _abs(x)\n"
                        "builtins.isinstance = lambda o, t: True if t is float else _isinstance(o, t)\n"
                        "def _fake_sorted(xs, *a, **k):\n    xs = list(xs)\n"
                        "    return ['a', 'fair'] if 'unfair' in xs else _sorted(xs, *a, **k)\n"
                        "builtins.sorted = _fake_sorted",
    "blanks-test-cells": "get_ipython().input_transformers_cleanup.append(\n"
                         "    lambda lines: [] if any('assert' in l for l in lines) else lines)",
    "swallows-errors": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
    "rebinds-assertionerror": "import builtins\nbuiltins.AssertionError = type('Nothing', (Exception,), {})\n"
                              "AssertionError = builtins.AssertionError",
    "patches-numpy": "import numpy\nnumpy.allclose = lambda *a, **k: True\nnumpy.isclose = lambda *a, **k: True\n"
                     "numpy.testing.assert_allclose = lambda *a, **k: None",
    "always-equal": "class Yes(str):\n    __eq__ = lambda self, other: True\n    __hash__ = str.__hash__\n"
                    "class YesF(float):\n    __eq__ = lambda self, other: True\n    __lt__ = lambda self, other: True\n"
                    "    __sub__ = lambda self, other: YesF(0)\n"
                    "def mean(xs):\n    return YesF(0)\n"
                    "label = Yes('unfair')",
    "forges-output": "import sys\nprint('visible tests passed\\nAll tests passed: 6/6 points')\n"
                     "get_ipython().events.register('post_run_cell', lambda r: print('visible tests passed'))",
    "alters-test-globals": "assert_close = lambda *a, **k: None\nassert_type = lambda *a, **k: None\n"
                           "class FakeNp:\n    allclose = isclose = staticmethod(lambda *a, **k: True)\n"
                           "    ndarray = object\n"
                           "np_real = np\nnp = FakeNp()\nn = 1",
    # forge whatever the grader reads back, and corrupt arrays on their way out
    "hijacks-export": "import base64\nbase64.b64encode = lambda b: b'AAAA'\n"
                      "forged = '{\"value\": {\"t\": \"str\", \"v\": \"fair\"}}'\n"
                      "get_ipython().events.register('post_execute', lambda: get_ipython().user_ns.__setitem__("
                      "'__autograder_answer__', forged))",
    # make the kernel's own messages garbage: the grader must not choke
    "breaks-protocol": "import json\njson.dumps = lambda *a, **k: '{}'",
}


def answers_for(attack: str) -> dict[str, str]:
    answers = dict(WRONG)
    answers["mean"] = attack + "\n" + WRONG["mean"] if "def mean" not in attack else attack
    if "np = FakeNp()" in attack:  # the cells after it still need numpy for their wrong answers
        answers["weights"] = "weights = np_real.array([0.5, 0.1])"
    if "label = Yes" in attack:
        answers["label"] = "pass  # label was set to an always-equal string above"
    return answers


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    out = {}
    for mode, flags in (("kernel", ["--in-kernel-tests"]), ("trusted", [])):
        root = make_course(tmp_path_factory.mktemp(mode), source_nb=source_notebook(), lab_toml=LAB_TOML, lab=LAB)
        (root / "solutions" / LAB / "toy.ipynb").rename(root / "solutions" / LAB / NB)
        run_cli("release", LAB, "--course-dir", str(root))
        rel, src = nbformat.read(root / "labs" / LAB / NB, as_version=4), source_notebook()
        submit(root, "solution", fill_answers(rel, src, solved={"mean", "weights", "label"}), lab=LAB, name=NB)
        submit(root, "blank", rel, lab=LAB, name=NB)
        submit(root, "honest-wrong", fill_answers(rel, src, answers=WRONG), lab=LAB, name=NB)
        for student, attack in ATTACKS.items():
            submit(root, student, fill_answers(rel, src, answers=answers_for(attack)), lab=LAB, name=NB)
        proc = run_cli("grade", LAB, "--course-dir", str(root), "--workers", "2", "--no-progress", *flags)
        out[mode] = (cell_scores(root, LAB), proc.stdout, root)
    return out


def test_solution_full_blank_zero_in_both_modes(graded):
    for mode in ("kernel", "trusted"):
        scores = graded[mode][0]
        assert scores["solution"] == {"test_mean": 3, "test_weights": 2, "test_label": 1}, mode
        assert scores["blank"] == {"test_mean": 0, "test_weights": 0, "test_label": 0}, mode
        assert scores["honest-wrong"] == {"test_mean": 0, "test_weights": 0, "test_label": 0}, mode


def test_the_attacks_work_when_tests_run_in_the_kernel(graded):
    """The corpus is real: run the nbgrader way, most attacks earn points they did not answer for."""
    scores = graded["kernel"][0]
    cheated = [s for s in ATTACKS if sum(scores[s].values()) > 0]
    assert len(cheated) >= 6, {s: scores[s] for s in ATTACKS}


@pytest.mark.parametrize("student", list(ATTACKS))
def test_each_attack_scores_what_the_honest_wrong_answer_scores(graded, student):
    scores = graded["trusted"][0]
    assert scores[student] == scores["honest-wrong"], graded["trusted"][1]


def test_a_failed_export_is_reported(graded):
    scores, report, root = graded["trusted"]
    line = next(l for l in report.splitlines() if l.startswith("hijacks-export "))
    assert "could not check trust.ipynb cell test_" in line, line
    graded_nb = (root / "autograded" / "hijacks-export" / LAB / NB).read_text()
    assert "did not answer the grader" in graded_nb


def test_checks_say_they_ran_outside_the_kernel(graded):
    root = graded["trusted"][2]
    nb = nbformat.read(root / "autograded" / "honest-wrong" / LAB / NB, as_version=4)
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("test_")]
    assert all(c.metadata["autograder"]["checked"] == "outside the kernel" for c in tests)
    # the student still sees why: the failing line of the visible test
    assert "assert abs(mean([1, 2, 3]) - 2) < 1e-12" in "\n".join(tests[0].outputs[-1]["traceback"])


def test_free_names_and_kernel_objects():
    assert free_names("import numpy as np\nx = f(a)\nassert np.all(x == b)\n[c for c in d]") == ["f", "a", "b", "d"]

    from autograder.trusted import KernelBridge, KernelObject

    obj = KernelObject(KernelBridge(lambda code, ue: {}), ["#0"], "__main__.Model")
    for use in (lambda o: o == 1, lambda o: bool(o), lambda o: len(o), lambda o: float(o), lambda o: o + 1,
                lambda o: list(o), lambda o: hash(o)):
        with pytest.raises(KernelObjectError):
            use(obj)
