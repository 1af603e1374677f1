"""A Jupyter kernel manager whose kernel runs inside a bubblewrap sandbox.

:class:`SandboxedKernelManager` is a drop-in replacement for jupyter_client's
``AsyncKernelManager`` (nbclient and papermill need the async manager).  The
kernel process is started as ``bwrap [options] -- python -m ipykernel_launcher
-f <connection file>`` so that a submission

* has no network at all (``--unshare-net``: a new network namespace that holds
  only a loopback interface);
* sees only its own processes (``--unshare-pid``), and dies with the grader
  (``--die-with-parent``: when the outer ``bwrap`` process is killed, the
  namespace's init is killed, and with it every process in the namespace,
  daemons included);
* sees only: the Python environment (read-only), the system directories a
  Python needs (read-only), a handful of files from ``/etc``, the scratch
  directory of this one submission (read-write, the kernel's cwd), the paths
  given in ``readonly_paths`` (read-only) and a private, empty ``/tmp``;
* gets a clean, minimal environment instead of the grader's;
* with ``scratch_size`` set, can write only into one private tmpfs of that
  size (``/tmp``, which holds its working directory ``/tmp/submission``); the
  files the grader put in the scratch directory are visible read-only at
  ``/autograder/submission`` and copied into the working directory by
  :meth:`SandboxedKernelManager.load_submission` before any student code runs.
  The root of the sandbox is read-only.

The kernel talks to the grader over jupyter_client's ``ipc`` transport: the
five ZeroMQ sockets are files in a private directory that is bound into the
sandbox at the same path, so no network is needed (nor possible).

Why a kernel *manager* subclass and not a kernel *provisioner*: a provisioner
is found through the ``jupyter_client.kernel_provisioners`` entry point and
named in the kernelspec, so it would need a packaging change and a kernelspec
of its own; a manager subclass is picked per kernel by whoever starts it (the
worker's ``start_kernel``, or papermill's ``kernel_manager_class``), takes its
settings as traits, and keeps the stock ``LocalProvisioner`` (process group,
``kill``, ``send_signal``) unchanged.

Interrupts: the outer ``bwrap`` process does not forward signals, and the
kernel runs in a session of its own inside the namespace (``--new-session``),
so a SIGINT to the provisioner's process group never reaches it.  The manager
therefore uses the kernelspec's ``interrupt_mode = "message"``: the interrupt
is an ``interrupt_request`` on the control channel, and ipykernel sends SIGINT
to its own process group from inside the sandbox.  Kill is unchanged: SIGKILL
to the process group of ``km.provisioner.process.pid`` kills the outer
``bwrap``, and ``--die-with-parent`` plus the PID namespace take down the rest.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Dict, Int, List, Unicode, default

#: the host name inside the sandbox; its /etc/hosts maps it to the loopback
SANDBOX_HOSTNAME = "sandbox"

#: files and directories of ``/etc`` that the kernel sees (read-only, when present):
#: the dynamic loader's cache, name service for ``localhost`` and user names,
#: time zone and locale data, TLS roots.  No shadow files, no ssh, no apt, no pip.conf.
ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/mime.types",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/fonts",
    "/etc/os-release",
)

#: system directories bound read-only (or recreated as the same symlink, when
#: they are symlinks on the host, as on merged-/usr systems)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

READONLY_ENV = "AUTOGRADER_SANDBOX_READONLY"

#: with ``scratch_size``: the kernel's working directory (on the sized tmpfs) and where the
#: grader's copy of the submission is visible read-only
WORKDIR = "/tmp/submission"
INBOX = "/autograder/submission"


class SandboxError(RuntimeError):
    """The sandbox could not be set up for a submission."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or (shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin"))


def bwrap_available() -> tuple[bool, str]:
    """Whether a bubblewrap sandbox with new network and PID namespaces can be made here, and why not."""
    exe = bwrap_path()
    if exe is None:
        return False, ("bubblewrap is not installed: `bwrap` is not on PATH "
                       "(Debian/Ubuntu: apt-get install bubblewrap; .ci/setup installs it)")
    cmd = [exe, "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session",
           "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bubblewrap ({exe}) could not run: {exc}"
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        return False, (f"bubblewrap ({exe}) cannot create network/PID namespaces here: {why} "
                       "(unprivileged user namespaces disabled, or a container without CAP_SYS_ADMIN?)")
    return True, f"bubblewrap works ({exe})"


def python_paths() -> list[str]:
    """The directories of the running Python environment, symlink targets included (venv, base, pyenv)."""
    paths: list[str] = []
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                  os.path.dirname(sys.executable)]
    for path in candidates:
        for p in (os.path.abspath(path), os.path.realpath(path)):
            if p not in paths:
                paths.append(p)
    # the real file behind the interpreter (e.g. venv/bin/python -> ~/.pyenv/versions/X/bin/python3.11)
    real_exe_prefix = str(Path(os.path.realpath(sys.executable)).parent.parent)
    if real_exe_prefix not in paths:
        paths.append(real_exe_prefix)
    return _minimal(paths)


def _minimal(paths: t.Iterable[str]) -> list[str]:
    """Drop paths that lie under another path of the list (binding the parent is enough)."""
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _default_readonly() -> list[str]:
    value = os.environ.get(READONLY_ENV, "")
    return [p for p in value.split(os.pathsep) if p]


class LimitedKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` whose kernel starts under resource limits (``rlimits``,
    e.g. ``{"FSIZE": 2**30, "DATA": 4 * 2**30}``; see :func:`autograder.limits.with_rlimits`)."""

    rlimits = Dict(help="RLIMIT_<NAME> -> value for the kernel and all it starts").tag(config=True)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        from .limits import with_rlimits

        return with_rlimits(super().format_kernel_cmd(extra_arguments), dict(self.rlimits))


class SandboxedKernelManager(LimitedKernelManager):
    """``AsyncKernelManager`` whose kernel runs under bubblewrap (see module doc).

    Traits (constructor keywords):

    ``readonly_paths``  extra paths visible read-only at the same path (the lab's
                        data files, the course's editable support package);
                        default: ``$AUTOGRADER_SANDBOX_READONLY`` (``os.pathsep``-separated),
                        so a class named by string (papermill) can be configured.
    ``writable_paths``  extra paths visible read-write (the scratch directory,
                        the ``cwd`` given to ``start_kernel``, is always writable).
    ``env``             extra environment variables for the kernel.
    ``device_paths``    device nodes passed through (default: ``/dev/nvidia*`` if present).
    ``cgroup_procs``    a ``cgroup.procs`` file: the sandbox joins that cgroup before
                        it starts, so every process in it is accounted and limited.
    ``scratch_size``    bytes the kernel may write (0: no cap, and the ``cwd`` given to
                        ``start_kernel`` is bound read-write as the working directory);
                        see the module doc.
    ``workdir_mounts``  ``{name: host path}`` shown read-only at ``name`` inside the
                        working directory (a lab's hidden data: ``{"hidden": ...}``).
    ``rlimits``         resource limits of every process in the sandbox (see
                        :class:`LimitedKernelManager`).
    ``bwrap``           the ``bwrap`` executable.

    After ``start_kernel``: ``km.bwrap_command`` is the command line that ran,
    ``km.sandbox_pids()`` the host pids of the sandbox's processes.
    """

    readonly_paths = List(Unicode(), help="extra read-only paths").tag(config=True)
    writable_paths = List(Unicode(), help="extra read-write paths").tag(config=True)
    env = Dict(help="extra environment variables of the kernel").tag(config=True)
    device_paths = List(Unicode(), help="device nodes passed through").tag(config=True)
    cgroup_procs = Unicode("", help="cgroup.procs file(s), os.pathsep-separated, the sandbox joins "
                                    "before it starts").tag(config=True)
    bwrap = Unicode(help="the bwrap executable").tag(config=True)
    hide_sys = Bool(True, help="leave /sys out of the sandbox").tag(config=True)
    scratch_size = Int(0, help="bytes the kernel may write; 0: no cap, cwd bound read-write").tag(config=True)
    workdir_mounts = Dict(help="name -> host path, read-only inside the working directory").tag(config=True)

    @default("readonly_paths")
    def _default_readonly_paths(self) -> list[str]:
        return _default_readonly()

    @default("device_paths")
    def _default_device_paths(self) -> list[str]:
        return sorted(glob.glob("/dev/nvidia*"))

    @default("bwrap")
    def _default_bwrap(self) -> str:
        return bwrap_path() or "bwrap"

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("cache_ports")
    def _default_cache_ports(self) -> bool:
        return False

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self.transport = "ipc"
        self._private_dir: str | None = None
        self._sandbox_cwd: str | None = None
        self.bwrap_command: list[str] = []

    # -- kernelspec: interrupts go over the control channel ------------------
    @property
    def kernel_spec(self):  # type: ignore[override]
        spec = AsyncKernelManager.kernel_spec.fget(self)  # type: ignore[attr-defined]
        if spec is not None and spec.interrupt_mode != "message":
            spec.interrupt_mode = "message"
        return spec

    # -- start ---------------------------------------------------------------
    async def _async_pre_start_kernel(self, **kw: t.Any):
        if self._private_dir is None or not os.path.isdir(self._private_dir):
            self._private_dir = tempfile.mkdtemp(prefix="rai-sandbox-")
        self.transport = "ipc"
        self.ip = os.path.join(self._private_dir, "kernel")
        self.connection_file = os.path.join(self._private_dir, "kernel.json")
        self._sandbox_cwd = os.path.abspath(kw.get("cwd") or os.getcwd())
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        # IPython's history database would keep every cell already run -- hidden
        # tests of earlier test cells included -- in a file later cells can read
        extra = [*(extra_arguments or []), "--HistoryManager.enabled=False"]
        kernel_cmd = AsyncKernelManager.format_kernel_cmd(self, extra)
        self.bwrap_command = self.sandbox_command(kernel_cmd)
        command = list(self.bwrap_command)
        # bwrap's --die-with-parent ties the sandbox to bwrap, not bwrap to whoever
        # started it: without this a grader killed with -9 leaves the sandbox running
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
        if setpriv:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        if self.cgroup_procs:
            # join the cgroup in the launched process itself, before bwrap forks
            # several files (memory and pids hierarchies of cgroup v1) are joined by os.pathsep
            join = 'IFS=:; for f in $0; do echo $$ > "$f" || exit 1; done; exec "$@"'
            command = ["/bin/sh", "-c", join, self.cgroup_procs, *command]
        from .limits import with_rlimits

        return with_rlimits(command, dict(self.rlimits))

    def sandbox_env(self) -> dict[str, str]:
        venv_bin = os.path.dirname(os.path.abspath(sys.executable))
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp/home",
            "USER": "student",
            "LOGNAME": "student",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/home/.config/matplotlib",
            "GLOO_SOCKET_IFNAME": "lo",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "VIRTUAL_ENV": sys.prefix,
        }
        env.update({str(k): str(v) for k, v in self.env.items()})
        return env

    def sandbox_command(self, kernel_cmd: list[str]) -> list[str]:
        """The full ``bwrap ... -- kernel_cmd`` command line."""
        assert self._private_dir is not None and self._sandbox_cwd is not None
        cmd = [
            self.bwrap,
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", SANDBOX_HOSTNAME,
            "--die-with-parent", "--new-session",
            # bwrap started by root keeps root's capabilities unless told otherwise
            "--cap-drop", "ALL",
            "--clearenv", "--unsetenv", "JPY_PARENT_PID",
            "--proc", "/proc",
            "--dev", "/dev",
            # the tmpfs first: binds under /tmp (scratch dirs, the private dir) come after it
            *(["--size", str(self.scratch_size)] if self.scratch_size else []),
            "--tmpfs", "/tmp",
            "--dir", "/tmp/home",
        ]
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in ETC_PATHS:
            if os.path.lexists(path):
                cmd += ["--ro-bind-try", path, path]
        # the sandbox's own host name resolves, to its own loopback (torch's c10d store looks it
        # up for every worker of a multi-process training, and complains on stderr when it cannot)
        hosts = os.path.join(self._private_dir, "hosts")
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                    "::ffff:127.0.0.1\tlocalhost\n")   # an IPv4 client, as a dual-stack server sees it
        cmd += ["--ro-bind", hosts, "/etc/hosts"]
        if not self.hide_sys:
            cmd += ["--ro-bind", "/sys", "/sys"]
        for path in self.device_paths:
            cmd += ["--dev-bind-try", path, path]
        for path in _minimal(python_paths() + [os.path.abspath(p) for p in self.readonly_paths]):
            cmd += ["--ro-bind-try", path, path]
            real = os.path.realpath(path)
            if real != path:
                cmd += ["--ro-bind-try", real, real]
        if self.scratch_size:
            workdir = WORKDIR
            cmd += ["--dir", workdir, "--ro-bind", self._sandbox_cwd, INBOX]
        else:
            workdir = self._sandbox_cwd
        for path in [*self.writable_paths, *([] if self.scratch_size else [self._sandbox_cwd]), self._private_dir]:
            path = os.path.abspath(path)
            cmd += ["--bind", path, path]
        for name, source in sorted(self.workdir_mounts.items()):
            if "/" in name.strip("/") or name in ("", ".", ".."):
                raise ValueError(f"workdir_mounts: {name!r} is not a plain name")
            cmd += ["--ro-bind", os.path.abspath(source), os.path.join(workdir, name)]
        for key, value in self.sandbox_env().items():
            cmd += ["--setenv", key, value]
        # nothing else is writable: not even the sandbox's own root directory
        cmd += ["--remount-ro", "/", "--chdir", workdir, "--", *kernel_cmd]
        return cmd

    @property
    def workdir(self) -> str | None:
        """The kernel's working directory inside the sandbox."""
        return WORKDIR if self.scratch_size else self._sandbox_cwd

    async def load_submission(self, timeout: float = 120) -> None:
        """Copy the files now in the scratch directory into the kernel's private working directory.

        Only with ``scratch_size`` (otherwise the kernel works in the scratch directory itself).
        Call it after the grader has put the submission's files in place, before any student
        code runs: the copy is the kernel's first and only silent execution.  Raises
        :class:`SandboxError` when the files do not fit in ``scratch_size`` or the kernel fails.
        """
        if not self.scratch_size:
            return
        code = (f"(lambda shutil: shutil.copytree({INBOX!r}, '.', dirs_exist_ok=True, symlinks=True))"
                "(__import__('shutil'))")
        kc = self.client()
        kc.start_channels()
        try:
            # no wait_for_ready (it polls, 0.2 s): the request waits in the socket until the kernel reads it
            reply = await kc.execute(code, silent=True, store_history=False, reply=True, timeout=timeout)
        except Exception as exc:  # TimeoutError, a dead kernel
            raise SandboxError(f"the kernel did not take the submission's files: {type(exc).__name__}: {exc}") \
                from exc
        finally:
            kc.stop_channels()
        content = reply["content"]
        if content.get("status") != "ok":
            why = f"{content.get('ename')}: {content.get('evalue')}"
            if "No space left" in why or "Errno 28" in why:
                why = f"they do not fit in the disk limit ({self.scratch_size / 2**20:.0f} MiB)"
            raise SandboxError(f"the submission's files could not be copied into the sandbox: {why}")

    # -- processes -----------------------------------------------------------
    def sandbox_pids(self) -> list[int]:
        """Host pids of the outer bwrap process and all its descendants (the kernel included)."""
        process = getattr(self.provisioner, "process", None)
        if process is None:
            return []
        try:
            import psutil

            root = psutil.Process(process.pid)
            return [root.pid] + [p.pid for p in root.children(recursive=True)]
        except Exception:
            return []

    # -- cleanup -------------------------------------------------------------
    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    cleanup_resources = _async_cleanup_resources  # type: ignore[assignment]


def sandboxed_manager_class(**traits: t.Any) -> type[SandboxedKernelManager]:
    """A subclass of :class:`SandboxedKernelManager` with other trait defaults.

    For code that takes a manager *class* and builds it itself (papermill's
    ``kernel_manager_class``):  ``sandboxed_manager_class(readonly_paths=[...])``.
    """
    defaults = {name: value for name, value in traits.items()}

    class _Configured(SandboxedKernelManager):
        def __init__(self, **kwargs: t.Any) -> None:
            for name, value in defaults.items():
                kwargs.setdefault(name, value)
            super().__init__(**kwargs)

    _Configured.__name__ = _Configured.__qualname__ = "ConfiguredSandboxedKernelManager"
    return _Configured
