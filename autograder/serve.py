"""``autograder serve``: hand in a lab and get its score and feedback, without a JupyterHub.

A small FastAPI application.  A student signs in with the course token an
instructor issued (``autograder tokens add STUDENT``), picks a lab, uploads the
notebook, and watches the attempt go from *waiting* to *graded*, with the
score and nbgrader's feedback (hidden tests removed); every attempt of a lab
stays listed.  An instructor's token opens a table of every student's latest
score per lab.

The web process never grades and never runs student code: it stores each
upload as an attempt (:mod:`autograder.attempts`, written in full before the
reply) and the grading loop of ``autograder watch`` -- started by ``serve`` as
a child process, or running on its own -- grades it in the sandbox and writes
the result back.  A restart of either loses nothing.

Safety: uploads are capped in size (checked while the body streams in) and
must be notebooks of the chosen lab; each student has an upload rate limit
and failed sign-ins are limited per client address; tokens are stored
hashed; the session cookie is signed, HttpOnly and SameSite=Strict, and
every form carries a CSRF token bound to the session; an attempt is found
only for its own student (or an instructor), and feedback HTML is served in
a CSP sandbox so that nothing in a notebook's output runs as the site.
"""
from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from .attempts import FINISHED, GRADED, Attempt, AttemptStore, utcnow
from .course import Course, CourseError
from .intake import loop_pid
from .tokens import Identity, TokenStore

SESSION_COOKIE = "rai_session"
LOGIN_CSRF_COOKIE = "rai_login_csrf"
PAGE_CSP = ("default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
# feedback is the student's own notebook rendered: in a sandbox it is a page of its own origin
# that may not run scripts, submit forms or read the site's cookies
FEEDBACK_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


@dataclass
class ServeSettings:
    max_upload_bytes: int = 8 * 2**20
    uploads_per_window: int = 10       # per student ...
    window_seconds: int = 600          # ... in this many seconds
    failed_logins_per_window: int = 20  # per client address
    session_seconds: int = 12 * 3600
    secure_cookies: bool = False       # True behind HTTPS (a reverse proxy)


class UploadTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``limit`` bytes before it is read in full (ASGI middleware)."""

    def __init__(self, app, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.limit:
            return await self._refuse(send)
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except UploadTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = self.message.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def session_secret(course: Course) -> bytes:
    """The key that signs sessions: made once per course, readable by the instructor only."""
    path = course.state / "serve-secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _sign(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def check_notebook(data: bytes, expected_ids: set[str], lab: str) -> str | None:
    """Why ``data`` cannot be graded as a notebook of ``lab``, in words for the student; None if it can."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "this file is not a Jupyter notebook (it is not text). Upload the .ipynb file Jupyter saved."
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return (f"this file is not a readable Jupyter notebook: its JSON is broken at line {exc.lineno}, "
                f"column {exc.colno} ({exc.msg}). Open it in Jupyter, save it again and upload that file.")
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return "this file is JSON but not a Jupyter notebook (it has no cells)."
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 -- nbformat raises many kinds; the student needs the words
        return f"this file is not a notebook nbformat can read: {exc}".splitlines()[0]
    ids = {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in nb.cells}
    if expected_ids and not (ids & expected_ids):
        return (f"this notebook is not the {lab} lab's (none of its cells belongs to that lab). "
                "Did you pick the right lab?")
    return None


class Portal:
    """The application's state and its rules; the routes below only call these."""

    def __init__(self, course: Course, settings: ServeSettings):
        self.course = course
        self.settings = settings
        self.store = AttemptStore(course)
        self.tokens = TokenStore(course)
        self.secret = session_secret(course)
        self.failed_logins: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lab_ids: dict[str, set[str]] = {}
        self.templates = Environment(loader=PackageLoader("autograder", "templates"),
                                     autoescape=select_autoescape(["html"]))
        self.templates.filters["when"] = _when

    # -- sessions ---------------------------------------------------------------
    def open_session(self, identity: Identity) -> str:
        payload = {"n": identity.name, "r": identity.role, "k": identity.token_id, "s": secrets.token_hex(16),
                   "e": int(time.time()) + self.settings.session_seconds}
        text = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
        return f"{text}.{_sign(self.secret, 'session:' + text)}"

    def session(self, request: Request) -> tuple[Identity, str] | None:
        """(who, session nonce) of a valid session cookie, else None."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        text, _, signature = cookie.rpartition(".")
        if not text or not hmac.compare_digest(_sign(self.secret, "session:" + text), signature):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(text.encode()))
            identity = Identity(payload["n"], payload["r"], payload["k"])
        except (ValueError, KeyError, TypeError):
            return None
        if payload.get("e", 0) < time.time() or not self.tokens.still_valid(identity):
            return None
        return identity, payload["s"]

    def csrf_token(self, nonce: str) -> str:
        return _sign(self.secret, "csrf:" + nonce)[:40]

    def check_csrf(self, nonce: str, presented) -> None:
        if not isinstance(presented, str) or not hmac.compare_digest(self.csrf_token(nonce), presented):
            raise HTTPException(403, "This form has expired or did not come from this site. "
                                     "Reload the page and try again.")

    def login_allowed(self, client: str) -> bool:
        window = self.failed_logins[client]
        while window and window[0] < time.time() - self.settings.window_seconds:
            window.popleft()
        return len(window) < self.settings.failed_logins_per_window

    # -- labs and attempts ---------------------------------------------------------
    def labs(self) -> list:
        labs = []
        for name in self.course.lab_names():
            try:
                labs.append(self.course.lab(name))
            except CourseError:
                continue
        return labs

    def lab_grade_ids(self, lab) -> set[str]:
        if lab.name not in self._lab_ids:
            ids = set()
            for name in lab.notebooks:
                nb = nbformat.read(lab.source_dir / name, as_version=4)
                ids |= {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}
            self._lab_ids[lab.name] = ids
        return self._lab_ids[lab.name]

    def attempt_for(self, identity: Identity, attempt_id: str) -> Attempt:
        """The attempt, if this person may see it; the same 404 whether it is someone else's or absent."""
        attempt = self.store.find(attempt_id)
        if attempt is None or (attempt.student != identity.name and not identity.instructor):
            raise HTTPException(404, "There is no such attempt among yours.")
        return attempt

    def queue_position(self, attempt: Attempt) -> int:
        return sum(1 for a in self.store.waiting() if a.id < attempt.id)

    def uploads_left(self, student: str) -> tuple[int, float]:
        """(uploads still allowed now, seconds until the oldest in the window expires)."""
        since = utcnow() - dt.timedelta(seconds=self.settings.window_seconds)
        received = (dt.datetime.fromisoformat(a.received) for a in self.store.all(student=student))
        recent = sorted(when for when in received if when > since)
        left = self.settings.uploads_per_window - len(recent)
        wait = (recent[0] - since).total_seconds() if recent else 0.0
        return left, wait

    def store_upload(self, identity: Identity, lab_name: str, filename: str, data: bytes) -> Attempt:
        try:
            lab = self.course.lab(lab_name)
        except CourseError:
            raise HTTPException(400, f"There is no lab called {lab_name!r} in this course.") from None
        if not filename.lower().endswith(".ipynb"):
            raise HTTPException(400, f"Only Jupyter notebooks (.ipynb) can be handed in; {filename!r} is not one.")
        if not data:
            raise HTTPException(400, "The file is empty.")
        problem = check_notebook(data, self.lab_grade_ids(lab), lab.name)
        if problem:
            raise HTTPException(400, f"{filename}: {problem}")
        if len(lab.notebooks) == 1:
            files = {lab.notebooks[0]: data}
        elif filename in lab.notebooks:  # one of several: the others from the latest attempt
            files = {}
            previous = self.store.all(lab=lab.name, student=identity.name)
            if previous:
                folder = self.store.files(previous[-1])
                files = {nb: (folder / nb).read_bytes() for nb in lab.notebooks if (folder / nb).is_file()}
            files[filename] = data
        else:
            raise HTTPException(400, f"{lab.name} has the notebooks {', '.join(lab.notebooks)}; "
                                     f"upload one of them under its own name, not {filename!r}.")
        left, wait = self.uploads_left(identity.name)
        if left <= 0:
            raise HTTPException(429, f"You have handed in {self.settings.uploads_per_window} notebooks in the "
                                     f"last {self.settings.window_seconds // 60} minutes, the most allowed. "
                                     f"Try again in {max(1, round(wait / 60))} minute(s).",
                                headers={"Retry-After": str(max(1, int(wait)))})
        return self.store.add(identity.name, lab.name, files, "upload", origin=filename)

    # -- pages ----------------------------------------------------------------------
    def page(self, request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
        session = self.session(request)
        if session:
            context.setdefault("user", session[0])
            context.setdefault("csrf", self.csrf_token(session[1]))
        html = self.templates.get_template(template).render(title=context.pop("title", ""), **context)
        return HTMLResponse(html, status_code=status_code)


def create_app(course: Course, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    portal = Portal(course, settings)
    app = FastAPI(title="Responsible AI at Scale: hand in a lab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.portal = portal
    limit_mib = settings.max_upload_bytes / 2**20
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024, message=portal.templates.get_template(
        "error.html").render(title="Too large", status=413, message=(
            f"The file is larger than the upload limit ({limit_mib:g} MiB). A lab notebook is usually far "
            "smaller: clear its outputs (Kernel, Restart and Clear Output), save, and upload again.")))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 401 and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        response = portal.page(request, "error.html", exc.status_code, title="Not possible", status=exc.status_code,
                               message=exc.detail)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    def signed_in(request: Request) -> tuple[Identity, str]:
        session = portal.session(request)
        if session is None:
            raise HTTPException(401, "Sign in first.")
        return session

    def cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=settings.secure_cookies, path="/")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request):
        nonce = secrets.token_hex(16)
        response = portal.page(request, "login.html", title="Sign in", login_csrf=nonce)
        cookie(response, LOGIN_CSRF_COOKIE, nonce, 3600)
        return response

    @app.post("/login")
    async def login(request: Request):
        form = await request.form(max_files=0, max_fields=4)
        presented, expected = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)
        if not expected or not isinstance(presented, str) or not hmac.compare_digest(expected, presented):
            raise HTTPException(403, "This sign-in form has expired or did not come from this site. "
                                     "Reload the page and try again.")
        client = request.client.host if request.client else "?"
        if not portal.login_allowed(client):
            raise HTTPException(429, "Too many failed sign-ins from your address; wait a few minutes.")
        identity = portal.tokens.identify(str(form.get("token", "")).strip())
        if identity is None:
            portal.failed_logins[client].append(time.time())
            nonce = secrets.token_hex(16)
            response = portal.page(request, "login.html", 401, title="Sign in", login_csrf=nonce,
                                   error="That token is not valid for this course. Check it, or ask your "
                                         "instructor for a new one.")
            cookie(response, LOGIN_CSRF_COOKIE, nonce, 3600)
            return response
        response = RedirectResponse("/instructor" if identity.instructor else "/", status_code=303)
        cookie(response, SESSION_COOKIE, portal.open_session(identity), settings.session_seconds)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request):
        _, nonce = signed_in(request)
        form = await request.form(max_files=0, max_fields=4)
        portal.check_csrf(nonce, form.get("csrf"))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        session = portal.session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        identity = session[0]
        if identity.instructor:
            return RedirectResponse("/instructor", status_code=303)
        rows = []
        for lab in portal.labs():
            attempts = portal.store.all(lab=lab.name, student=identity.name)
            rows.append({"lab": lab, "latest": attempts[-1] if attempts else None, "count": len(attempts)})
        left, _ = portal.uploads_left(identity.name)
        return portal.page(request, "home.html", title="Your labs", rows=rows, uploads_left=left,
                           settings=settings, limit_mib=limit_mib)

    @app.post("/submit")
    async def submit(request: Request):
        identity, nonce = signed_in(request)
        if identity.instructor:
            raise HTTPException(403, "Instructors do not hand in labs here; sign in with a student token.")
        form = await request.form(max_files=1, max_fields=4)
        portal.check_csrf(nonce, form.get("csrf"))
        upload = form.get("notebook")
        if upload is None or isinstance(upload, str) or not upload.filename:
            raise HTTPException(400, "Choose a notebook file to upload.")
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"The file is larger than the upload limit ({limit_mib:g} MiB).")
        attempt = portal.store_upload(identity, str(form.get("lab", "")), Path(upload.filename).name, data)
        return RedirectResponse(f"/attempts/{attempt.id}", status_code=303)

    @app.get("/labs/{lab_name}", response_class=HTMLResponse)
    def lab_history(request: Request, lab_name: str):
        identity, _ = signed_in(request)
        try:
            lab = course.lab(lab_name)
        except CourseError:
            raise HTTPException(404, f"There is no lab called {lab_name!r}.") from None
        attempts = list(reversed(portal.store.all(lab=lab.name, student=identity.name)))
        return portal.page(request, "lab.html", title=lab.title, lab=lab, attempts=attempts)

    @app.get("/attempts/{attempt_id}", response_class=HTMLResponse)
    def attempt_page(request: Request, attempt_id: str):
        identity, _ = signed_in(request)
        attempt = portal.attempt_for(identity, attempt_id)
        lab = course.lab(attempt.lab)
        return portal.page(request, "attempt.html", title=f"{lab.title}: attempt", lab=lab, attempt=attempt,
                           ahead=portal.queue_position(attempt) if attempt.waiting else 0,
                           grader=loop_pid(course) is not None)

    @app.get("/api/attempts/{attempt_id}")
    def attempt_status(request: Request, attempt_id: str):
        identity, _ = signed_in(request)
        attempt = portal.attempt_for(identity, attempt_id)
        return {"id": attempt.id, "status": attempt.status, "score": attempt.score, "max_score": attempt.max_score,
                "manual_pending": attempt.manual_pending, "message": attempt.message,
                "finished": attempt.status in FINISHED, "feedback": attempt.feedback,
                "ahead": portal.queue_position(attempt) if attempt.waiting else 0}

    @app.get("/attempts/{attempt_id}/feedback/{name}")
    def feedback(request: Request, attempt_id: str, name: str):
        identity, _ = signed_in(request)
        attempt = portal.attempt_for(identity, attempt_id)
        if name not in attempt.feedback:
            raise HTTPException(404, "This attempt has no such feedback.")
        html = (portal.store.feedback_dir(attempt) / name).read_bytes()
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": FEEDBACK_CSP})

    @app.get("/attempts/{attempt_id}/notebook/{name}")
    def handed_in(request: Request, attempt_id: str, name: str):
        """The notebook as it was handed in: a student gets any earlier version back."""
        identity, _ = signed_in(request)
        attempt = portal.attempt_for(identity, attempt_id)
        path = portal.store.files(attempt) / name
        if name not in course.lab(attempt.lab).notebooks or not path.is_file():
            raise HTTPException(404, "This attempt has no such notebook.")
        return Response(path.read_bytes(), media_type="application/x-ipynb+json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/instructor", response_class=HTMLResponse)
    def instructor(request: Request):
        identity, _ = signed_in(request)
        if not identity.instructor:
            raise HTTPException(403, "This page is for instructors.")
        tables = []
        for lab in portal.labs():
            attempts = portal.store.all(lab=lab.name)
            latest = {a.student: a for a in attempts}
            graded = {a.student: a for a in attempts if a.status == GRADED}
            counts = collections.Counter(a.student for a in attempts)
            tables.append({"lab": lab, "rows": [{"student": s, "latest": latest[s], "graded": graded.get(s),
                                                 "count": counts[s]} for s in sorted(latest)],
                           "waiting": sum(a.waiting for a in attempts)})
        return portal.page(request, "instructor.html", title="Latest scores", tables=tables,
                           tokens=portal.tokens.list())

    @app.get("/static/{name}")
    def static(name: str):
        files = {"app.css": "text/css", "status.js": "text/javascript"}
        if name not in files:
            raise HTTPException(404, "No such file.")
        return Response((Path(__file__).parent / "templates" / name).read_bytes(), media_type=files[name],
                        headers={"Cache-Control": "max-age=300"})

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "waiting": len(portal.store.waiting()), "grader": loop_pid(course) is not None}

    return app


def _when(value: str | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
