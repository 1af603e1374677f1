"""Memory limits for a kernel and all its children, with Linux cgroups.

cgroup v2 is used where this process's cgroup can delegate the ``memory``
controller; otherwise cgroup v1's ``memory`` hierarchy.  The kernel's process
joins a fresh child cgroup right after it starts; everything it starts later
(``notebook_launcher`` workers, a fork bomb) is born inside it.  When the group
passes its limit the OOM killer kills inside that group only, so the grader and
the other workers are never touched.

Where neither is available (no cgroup file system, not allowed to write it,
or ``AUTOGRADER_CGROUPS=off``) the fallback is per-process resource limits
(:func:`with_rlimits`): ``RLIMIT_DATA`` caps each process's heap and anonymous
memory at the limit, so a memory bomb in the kernel gets a ``MemoryError``; but
the kernel's children are each capped separately, not together, and there is
no cap on the number of processes.  :func:`memory_cgroup_support` says which
applies, and the grader warns when it is the fallback.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    except OSError:
        pass
    return out


def _v2_mount() -> Path | None:
    for candidate in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (candidate / "cgroup.controllers").is_file():
            return candidate
    return None


#: set to "off" to use the rlimit fallback even where cgroups work (tests, odd clusters)
CGROUPS_ENV = "AUTOGRADER_CGROUPS"


def cgroups_disabled() -> bool:
    return os.environ.get(CGROUPS_ENV, "").strip().lower() in {"off", "0", "no", "false"}


def _v2_parent() -> Path | None:
    """A v2 directory under which a child cgroup gets the memory controller, if any."""
    mount = _v2_mount()
    own = _own_cgroups().get("")
    if mount is None or own is None:
        return None
    parent = mount / own.lstrip("/")
    try:
        if "memory" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text("+memory")
        return parent
    except OSError:
        return None


def _v1_parent(controller: str = "memory", probe: str = "memory.limit_in_bytes") -> Path | None:
    """This process's cgroup in the v1 hierarchy of ``controller``, if it exists and we may write it."""
    own = _own_cgroups().get(controller)
    mount = CGROUP_ROOT / controller
    if own is None or not (mount / probe).exists():
        return None
    parent = mount / own.lstrip("/")
    return parent if os.access(parent, os.W_OK) else None


def _v1_pids_parent() -> Path | None:
    return _v1_parent("pids", "cgroup.procs")


def memory_cgroup_support() -> tuple[str | None, str]:
    """("v2" | "v1" | None, explanation)."""
    if cgroups_disabled():
        return None, (f"cgroups turned off ({CGROUPS_ENV}={os.environ[CGROUPS_ENV]}): memory is limited "
                      "per process (RLIMIT_DATA), not for a kernel and its children together")
    if _v2_parent() is not None:
        return "v2", "cgroup v2 memory controller"
    if _v1_parent() is not None:
        return "v1", "cgroup v1 memory controller"
    return None, ("no writable cgroup memory controller (v2 or v1) on this machine: memory is limited "
                  "per process (RLIMIT_DATA), not for a kernel and its children together")


# setrlimit, then exec the command: run before the kernel (or bwrap) so that every
# process it starts inherits the limits.  A hard limit is never raised.
_RLIMIT_SHIM = """\
import os, resource, sys
for item in sys.argv[1].split(","):
    name, value = item.split("=")
    which = getattr(resource, "RLIMIT_" + name)
    hard = resource.getrlimit(which)[1]
    value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
    resource.setrlimit(which, (value, value))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def with_rlimits(command: list[str], rlimits: dict[str, int]) -> list[str]:
    """``command`` run under resource limits, e.g. ``{"DATA": 2**30, "FSIZE": 2**30}`` (bytes)."""
    if not rlimits:
        return list(command)
    spec = ",".join(f"{name}={int(value)}" for name, value in sorted(rlimits.items()))
    return [sys.executable, "-c", _RLIMIT_SHIM, spec, *command]


@dataclass
class MemoryCgroup:
    """One child cgroup holding a kernel and its descendants."""

    path: Path
    version: str
    limit: int | None
    pids_path: Path | None = None  # cgroup v1 keeps the pids controller in a hierarchy of its own
    pids_limit: int | None = None

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid into to join (all controllers)."""
        return [self.path / "cgroup.procs"] + ([self.pids_path / "cgroup.procs"] if self.pids_path else [])

    @classmethod
    def create(cls, limit: int | None, prefix: str = "autograder",
               pids_limit: int | None = None) -> "MemoryCgroup | None":
        """A new child cgroup with ``limit`` bytes (None: no limit, the group still reaps leftovers)
        and at most ``pids_limit`` tasks (processes and threads), where the pids controller exists."""
        version, _ = memory_cgroup_support()
        if version is None:
            return None
        parent = _v2_parent() if version == "v2" else _v1_parent()
        name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = parent / name
        pids_path = None
        try:
            path.mkdir()
            if pids_limit is not None:
                if version == "v2" and (path / "pids.max").exists():
                    (path / "pids.max").write_text(str(pids_limit))
                elif version == "v1" and _v1_pids_parent() is not None:
                    pids_path = _v1_pids_parent() / name
                    pids_path.mkdir()
                    (pids_path / "pids.max").write_text(str(pids_limit))
            if limit is None:
                pass
            elif version == "v2":
                (path / "memory.max").write_text(str(limit))
                (path / "memory.swap.max").write_text("0") if (path / "memory.swap.max").exists() else None
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit))
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(limit))
        except OSError:
            for p in (pids_path, path):
                try:
                    p and p.rmdir()
                except OSError:
                    pass
            return None
        return cls(path=path, version=version, limit=limit, pids_path=pids_path, pids_limit=pids_limit)

    def add(self, pid: int) -> None:
        for procs in self.procs_files:
            procs.write_text(str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found |= {int(p) for p in procs.read_text().split()}
            except OSError:
                pass
        return sorted(found)

    def pids_limit_hit(self) -> bool:
        """Whether a fork failed because the group was at its task limit."""
        where = self.pids_path or self.path
        try:
            for line in (where / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def oom_kills(self) -> int:
        """How many processes the OOM killer took in this group (0 if it cannot tell)."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        if self.version == "v1":  # older kernels have no oom_kill counter
            try:
                return int((self.path / "memory.failcnt").read_text()) and 1
            except (OSError, ValueError):
                return 0
        return 0

    def peak(self) -> int | None:
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def destroy(self) -> None:
        """Kill whatever is left in the group and remove it."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        for path in (self.pids_path, self.path):
            try:
                path and path.rmdir()
            except OSError:
                pass


def remove_orphaned_cgroups(prefix: str = "autograder") -> int:
    """Destroy child cgroups made by grader processes that no longer exist (killed runs)."""
    import re

    removed = 0
    for parent in (_v2_parent(), _v1_parent(), _v1_pids_parent()):
        if parent is None:
            continue
        version = "v2" if parent == _v2_parent() else "v1"
        for path in parent.glob(f"{prefix}-*"):
            match = re.match(rf"{prefix}-(\d+)-", path.name)
            if not match or not path.is_dir():
                continue
            try:
                os.kill(int(match.group(1)), 0)
                continue  # its grader is alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            MemoryCgroup(path=path, version=version, limit=None).destroy()
            removed += 1
    return removed
