"""Containment between samples and from the host (issue 15): own IPC namespace, private
/tmp, /var/tmp and /dev/shm, other samples' folders out of sight. Needs the mount and IPC
namespaces (root); skipped where the machine refuses them."""
from __future__ import annotations

import ctypes
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from codecl.execution.confinement import namespace_of

pytestmark = pytest.mark.sandbox

IPC_CREAT = 0o1000
SHM_KEY = 0x0C0DEC15


def run_python(sandbox, code: str):
    return sandbox.run("python", {"program.py": code}, lambda python, folder: [python, "-I", "-B", str(folder / "program.py")])


def needs(sandbox, *names):
    required = sandbox._ensure_setup().required
    missing = [n for n in names if n not in required]
    if missing:
        pytest.skip(f"this machine's sandbox has no {', '.join(missing)} namespace")


def test_each_sample_has_its_own_ipc_namespace(strong_sandbox):
    needs(strong_sandbox, "ipc")
    create = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(os.readlink('/proc/self/ns/ipc'), libc.shmget({SHM_KEY}, 4096, {IPC_CREAT} | 0o666))
"""
    first = run_python(strong_sandbox, create)
    assert first.exit_code == 0, first.stderr
    namespace, shm_id = first.stdout.split()
    assert int(shm_id) >= 0 and namespace != namespace_of("ipc")
    second = run_python(strong_sandbox, f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.shmget({SHM_KEY}, 0, 0), ctypes.get_errno())
""")
    assert second.stdout.split() == ["-1", "2"]  # ENOENT: the first sample's segment is gone
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.shmget(SHM_KEY, 0, 0) == -1  # and never reached the host


def test_host_sockets_fifos_and_files_under_tmp_are_out_of_sight(strong_sandbox, node):
    needs(strong_sandbox, "mnt")
    folder = Path(tempfile.mkdtemp(prefix="codecl-test-host-", dir="/tmp"))
    folder.chmod(0o777)
    sock_path, fifo_path, file_path = folder / "s.sock", folder / "fifo", folder / "secret"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_path))
        server.listen()
        os.chmod(sock_path, 0o777)
        os.mkfifo(fifo_path, 0o666)
        file_path.write_text("host secret")
        file_path.chmod(0o644)
        shm = Path("/dev/shm") / f"codecl-test-{uuid.uuid4().hex}"
        if Path("/dev/shm").is_dir():
            shm.write_text("x")
            shm.chmod(0o666)
        result = run_python(strong_sandbox, f"""
import os, socket
print(sorted(os.listdir('/tmp')), os.listdir('/dev/shm') if os.path.isdir('/dev/shm') else [])
for path in {[str(sock_path), str(fifo_path), str(file_path)]!r}:
    try:
        if path.endswith('.sock'):
            socket.socket(socket.AF_UNIX).connect(path)
        else:
            open(path, 'rb', opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)).read()
        print('REACHED', path)
    except OSError as exc:
        print('DENIED', exc.__class__.__name__)
""")
        assert result.exit_code == 0, result.stderr
        listing, *verdicts = result.stdout.splitlines()
        assert folder.name not in listing and shm.name not in listing
        assert verdicts == ["DENIED FileNotFoundError"] * 3
        js = strong_sandbox.run("javascript", {"program.js": f"""
const net = require('net'), fs = require('fs');
console.log(JSON.stringify(fs.readdirSync('/tmp')));
const c = net.connect({str(sock_path)!r});
c.on('connect', () => {{ console.log('REACHED'); process.exit(0) }});
c.on('error', (e) => {{ console.log('DENIED ' + e.code); process.exit(0) }});
"""}, lambda n, f: [n, str(f / "program.js")])
        assert folder.name not in js.stdout and js.stdout.strip().endswith("DENIED ENOENT"), js.stdout + js.stderr
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
        if Path("/dev/shm").is_dir():
            shm.unlink(missing_ok=True)


def test_other_samples_folders_are_out_of_sight(strong_sandbox):
    needs(strong_sandbox, "mnt")
    base = Path(tempfile.gettempdir())
    other = Path(tempfile.mkdtemp(prefix="codecl-sandbox-", dir=base))  # shaped like another sample's folder
    try:
        (other / "program.py").write_text("secret tests")
        if os.geteuid() == 0:
            os.chown(other, 65534, 65534)
            os.chown(other / "program.py", 65534, 65534)
        result = run_python(strong_sandbox, f"""
import os
here = os.path.dirname(os.getcwd())
print(sorted(os.listdir(os.path.dirname(here))) == [os.path.basename(here)], os.path.exists({str(other)!r}))
""")
        assert result.stdout.split() == ["True", "False"], result.stdout + result.stderr
    finally:
        shutil.rmtree(other, ignore_errors=True)
