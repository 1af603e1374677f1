"""``autograder serve`` started as an instructor would, for the tests and the latency benchmark."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A running ``autograder serve`` on a free loopback port, with tokens issued for ``students``."""

    def __init__(self, course_dir: Path, students=("alice", "bob"), instructors=("prof",), args=(),
                 env: dict[str, str] | None = None):
        self.course_dir = Path(course_dir)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.tokens: dict[str, str] = {}
        for names, extra in ((students, []), (instructors, ["--instructor"])):
            if names:
                out = self._cli("tokens", "add", *names, *extra).stdout
                self.tokens.update(line.split(",", 1) for line in out.splitlines() if not line.startswith("#"))
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([shutil.which("autograder"), *args, "--course-dir", str(self.course_dir)],
                              capture_output=True, text=True, env=self.env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    def start(self, *extra: str) -> "Service":
        port = free_port()
        self.log = open(self.course_dir / f"serve-{port}.log", "w")
        self.proc = subprocess.Popen([shutil.which("autograder"), "serve", "--course-dir", str(self.course_dir),
                                      "--port", str(port), "--quiet", *self.args, *extra],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"autograder serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"autograder serve did not answer within 60 s:\n{self.output()}")

    def output(self) -> str:
        return (self.course_dir / Path(self.log.name).name).read_text()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def client(self, name: str | None = None, token: str | None = None) -> "Client":
        client = Client(self.url)
        if name or token:
            client.sign_in(token or self.tokens[name])
        return client


class Client(httpx.Client):
    """A browser without JavaScript: cookies, forms with their CSRF field."""

    def __init__(self, url: str):
        super().__init__(base_url=url, follow_redirects=False, timeout=30)

    @staticmethod
    def csrf(page: str) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    def sign_in(self, token: str) -> httpx.Response:
        response = self.post("/login", data={"token": token, "csrf": self.csrf(self.get("/login").text)})
        return response

    def hand_in(self, lab: str, data: bytes, filename: str = "notebook.ipynb", csrf: str | None = None):
        csrf = self.csrf(self.get("/").text) if csrf is None else csrf
        return self.post("/submit", data={"csrf": csrf, "lab": lab}, files={"notebook": (filename, data)})

    def wait_graded(self, attempt_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/api/attempts/{attempt_id}").json()
            if status["finished"]:
                return status
            time.sleep(0.2)
        raise AssertionError(f"attempt {attempt_id} not graded within {timeout} s")


def attempt_id(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]
