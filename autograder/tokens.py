"""Course tokens for ``autograder serve``: one per student (or instructor), stored hashed.

``autograder tokens add alice bob`` prints each new token once; the course
keeps only its SHA-256 (a token is 32 random bytes, so a fast hash is enough:
there is no password to guess).  Adding a name again replaces its token, which
also ends the sessions signed in with the old one; ``revoke`` removes it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from .attempts import check_id
from .course import Course, CourseError
from .worker import atomic_write

TOKENS_FILE = "tokens.json"
PREFIX = "rai_"
ROLES = ("student", "instructor")


@dataclass(frozen=True)
class Identity:
    name: str
    role: str          # "student" | "instructor"
    token_id: str      # first characters of the token's hash: a session is valid while this token is

    @property
    def instructor(self) -> bool:
        return self.role == "instructor"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class TokenStore:
    def __init__(self, course: Course):
        self.path = course.state / TOKENS_FILE

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise CourseError(f"{self.path} is damaged ({exc}); restore it or issue new tokens") from None
        return dict(data.get("tokens", {}))

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, tokens: dict[str, dict]) -> None:
        atomic_write(self.path, json.dumps({"version": 1, "tokens": tokens}, indent=1, sort_keys=True))

    def add(self, name: str, role: str = "student") -> str:
        """Issue a new token for ``name`` (replacing any earlier one) and return it: shown once, never stored."""
        check_id("name", name)
        if role not in ROLES:
            raise CourseError(f"not a role: {role!r} ({', '.join(ROLES)})")
        token = PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            tokens = self._read()
            tokens[name] = {"sha256": token_hash(token), "role": role,
                            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            self._write(tokens)
        return token

    def revoke(self, name: str) -> bool:
        with self._locked():
            tokens = self._read()
            if tokens.pop(name, None) is None:
                return False
            self._write(tokens)
        return True

    def list(self) -> dict[str, dict]:
        return {name: {"role": e["role"], "created": e.get("created", "")} for name, e in sorted(self._read().items())}

    def identify(self, token: str) -> Identity | None:
        """Who holds ``token``, or None."""
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 200:
            return None
        digest = token_hash(token.strip())
        found = None
        for name, entry in self._read().items():
            if hmac.compare_digest(entry.get("sha256", ""), digest):
                found = Identity(name, entry.get("role", "student"), digest[:16])
        return found

    def still_valid(self, identity: Identity) -> bool:
        """The token a session was opened with is still the holder's (not revoked nor replaced)."""
        entry = self._read().get(identity.name)
        return bool(entry) and entry.get("role") == identity.role and hmac.compare_digest(
            entry.get("sha256", "")[:16], identity.token_id)

