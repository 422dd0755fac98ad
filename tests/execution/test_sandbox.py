"""The sandbox's guards, each checked by running a hostile program.

Most checks run in the three modes a machine may end up with (see conftest.py): namespaces,
Landlock without namespaces, and runtime guards only.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from codecl.execution import Sandbox, SandboxConfig, SandboxError
from codecl.execution.programs import JS_ASSERT_PRELUDE, JS_NETWORK_GUARD, PYTHON_GUARD

pytestmark = pytest.mark.sandbox
REPO = Path(__file__).resolve().parents[2]


def run_python(sandbox: Sandbox, code: str):
    files = {"program.py": code}
    if not sandbox.network_cut:
        files["guard.py"] = PYTHON_GUARD
    return sandbox.run("python", files, lambda python, folder: [python, "-I", "-B", *(
        [str(folder / "program.py")] if sandbox.network_cut else [str(folder / "guard.py"), str(folder / "program.py")])])


def run_node(sandbox: Sandbox, code: str):
    prelude = JS_ASSERT_PRELUDE + ("" if sandbox.network_cut else JS_NETWORK_GUARD)
    return sandbox.run("javascript", {"program.js": code, "prelude.js": prelude},
                       lambda node, folder: [node, "--require", str(folder / "prelude.js"), str(folder / "program.js")])


def live_processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            found.append(int(entry))
    return found


def live_processes_of(uid: int) -> set[int]:
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            owner = int(status.split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if owner == uid and "State:\tZ" not in status:
            found.add(int(entry))
    return found


class LoopbackServer:
    """A TCP server of the parent on 127.0.0.1 that records whether anything connected."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_isolation_report_describes_this_machine(strong_sandbox, weak_sandbox):
    report = strong_sandbox.isolation()
    assert set(report) >= {"level", "network", "user", "filesystem", "processes", "limits"}
    assert weak_sandbox.isolation()["level"] == "weak"
    assert weak_sandbox.isolation()["network"].startswith("weak")


def test_runs_as_non_root_when_the_parent_is_root(sandbox):
    result = run_python(sandbox, "import os; print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())")
    uid, euid, gid, groups = result.stdout.split(maxsplit=3)
    if os.geteuid() == 0:
        assert uid != "0" and euid != "0" and gid != "0" and groups.strip() == "[]"
    else:
        assert int(uid) != 0


def test_parent_environment_is_invisible(sandbox, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2-parent-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    result = run_python(sandbox, "import os; print(dict(os.environ))")
    assert result.exit_code == 0
    assert "SECRET_TOKEN" not in result.stdout and "hunter2" not in result.stdout and "proxy" not in result.stdout.lower()
    assert "'PATH': '/usr/local/bin:/usr/bin:/bin'" in result.stdout


def test_node_environment_is_invisible(node, sandbox, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2-parent-secret")
    result = run_node(sandbox, "console.log(JSON.stringify(process.env))")
    assert result.exit_code == 0 and "hunter2" not in result.stdout and "SECRET_TOKEN" not in result.stdout


def test_cannot_connect_to_the_parents_loopback(sandbox):
    server = LoopbackServer()
    try:
        result = run_python(sandbox, f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {server.port}), timeout=2)
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED", exc)
""")
    finally:
        server.close()
    assert "CONNECTED" not in result.stdout and "BLOCKED" in result.stdout
    assert server.accepted == 0


def test_node_cannot_connect_to_the_parents_loopback(node, sandbox):
    server = LoopbackServer()
    try:
        result = run_node(sandbox, f"""
const s = require('net').connect({server.port}, '127.0.0.1');
s.on('connect', () => {{ console.log('CONNECTED'); process.exit(0); }});
s.on('error', (e) => {{ console.log('BLOCKED', e.code); process.exit(1); }});
""")
    finally:
        server.close()
    assert "CONNECTED" not in result.stdout and result.exit_code != 0
    assert server.accepted == 0


def test_tcp_is_refused_by_the_kernel_without_runtime_guards(node, strong_sandbox, weak_sandbox):
    for sandbox in (strong_sandbox, weak_sandbox):
        network = sandbox.isolation()["network"]
        if not (network.startswith("cut") or "Landlock" in network):
            continue  # this kernel offers neither: only the runtime guards (tested above) stand
        server = LoopbackServer()
        try:
            python = sandbox.run("python", {"p.py": f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {server.port}), timeout=2)
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED", exc)
"""}, lambda py, folder: [py, "-I", str(folder / "p.py")])
            js = sandbox.run("javascript", {"p.js": f"""
const s = require('net').connect({server.port}, '127.0.0.1');
s.on('connect', () => {{ console.log('CONNECTED'); process.exit(0); }});
s.on('error', (e) => {{ console.log('BLOCKED', e.code); process.exit(1); }});
"""}, lambda node_path, folder: [node_path, str(folder / "p.js")])
        finally:
            server.close()
        assert "BLOCKED" in python.stdout and "BLOCKED" in js.stdout, (network, python.stdout, js.stdout)
        assert server.accepted == 0


def test_a_listening_socket_is_unreachable(sandbox):
    with socket.socket() as probe:  # a port free now; the child listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connected = []
    done = threading.Event()

    def try_connect():
        while not done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    connected.append(True)
            except OSError:
                time.sleep(0.05)

    thread = threading.Thread(target=try_connect, daemon=True)
    thread.start()
    try:
        result = run_python(sandbox, f"""
import socket, time
server = socket.create_server(("127.0.0.1", {port}))
print("LISTENING", flush=True)
server.settimeout(1.5)
try:
    server.accept()
    print("ACCEPTED")
except OSError:
    pass
""")
    finally:
        done.set()
        thread.join()
    assert not connected and "ACCEPTED" not in result.stdout
    if not sandbox.network_cut:
        assert result.exit_code != 0 and "disabled in the codecl sandbox" in result.stderr


def test_infinite_loop_is_killed_at_the_timeout():
    sandbox = Sandbox(SandboxConfig(timeout_s=1.0))
    result = run_python(sandbox, "while True:\n    pass\n")
    assert result.timed_out and result.exit_code is None
    assert 1.0 <= result.duration_s < 3.0


def test_fork_bomb_is_killed_with_its_whole_process_group(sandbox):
    bomb_sandbox = Sandbox(dataclasses.replace(sandbox.config, timeout_s=1.5, max_processes=48))
    result = run_python(bomb_sandbox, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert result.timed_out
    deadline = time.monotonic() + 2
    while live_processes_in_group(result.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes_in_group(result.pid) == []


def test_background_children_do_not_outlive_the_program(sandbox):
    start = time.monotonic()
    result = run_python(sandbox, "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nelse:\n    print('parent done')\n")
    assert result.exit_code == 0 and not result.timed_out and "parent done" in result.stdout
    assert time.monotonic() - start < 3.0  # the sleeping child (holding stdout) was killed, not waited for
    assert live_processes_in_group(result.pid) == []


def test_processes_that_leave_the_group_die_with_the_pid_namespace(strong_sandbox):
    if "pid namespace" not in strong_sandbox.isolation()["processes"]:
        pytest.skip("no pid namespace on this machine: a child calling setsid() escapes the group kill")
    sandbox_uid = int(strong_sandbox.isolation()["user"].split("uid ")[1].rstrip(")"))
    before = live_processes_of(sandbox_uid)
    result = run_python(strong_sandbox, """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(60)
""")
    assert result.exit_code == 0
    time.sleep(0.2)
    assert live_processes_of(sandbox_uid) - before == set()


def test_huge_files_cannot_be_written(sandbox):
    limited = Sandbox(dataclasses.replace(sandbox.config, max_file_bytes=1 << 20))
    result = run_python(limited, "with open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * (1 << 20))\n")
    assert result.exit_code != 0 and not result.timed_out
    assert "File too large" in result.stderr or "No space left" in result.stderr


def test_cannot_write_outside_the_private_folder(sandbox):
    parent_owned = Path(tempfile.mkdtemp(prefix="codecl-test-parent-", dir=REPO))  # mode 0700, the parent's
    world_writable = Path(tempfile.mkdtemp(prefix="codecl-test-shared-", dir="/tmp"))
    world_writable.chmod(0o777)
    targets = [parent_owned / "pwned", REPO / f"pwned-{uuid.uuid4().hex}", world_writable / "pwned"]
    try:
        result = run_python(sandbox, f"""
import os
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("DENIED", path, exc.strerror)
print("HOME", os.getcwd(), os.access(".", os.W_OK))
""")
        assert result.exit_code == 0, result.stderr
        assert "HOME" in result.stdout and result.stdout.strip().endswith("True")
        if os.geteuid() == 0:  # the sandbox user has no rights on the parent's folders
            assert not targets[0].exists() and not targets[1].exists()
        if "read-only" in sandbox.isolation()["filesystem"]:
            assert not targets[2].exists(), "world-writable /tmp folder must be out of reach"
            assert "WROTE" not in result.stdout
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
        parent_owned.rmdir()
        world_writable.rmdir()


def test_private_folder_is_deleted_and_stdin_is_closed(sandbox):
    result = run_python(sandbox, "import os, sys\nprint(os.path.dirname(os.getcwd()))\nprint(repr(sys.stdin.read()))\n")
    folder, stdin = result.stdout.split()
    assert stdin == "''"
    assert folder.startswith(tempfile.gettempdir()) or folder.startswith("/tmp")
    assert not Path(folder).exists()


def test_output_is_capped_and_drained():
    sandbox = Sandbox(SandboxConfig(timeout_s=5.0, max_output_bytes=1000))
    result = run_python(sandbox, "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 50000)\nprint('done', file=sys.stderr)\n")
    assert result.exit_code == 0 and not result.timed_out
    assert len(result.stdout) == 1000 and result.output_truncated and "done" in result.stderr


def test_failed_console_assert_fails_the_node_run(node, strong_sandbox):
    assert run_node(strong_sandbox, "console.assert(1 === 1)").exit_code == 0
    result = run_node(strong_sandbox, "console.assert(1 === 2, 'one is not', 'two')")
    assert result.exit_code != 0 and "Assertion failed: one is not two" in result.stderr


def test_missing_node_is_one_clear_line():
    sandbox = Sandbox(SandboxConfig(node="codecl-no-such-node"))
    with pytest.raises(SandboxError, match=r"^codecl-no-such-node \(Node.js\) was not found on PATH; install Node.js"):
        sandbox.check_language("javascript")


def test_unusable_python_is_one_clear_line():
    with pytest.raises(SandboxError, match="no Python interpreter can run in the sandbox"):
        Sandbox(SandboxConfig(python="/nonexistent/python3")).isolation()
