"""The bubblewrap sandbox around grading kernels (autograder/sandbox.py), tested against real kernels."""
from __future__ import annotations

import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from autograder.sandbox import SandboxedKernelManager, bwrap_available, sandboxed_manager_class

OK, WHY = bwrap_available()
pytestmark = pytest.mark.skipif(not OK, reason=f"no bubblewrap sandbox here: {WHY}")

REPO = Path(__file__).resolve().parents[1]
RAI = str(REPO / "rai")


def run_sync(fn):
    from jupyter_core.utils import run_sync as _run_sync

    return _run_sync(fn)


def start(scratch: Path, **traits) -> SandboxedKernelManager:
    traits.setdefault("readonly_paths", [RAI])
    km = SandboxedKernelManager(kernel_name="python3", **traits)
    run_sync(km.start_kernel)(cwd=str(scratch), stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    return km


class Kernel:
    """A blocking client on a sandboxed kernel: ``run(code)`` returns (status, stdout, error name)."""

    def __init__(self, km: SandboxedKernelManager):
        self.km = km
        self.kc = km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> tuple[str, str, str | None]:
        out: list[str] = []
        err: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                err.append(msg["content"]["ename"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"]["status"], "".join(out), (err[0] if err else None)

    def value(self, expr: str):
        status, out, err = self.run(f"print(repr({expr}))")
        assert status == "ok", (expr, err, out)
        return eval(out.strip())

    def close(self) -> None:
        self.kc.stop_channels()
        run_sync(self.km.shutdown_kernel)(now=True)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def kernel(scratch):
    k = Kernel(start(scratch))
    yield k
    k.close()


def test_runs_code_in_scratch_dir(kernel, scratch):
    assert kernel.value("6 * 7") == 42
    assert kernel.value("__import__('os').getcwd()") == str(scratch)
    status, _, err = kernel.run("open('written.txt', 'w').write('from the sandbox')")
    assert status == "ok", err
    assert (scratch / "written.txt").read_text() == "from the sandbox"
    # a file the grader puts there is seen by the kernel
    (scratch / "from_host.txt").write_text("hello")
    assert kernel.value("open('from_host.txt').read()") == "hello"


def test_course_packages_import(kernel):
    status, out, err = kernel.run("import numpy, pandas, torch, fairlearn, rai, ipykernel; print(rai.__file__)")
    assert status == "ok", err
    assert out.strip().startswith(RAI)


def test_clean_environment(kernel):
    env = kernel.value("dict(__import__('os').environ)")
    assert env["MPLBACKEND"] == "Agg"
    assert env["GLOO_SOCKET_IFNAME"] == "lo"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "JPY_PARENT_PID" not in env
    ours = set(kernel.km.sandbox_env()) | {"PWD"}  # PWD: bwrap's --chdir
    leaked = {k for k, v in os.environ.items() if env.get(k) == v and k not in ours}
    assert not leaked, f"the grader's environment leaked into the sandbox: {sorted(leaked)}"
    # no capabilities left, even though the grader may run as root
    caps = kernel.value("[l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]")
    assert int(caps, 16) == 0


@pytest.fixture(scope="module")
def host_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


def test_no_network(kernel, host_server):
    # the host reaches its own server ...
    socket.create_connection(("127.0.0.1", host_server), timeout=5).close()
    # ... the sandbox does not: its loopback is its own, and there is nothing else
    for target in [("127.0.0.1", host_server), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
        status, _, err = kernel.run(f"import socket; socket.create_connection({target!r}, timeout=5)")
        assert status == "error" and err in {"ConnectionRefusedError", "OSError", "TimeoutError"}, (target, err)
    status, _, err = kernel.run("import socket; socket.getaddrinfo('pypi.org', 443)")
    assert status == "error" and err == "gaierror", err
    interfaces = kernel.value("[name for _, name in __import__('socket').if_nameindex()]")
    assert interfaces == ["lo"]


def test_hidden_files(kernel, tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "solutions" / "secret.ipynb").write_text("{}")
    (course / "gradebook.db").write_text("grades")
    planted_tmp = Path("/tmp") / f"planted-{os.getpid()}.txt"
    planted_tmp.write_text("host tmp")
    try:
        for path in [course / "solutions" / "secret.ipynb", course / "gradebook.db", planted_tmp,
                     REPO / "gradebook.db", REPO / "solutions", REPO / "pyproject.toml",
                     Path.home() / ".bashrc", Path("/etc/shadow"), Path("/root/.ssh")]:
            status, _, err = kernel.run(f"open({str(path)!r}).read()")
            assert status == "error" and err in {"FileNotFoundError", "PermissionError"}, (path, err)
        # /tmp is the sandbox's own: only the bound scratch/private dirs and home
        host_tmp = set(os.listdir("/tmp"))
        inside_tmp = set(kernel.value("__import__('os').listdir('/tmp')"))
        assert planted_tmp.name not in inside_tmp
        # what shows there is only the way down to bound paths (scratch, the private socket
        # directory, and the checkout or venv when they live under /tmp, as in a CI clone)
        bound = {Path(p).parts[2] for p in (REPO, sys.prefix, tmp_path) if str(p).startswith("/tmp/")}
        assert all(name in bound | {"home"} or name.startswith("rai-sandbox-") for name in inside_tmp), inside_tmp
        assert len(host_tmp - inside_tmp) > 0
        # of /root only the path down to the (read-only) base interpreter, if it lives there
        for name in kernel.value("__import__('os').listdir('/root')"):
            assert sys.base_prefix.startswith(f"/root/{name}") or sys.prefix.startswith(f"/root/{name}"), name
        # the course directory shows only what was bound: the support package and the venv
        assert set(kernel.value(f"__import__('os').listdir({str(REPO)!r})")) <= {"rai", ".venv"}
    finally:
        planted_tmp.unlink()


def test_python_environment_read_only(kernel):
    for path in ["sys.prefix + '/evil.txt'", "sys.base_prefix + '/evil.txt'", "'/usr/evil.txt'",
                 f"{RAI!r} + '/evil.py'"]:
        status, _, err = kernel.run(f"import sys; open({path}, 'w').write('x')")
        assert status == "error" and err in {"OSError", "PermissionError"}, (path, err)
    assert not Path(sys.prefix, "evil.txt").exists()


def test_pid_namespace(kernel):
    assert kernel.value("__import__('os').getpid()") < 100
    pids = [int(p) for p in kernel.value("[p for p in __import__('os').listdir('/proc') if p.isdigit()]")]
    assert len(pids) < 10, pids
    assert os.getpid() not in pids or os.getpid() < 10
    cmdlines = kernel.value("[open(f'/proc/{p}/cmdline').read() for p in __import__('os').listdir('/proc')"
                            " if p.isdigit()]")
    # bwrap's init (pid 1) and the kernel; no host process such as this test runner
    assert len(cmdlines) == 2, cmdlines
    assert cmdlines[0].split("\0")[0].endswith("bwrap")
    assert "ipykernel_launcher" in cmdlines[1]


def test_interrupt(kernel):
    result = {}

    def busy():
        result["reply"] = kernel.run("while True: pass", timeout=60)

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(2)
    assert thread.is_alive()
    run_sync(kernel.km.interrupt_kernel)()
    thread.join(30)
    assert not thread.is_alive(), "the interrupt did not stop the cell"
    status, _, err = result["reply"]
    assert status == "error" and err == "KeyboardInterrupt"
    assert kernel.value("1 + 1") == 2  # still usable


def test_kill_takes_everything(tmp_path):
    k = Kernel(start(tmp_path))
    try:
        code = (
            "import subprocess, sys\n"
            "child = subprocess.Popen(['sleep', '1000'])\n"
            "daemon = subprocess.Popen([sys.executable, '-c', '''\n"
            "import os, time\n"
            "if os.fork(): os._exit(0)\n"
            "os.setsid()\n"
            "if os.fork(): os._exit(0)\n"
            "open('daemon.pid', 'w').write(str(os.getpid()))\n"
            "time.sleep(1000)\n"
            "'''])\n"
            "daemon.wait()\n"
            "import time\n"
            "for _ in range(100):\n"
            "    if __import__('os').path.exists('daemon.pid'): break\n"
            "    time.sleep(0.1)\n"
        )
        status, _, err = k.run(code)
        assert status == "ok", err
        pids = k.km.sandbox_pids()
        names = [psutil.Process(p).name() for p in pids]
        assert names.count("sleep") == 1 and "python" in " ".join(names), names
        assert len(pids) >= 5, names  # bwrap, its init, the kernel, sleep, the daemon
        # as the grader does on the notebook deadline
        bwrap_pid = k.km.provisioner.process.pid
        os.killpg(os.getpgid(bwrap_pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.1)
        assert not alive, f"survived the kill: {[(p, psutil.Process(p).cmdline()) for p in alive]}"
    finally:
        k.kc.stop_channels()
        run_sync(k.km.shutdown_kernel)(now=True)


def tiny_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import os, socket, rai\nprint(os.getcwd())"),
        nbformat.v4.new_code_cell("open('out.txt', 'w').write('done')\n6 * 7"),
        nbformat.v4.new_code_cell("socket.create_connection(('1.1.1.1', 53), timeout=3)"),
    ]
    return nb


def _papermill(nb, out: Path, **kw):
    """papermill.execute_notebook; the notebook has a failing cell on purpose, so read what it wrote."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        return papermill.execute_notebook(nb, str(out), kernel_name="python3", progress_bar=False, **kw)
    except PapermillExecutionError:
        return nbformat.read(str(out), as_version=4)


def _check_executed(nb, scratch: Path) -> None:
    cells = [c for c in nb.cells if c.cell_type == "code"]  # papermill adds an error banner
    assert cells[0].outputs[0]["text"].strip() == str(scratch)
    assert cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert cells[2].outputs[0]["output_type"] == "error"
    assert (scratch / "out.txt").read_text() == "done"


def test_papermill_by_class_name(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOGRADER_SANDBOX_READONLY", RAI)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    nbformat.write(tiny_notebook(), tmp_path / "in.ipynb")
    out = _papermill(str(tmp_path / "in.ipynb"), tmp_path / "out.ipynb",
                     kernel_manager_class="autograder.sandbox.SandboxedKernelManager", cwd=str(scratch))
    _check_executed(out, scratch)


def test_papermill_with_configured_class(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cls = sandboxed_manager_class(readonly_paths=[RAI])
    out = _papermill(tiny_notebook(), tmp_path / "out.ipynb", kernel_manager_class=cls, cwd=str(scratch))
    _check_executed(out, scratch)


def test_execute_assembled_with_started_kernel(tmp_path):
    """The way the worker uses it: start the manager itself, hand it to the autograder engine."""
    from autograder.execute import execute_assembled

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    km = start(scratch)
    nb = tiny_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("while True: pass"))
    nb.cells.append(nbformat.v4.new_code_cell("print('after the timeout')"))
    executed = execute_assembled(nb, scratch, tmp_path / "out.ipynb", kernel_name="python3",
                                 cell_timeout=3, notebook_timeout=60, km=km)
    _check_executed(executed, scratch)
    events = executed.metadata["autograder"]["execution"]["events"]
    assert [e["kind"] for e in events] == ["cell-timeout"]
    assert executed.cells[4].outputs[0]["text"].strip() == "after the timeout"
    assert not run_sync(km.is_alive)()


def test_execute_assembled_notebook_deadline_kills_sandbox(tmp_path):
    from autograder.execute import execute_assembled

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    km = start(scratch)
    nb = tiny_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import subprocess\nsubprocess.Popen(['sleep', '1000'])\n"
                                              "import time\ntime.sleep(1000)"))
    nb.cells.append(nbformat.v4.new_code_cell("print('never')"))
    started = time.monotonic()
    pids: list[int] = []

    def watch():  # remember the sandbox's processes while it runs
        while time.monotonic() - started < 8:
            pids.extend(p for p in km.sandbox_pids() if p not in pids)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    executed = execute_assembled(nb, scratch, tmp_path / "out.ipynb", kernel_name="python3",
                                 cell_timeout=None, notebook_timeout=6, km=km)
    watcher.join()
    kinds = [e["kind"] for e in executed.metadata["autograder"]["execution"]["events"]]
    assert "notebook-timeout" in kinds, kinds
    time.sleep(1)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert pids and not alive, alive


def test_overhead(tmp_path, capsys):
    from jupyter_client.manager import AsyncKernelManager

    def once(make) -> float:
        scratch = tmp_path / f"s{time.monotonic_ns()}"
        scratch.mkdir()
        t0 = time.perf_counter()
        km = make()
        run_sync(km.start_kernel)(cwd=str(scratch), stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        kc = km.blocking_client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("1", timeout=30)
        kc.stop_channels()
        run_sync(km.shutdown_kernel)(now=True)
        return time.perf_counter() - t0

    times = {"plain": [], "sandboxed": []}
    for _ in range(10):
        times["plain"].append(once(lambda: AsyncKernelManager(kernel_name="python3")))
        times["sandboxed"].append(once(lambda: SandboxedKernelManager(kernel_name="python3",
                                                                       readonly_paths=[RAI])))
    plain, sandboxed = (statistics.median(times[k]) for k in ("plain", "sandboxed"))
    with capsys.disabled():
        print(f"\n[sandbox overhead] start-execute-shutdown, median of 10: plain {plain:.3f} s, "
              f"sandboxed {sandboxed:.3f} s, overhead {sandboxed - plain:+.3f} s "
              f"(min plain {min(times['plain']):.3f} s, min sandboxed {min(times['sandboxed']):.3f} s)")


def test_sandbox_joins_memory_cgroup_before_it_starts(tmp_path):
    """With ``cgroup_procs`` every process of the sandbox (the kernel included) is in the group and limited."""
    from autograder.limits import MemoryCgroup

    cgroup = MemoryCgroup.create(1 << 30, prefix="sandbox-test")
    if cgroup is None:
        pytest.skip("no memory cgroup can be created here")
    try:
        k = Kernel(start(tmp_path, cgroup_procs=str(cgroup.path / "cgroup.procs")))
        try:
            status, _, err = k.run("import subprocess; p = subprocess.Popen(['sleep', '1000'])")
            assert status == "ok", err
            sandbox = set(k.km.sandbox_pids())
            assert len(sandbox) >= 4 and sandbox <= set(cgroup.pids()), (sandbox, cgroup.pids())
            # a child of the kernel that takes more than the limit is OOM-killed; the kernel lives on
            hog = "x = bytearray(2 << 30); x[::4096] = bytes(len(range(0, len(x), 4096)))"
            rc = k.value(f"__import__('subprocess').run([__import__('sys').executable, '-c', {hog!r}]).returncode")
            assert rc == -signal.SIGKILL, rc
            assert k.value("1 + 1") == 2
        finally:
            k.kc.stop_channels()
            run_sync(k.km.shutdown_kernel)(now=True)
        assert cgroup.oom_kills() >= 1
    finally:
        cgroup.destroy()


def test_host_name_resolves_to_the_sandbox_loopback(kernel):
    """Distributed training looks its own host name up; inside the sandbox that must work (and
    name the sandbox, not the grading machine)."""
    assert kernel.value("__import__('socket').gethostname()") == "sandbox"
    assert kernel.value("__import__('socket').gethostbyname(__import__('socket').gethostname())") == "127.0.0.1"
    assert kernel.value("__import__('socket').gethostbyname('localhost')") == "127.0.0.1"


def test_accelerate_gloo_on_loopback(kernel):
    """Two CPU processes (gloo) talk over the sandbox's own loopback; nothing leaves it."""
    pytest.importorskip("accelerate")
    code = (
        "from accelerate import notebook_launcher\n"
        "def f():\n"
        "    import torch, torch.distributed as dist\n"
        "    from accelerate import Accelerator\n"
        "    Accelerator(cpu=True)\n"
        "    t = torch.ones(1) * (dist.get_rank() + 1)\n"
        "    dist.all_reduce(t)\n"
        "    print(f'rank {dist.get_rank()} sum {t.item()}')\n"
        "notebook_launcher(f, num_processes=2)\n"
    )
    status, out, err = kernel.run(code, timeout=120)
    assert status == "ok", (err, out)
    assert "rank 0 sum 3.0" in out and "rank 1 sum 3.0" in out, out
    assert "hostname" not in out, f"c10d could not resolve the sandbox's host name:\n{out}"


def test_capped_private_workdir(tmp_path):
    """With ``scratch_size`` the kernel writes only to a tmpfs of that size; the host's copy is its inbox."""
    from autograder.sandbox import INBOX, WORKDIR, SandboxError

    scratch, hidden = tmp_path / "scratch", tmp_path / "hidden"
    scratch.mkdir()
    hidden.mkdir()
    (hidden / "key.txt").write_text("held out")
    (scratch / "early.txt").write_text("there at start")
    km = start(scratch, scratch_size=16 << 20, workdir_mounts={"hidden": str(hidden)})
    try:
        (scratch / "late.txt").write_text("put there after the kernel started")  # as a warm kernel gets it
        run_sync(km.load_submission)()
        k = Kernel(km)
        assert k.value("__import__('os').getcwd()") == WORKDIR
        assert k.value("sorted(__import__('os').listdir('.'))") == ["early.txt", "hidden", "late.txt"]
        assert k.value("open('late.txt').read()") == "put there after the kernel started"
        assert k.value("open('hidden/key.txt').read()") == "held out"
        # the copy ran silently, outside the history and the execution count
        assert k.value("[any('copytree' in s for s in In[:-1]), get_ipython().execution_count]") == [False, 6]
        for target in ["hidden/key.txt", f"{INBOX}/early.txt", "/new-file-in-root", "/autograder/x"]:
            status, _, err = k.run(f"open({target!r}, 'w').write('x')")
            assert status == "error" and err in {"OSError", "PermissionError"}, (target, err)
        status, _, err = k.run("open('big.bin', 'wb').write(b'x' * (24 << 20))")
        assert status == "error" and err == "OSError"
        status, _, err = k.run("import os; os.remove('big.bin'); open('/tmp/big.bin', 'wb').write(b'x' * (24 << 20))")
        assert status == "error" and err == "OSError"  # /tmp is the same 16 MiB
        status, _, err = k.run("open('fits.txt', 'w').write('small')")
        assert status == "ok", err
        k.close()
    finally:
        run_sync(km.shutdown_kernel)(now=True)
    # nothing the kernel wrote reached the host
    assert sorted(p.name for p in scratch.iterdir()) == ["early.txt", "late.txt"]
    assert [p.name for p in hidden.iterdir()] == ["key.txt"]

    # files that do not fit are refused with a clear reason
    (scratch / "huge.bin").write_bytes(b"\0" * (20 << 20))
    km = start(scratch, scratch_size=16 << 20)
    try:
        with pytest.raises(SandboxError, match="do not fit in the disk limit"):
            run_sync(km.load_submission)()
    finally:
        run_sync(km.shutdown_kernel)(now=True)


def test_rlimits_reach_every_process_of_the_kernel(tmp_path):
    """The rlimit fallback: set before bwrap starts, inherited by the kernel and what it starts."""
    from autograder.sandbox import LimitedKernelManager

    data, fsize = 400 << 20, 8 << 20
    for km in [start(tmp_path, rlimits={"DATA": data, "FSIZE": fsize}),
               LimitedKernelManager(kernel_name="python3", rlimits={"DATA": data, "FSIZE": fsize})]:
        if not km.has_kernel:
            run_sync(km.start_kernel)(cwd=str(tmp_path), stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        k = Kernel(km)
        try:
            assert k.value("__import__('resource').getrlimit(__import__('resource').RLIMIT_DATA)") == (data, data)
            status, _, err = k.run("blob = bytearray(1 << 30)")
            assert status == "error" and err == "MemoryError"
            child = ("__import__('subprocess').run([__import__('sys').executable, '-c', "
                     "'bytearray(1 << 30)'], capture_output=True).returncode")
            assert k.value(child) != 0  # a child is capped as well (each on its own)
            status, _, err = k.run("open('big.bin', 'wb').write(b'x' * (16 << 20))")
            assert status == "error" and err == "OSError"  # EFBIG: no file larger than FSIZE
            assert k.value("1 + 1") == 2
        finally:
            k.close()
