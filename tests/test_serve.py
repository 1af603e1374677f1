"""``autograder serve``: the submission service for a course without a JupyterHub.

Driven over HTTP as a browser without JavaScript would (the real browser is in
``test_serve_browser.py``): sign-in with a course token, upload, the attempt's
status, score and feedback; and every limit the service promises.
"""
from __future__ import annotations

import nbformat
import pytest

from conftest import run_cli
from course_factory import TOY_LAB, TOY_NOTEBOOK, fill_answers, make_course, toy_source_notebook
from submission_service import Service, attempt_id


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = make_course(tmp_path_factory.mktemp("serve") / "course")
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    return root


@pytest.fixture(scope="module")
def service(course):
    service = Service(course, students=("alice", "bob", "dave", "erin"),
                      args=["--workers", "2", "--rate", "3", "--max-upload", "256K"])
    service.start()
    yield service
    service.stop()


def notebook(course, solved=("square", "mean", "total", "why_mean")) -> bytes:
    release = nbformat.read(course / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
    return nbformat.writes(fill_answers(release, toy_source_notebook(), solved=set(solved))).encode()


def test_a_student_hands_in_and_sees_score_feedback_and_history(service, course):
    alice = service.client("alice")
    first = attempt_id(alice.hand_in(TOY_LAB, notebook(course, solved=("square",))))
    second = attempt_id(alice.hand_in(TOY_LAB, notebook(course)))
    assert alice.wait_graded(second)["score"] == 6.0
    page = alice.get(f"/attempts/{second}").text
    assert 'id="score">6 / 6<' in page and "2 point(s) your instructor grades by hand" in page
    feedback = alice.get(f"/attempts/{second}/feedback/toy.html")
    assert feedback.status_code == 200 and "sandbox" in feedback.headers["content-security-policy"]
    assert "square(-4)" not in feedback.text and "BEGIN SOLUTION" not in feedback.text
    # the history lists both; the first was graded or superseded by the second, never lost
    history = alice.get(f"/labs/{TOY_LAB}").text
    assert first in history and second in history
    # any version can be downloaded again, byte for byte
    assert alice.get(f"/attempts/{first}/notebook/{TOY_NOTEBOOK}").content == notebook(course, solved=("square",))
    assert alice.get(f"/attempts/{first}/notebook/timestamp.txt").status_code == 404
    assert alice.get(f"/api/attempts/{first}").json()["status"] in ("graded", "superseded")
    # the instructor's table shows the latest score
    table = service.client("prof").get("/instructor").text
    assert 'data-student="alice"' in table and '<td class="score">6 / 6</td>' in table


def test_no_path_from_one_students_work_to_anothers(service, course):
    alice, bob = service.client("alice"), service.client("bob")
    mine = attempt_id(alice.hand_in(TOY_LAB, notebook(course)))
    alice.wait_graded(mine)
    for path in (f"/attempts/{mine}", f"/attempts/{mine}/feedback/toy.html", f"/api/attempts/{mine}",
                 f"/attempts/{mine}/notebook/{TOY_NOTEBOOK}"):
        assert bob.get(path).status_code == 404
        assert alice.get(path).status_code == 200
    assert mine not in bob.get(f"/labs/{TOY_LAB}").text
    assert bob.get("/instructor").status_code == 403
    assert alice.get(f"/attempts/{mine}/feedback/..%2F..%2Fattempt.json").status_code == 404
    assert alice.get("/attempts/..%2F..%2Ftokens.json").status_code == 404


def test_signing_in_needs_a_valid_token_and_a_form_from_this_site(service):
    anonymous = service.client()
    assert anonymous.get("/").headers["location"] == "/login"
    wrong = anonymous.sign_in("rai_" + "x" * 43)
    assert wrong.status_code == 401 and "not valid for this course" in wrong.text
    forged = anonymous.post("/login", data={"token": service.tokens["alice"], "csrf": "made-up"})
    assert forged.status_code == 403 and "rai_session" not in forged.cookies
    signed = service.client()
    response = signed.sign_in(service.tokens["alice"])
    assert response.status_code == 303, response.text
    session_cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("rai_session="))
    assert "httponly" in session_cookie.lower() and "samesite=strict" in session_cookie.lower()
    cookie = signed.cookies["rai_session"]
    # a tampered session cookie is no session
    other = service.client()
    other.cookies.set("rai_session", cookie.replace(cookie[5], "A" if cookie[5] != "A" else "B", 1))
    assert other.get("/").status_code == 303
    # an upload without the session's CSRF token is refused, and nothing is stored
    before = signed.get(f"/labs/{TOY_LAB}").text.count("/attempts/")
    refused = signed.hand_in(TOY_LAB, b"{}", csrf="not-the-token")
    assert refused.status_code == 403 and signed.get(f"/labs/{TOY_LAB}").text.count("/attempts/") == before


def test_tokens_are_stored_hashed_and_revoking_ends_sessions(service, course):
    stored = (course / ".autograder" / "tokens.json").read_text()
    assert all(token not in stored for token in service.tokens.values())
    erin = service.client("erin")
    assert erin.get("/").status_code == 200
    run_cli("tokens", "revoke", "erin", "--course-dir", str(course))
    assert erin.get("/").headers["location"] == "/login"
    assert service.client().sign_in(service.tokens["erin"]).status_code == 401
    listed = run_cli("tokens", "list", "--course-dir", str(course)).stdout
    assert "alice\tstudent" in listed and "prof\tinstructor" in listed and "erin" not in listed


def test_uploads_are_capped_checked_and_rate_limited(service, course):
    dave = service.client("dave")
    too_big = dave.hand_in(TOY_LAB, b" " * 300_000 + notebook(course))
    assert too_big.status_code == 413 and "upload limit" in too_big.text
    # without a Content-Length (chunked), the body is cut off as it streams in
    csrf = dave.csrf(dave.get("/").text)

    def streamed():
        yield (f'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n--b\r\n'
               f'Content-Disposition: form-data; name="lab"\r\n\r\n{TOY_LAB}\r\n--b\r\n'
               'Content-Disposition: form-data; name="notebook"; filename="toy.ipynb"\r\n\r\n').encode()
        for _ in range(100):
            yield b" " * 10_000
        yield b"\r\n--b--\r\n"

    chunked = dave.post("/submit", content=streamed(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413 and "upload limit" in chunked.text
    not_ipynb = dave.hand_in(TOY_LAB, notebook(course), filename="toy.py")
    assert not_ipynb.status_code == 400 and "Only Jupyter notebooks" in not_ipynb.text
    broken = dave.hand_in(TOY_LAB, notebook(course)[:-40])
    assert broken.status_code == 400 and "its JSON is broken at line" in broken.text
    other_lab = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    wrong = dave.hand_in(TOY_LAB, nbformat.writes(other_lab).encode())
    assert wrong.status_code == 400 and "Did you pick the right lab?" in wrong.text
    assert dave.hand_in("no-such-lab", notebook(course)).status_code == 400
    assert "not handed in yet" in dave.get("/").text  # nothing refused was stored
    accepted = [dave.hand_in(TOY_LAB, notebook(course)) for _ in range(3)]
    assert [r.status_code for r in accepted] == [303, 303, 303]
    limited = dave.hand_in(TOY_LAB, notebook(course))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "the most allowed" in limited.text
    dave.wait_graded(attempt_id(accepted[-1]))


def test_an_upload_stored_while_no_grader_runs_is_graded_after_a_restart(tmp_path):
    course = make_course(tmp_path / "course")
    run_cli("release", TOY_LAB, "--course-dir", str(course))
    service = Service(course, students=("frank",), instructors=())
    service.start("--no-grader")
    try:
        frank = service.client("frank")
        waiting = attempt_id(frank.hand_in(TOY_LAB, notebook(course)))
        assert frank.get(f"/api/attempts/{waiting}").json()["status"] == "pending"
        page = frank.get(f"/attempts/{waiting}").text
        assert "Waiting for a grader" in page and "No grader is running at the moment" in page
        assert frank.get("/healthz").json() == {"ok": True, "waiting": 1, "grader": False}
    finally:
        service.stop()
    service.start("--workers", "1")
    try:
        frank = service.client("frank")
        assert frank.wait_graded(waiting)["score"] == 6.0
        assert frank.get("/healthz").json() == {"ok": True, "waiting": 0, "grader": True}
    finally:
        service.stop()
