"""A student hands in the pilot lab through ``autograder serve``, in a real browser.

Headless Chromium signs in with a course token, uploads the Day 2 fairness
lab's solution and sees the full autograded score and its feedback; uploads
a broken notebook and reads why it was refused; is refused with a wrong token
and on another student's feedback URL.  Screenshots of each step are saved
and their folder printed.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from autograder.course import Course
from autograder.demo import answer_ids, student_version
from conftest import REPO
from headless import browser_fixture, screenshots_fixture  # skips without selenium
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from submission_service import Service

LAB = "day2-fairness"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    course = tmp_path_factory.mktemp("serve-browser")
    service = Service(course, students=("alice", "bob"), instructors=("prof",), args=["--workers", "2"])
    service.start()
    yield service
    service.stop()


browser = browser_fixture()
shots = screenshots_fixture("SERVE_SCREENSHOTS", "the submission service")


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> dict[str, Path]:
    """The pilot lab as a student would hand it in: solved, and broken (a truncated file)."""
    lab = Course(tmp_path_factory.mktemp("course-for-paths")).lab(LAB)
    name = lab.notebooks[0]
    source = nbformat.read(lab.source_dir / name, as_version=4)
    release = nbformat.read(REPO / "labs" / LAB / name, as_version=4)
    folder = tmp_path_factory.mktemp("student")
    solved = folder / name
    nbformat.write(student_version(release, source, solved=set(answer_ids(source))), solved)
    broken = folder / "broken" / name
    broken.parent.mkdir()
    broken.write_bytes(solved.read_bytes()[: len(solved.read_bytes()) // 2])
    return {"solved": solved, "broken": broken}


def wait(browser, condition, seconds: float = 20):
    return WebDriverWait(browser, seconds).until(condition)


def sign_in(browser, url: str, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(url + "/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()


def hand_in(browser, path: Path) -> None:
    wait(browser, EC.presence_of_element_located((By.ID, "upload")))
    browser.find_element(By.CSS_SELECTOR, f"#lab option[value='{LAB}']").click()
    browser.find_element(By.ID, "notebook").send_keys(str(path))
    browser.find_element(By.ID, "hand-in").click()


def test_a_wrong_token_is_refused(browser, service, shots):
    sign_in(browser, service.url, "rai_not-a-token-of-this-course")
    error = wait(browser, EC.visibility_of_element_located((By.ID, "error")))
    assert "not valid for this course" in error.text
    assert browser.current_url.endswith("/login") and not browser.get_cookie("rai_session")
    browser.save_screenshot(str(shots / "1-wrong-token.png"))


def test_the_solution_earns_the_full_autograded_score(browser, service, shots, notebooks):
    sign_in(browser, service.url, service.tokens["alice"])
    wait(browser, EC.text_to_be_present_in_element((By.ID, "who"), "alice"))
    browser.save_screenshot(str(shots / "2-signed-in.png"))
    hand_in(browser, notebooks["solved"])
    wait(browser, EC.presence_of_element_located((By.ID, "attempt")))
    browser.save_screenshot(str(shots / "3-waiting.png"))
    # the page polls and reloads itself when the grader is done
    score = wait(browser, EC.visibility_of_element_located((By.ID, "score")), seconds=240)
    got, full = (float(x) for x in score.text.split("/"))
    assert got == full > 0, score.text
    browser.save_screenshot(str(shots / "4-graded.png"))
    browser.find_element(By.ID, "feedback-link").click()
    wait(browser, lambda b: "feedback" in b.current_url)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text
    browser.save_screenshot(str(shots / "5-feedback.png"))


def test_a_broken_notebook_gets_a_clear_message(browser, service, shots, notebooks):
    sign_in(browser, service.url, service.tokens["alice"])
    hand_in(browser, notebooks["broken"])
    error = wait(browser, EC.visibility_of_element_located((By.ID, "error")))
    assert "not a readable Jupyter notebook" in error.text and "save it again" in error.text
    browser.save_screenshot(str(shots / "6-broken.png"))


def test_another_students_feedback_is_refused(browser, service, shots):
    alice = service.client("alice")
    mine = _latest_graded(alice)
    name = alice.get(f"/api/attempts/{mine}").json()["feedback"][0]
    feedback_url = f"{service.url}/attempts/{mine}/feedback/{name}"
    assert alice.get(feedback_url).status_code == 200  # it exists: bob is refused, not missing it
    sign_in(browser, service.url, service.tokens["bob"])
    wait(browser, EC.text_to_be_present_in_element((By.ID, "who"), "bob"))
    browser.get(feedback_url)
    error = wait(browser, EC.visibility_of_element_located((By.ID, "error")))
    assert "no such attempt" in error.text.lower()
    browser.save_screenshot(str(shots / "7-not-yours.png"))


def _latest_graded(client) -> str:
    """The id of a graded attempt on the lab's history page (links to attempts, not to their files)."""
    page = client.get(f"/labs/{LAB}").text
    ids = re.findall(r'href="/attempts/([^"/]+)"', page)
    graded = [i for i in ids if client.get(f"/api/attempts/{i}").json()["status"] == "graded"]
    assert graded, page
    return graded[0]


def test_the_instructor_sees_the_latest_score(browser, service, shots):
    sign_in(browser, service.url, service.tokens["prof"])
    row = wait(browser, EC.visibility_of_element_located(
        (By.CSS_SELECTOR, f"table[data-lab='{LAB}'] tr[data-student='alice'] td.score")))
    got, full = (float(x) for x in row.text.split("/"))
    assert got == full > 0
    browser.save_screenshot(str(shots / "8-instructor.png"))
