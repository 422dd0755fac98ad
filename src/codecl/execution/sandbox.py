"""Run one untrusted program in a throwaway, locked-down child process (Linux).

Every program gets:
- its own session and process group (`start_new_session=True`), killed as a group
  (`os.killpg`) at the wall-clock timeout or as soon as the program exits, so nothing
  it started survives it;
- resource limits set in the child before `exec` (`resource.setrlimit`): CPU seconds,
  address space (higher for Node, whose V8 reserves a lot of virtual memory), processes,
  file size, open files, no core dumps;
- a private temporary folder as cwd, HOME and TMPDIR, deleted afterwards;
- a scrubbed environment (minimal PATH, no proxies or tokens of the parent), stdin closed,
  and stdout/stderr read up to `max_output_bytes` each (the rest is drained and dropped).

When the evaluator runs as root (CI does) the child drops to a user and group id of its own,
taken for that run from a pool (`SandboxConfig.uid_pool`, default 2081284096-2081288191; no
account needed): a uid is handed out only while no process runs as it, to one sample at a time
(in this process by a set, across evaluator processes by an F_OFD_SETLK byte lock on a root-owned
file in /run), and when the run ends everything still running as it is killed (a uid whose
processes will not die is retired). So, in every isolation mode, even without namespaces:
- the process limit (RLIMIT_NPROC, which the kernel counts per real uid, threads included) is the
  sample's own: a fork or thread hog reaches its own limit and cannot stop another sample from
  starting, forking or starting threads, nor fail the run;
- its folder (mode 0700, owned by its uid) and its processes' /proc entries are closed to every
  other sample.
Where the pool cannot be used (not root; `uid_pool=None`; the pool's ids not mapped in this user
namespace), every sample runs as one user and `isolation()["between_samples"]` says so, and why:
"weak: ...": one process limit for all, and without a mount namespace one sample can read
another's folder.
Also as root, the child gets:
- a network namespace (`unshare(CLONE_NEWNET)`): only a loopback device that is down,
  so nothing, not even the parent's 127.0.0.1, is reachable;
- a mount namespace: every mount is remounted read-only, and a small tmpfs owned by the
  sandbox user is mounted on the private folder, the only place it can write;
- an IPC namespace: System V shared memory, semaphores, message queues and POSIX message
  queues are its own, gone when it ends, invisible to other samples and to the host;
- private scratch folders: /tmp, /var/tmp, /dev/shm and the folder that holds every sandbox
  folder are covered by empty read-only tmpfs mounts and the program's own folder is bound
  back, so the host's Unix sockets, FIFOs and files there, and other samples' folders, are
  out of sight (`confinement.hide_shared_dirs`);
- a pid namespace: the program runs as pid 1 of its own namespace (an intermediate
  process forks it, because `unshare(CLONE_NEWPID)` applies to children only and a process
  whose children live in another pid namespace cannot start threads); when it dies, the
  kernel kills everything left in the namespace, including processes that left the
  process group with `setsid`.
Not root: the child tries an unprivileged user + network (+ pid, IPC) namespace; /tmp stays shared. Where the
kernel refuses namespaces, Landlock (Linux >= 5.13, unprivileged) still confines writes to
the private folder and, from Landlock ABI 4, refuses TCP connect and bind; the network is
also blocked by guards in the child runtime (see `programs.py`). That is weak isolation:
UDP stays open, a process that leaves the process group can outlive the run, and since every
sample runs as the same user, one sample can read another's folder and reach /tmp, and all
share one process limit (set per run to the tasks the user has then, plus `max_processes`).

Between samples, what holds and how it is tested (tests/execution/test_sample_isolation.py,
test_containment.py, test_sandbox.py; all `-m sandbox`, which CI runs as root):
- a process-limit hog (forks until refused, holds its children) times out alone while six
  concurrent samples that need 4 threads and 8 processes each pass (`evaluate-exec --workers 4`);
- a sample cannot list or read a concurrent sample's folder, found from /tmp or /proc/*/cwd, in
  every mode (hidden by the mount namespace; closed by its uid without one);
- 48 JavaScript samples with `--workers 48` all complete with right verdicts (the evaluator raises
  its own soft RLIMIT_NOFILE to fit the workers' pipes);
- a sample that cannot start (a harness message over 1 MiB, no free pool uid, a failed child setup)
  is that sample's failure ("could not run: ..."), and the run's last-line JSON still comes;
- own IPC namespace, private /tmp, /var/tmp, /dev/shm (test_containment.py).
Not closed: CPU time is not shared fairly (a sample's processes, up to `max_processes`, all compete
with other samples for the CPUs, so a spinning fork bomb slows concurrent samples towards their
time limit; there is no per-sample cgroup); memory is limited per process (RLIMIT_AS), not per
sample; with neither a mount namespace nor Landlock, a sample can leave files in world-writable
folders (/tmp) that a later sample given the same uid can read; orphans that the machine's init
never reaps keep their uid out of the pool; without root, nothing of the above between samples holds.

A harness channel (`run(..., channel=...)`): two inherited pipe ends, named in
$CODECL_HARNESS_FDS, carry bytes to the program and back outside its text and its output;
`evaluate.py` sends a random token there that the harness returns only when the checks passed.

What was achieved is measured, not assumed: the first use runs a probe program in the
sandbox and compares its namespaces, user and writable paths with the parent's
(`Sandbox.isolation()`); later runs fail loudly if a namespace that worked then fails.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import pwd
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from codecl.errors import CodeclError, ConfigError
from codecl.execution.confinement import (PRIVATE_DIRS, ChildPlan, hold_namespace, kill_pid_namespace, kill_uid,
                                          landlock_abi, landlock_rights, make_preexec, namespace_of, read_mounts,
                                          task_count, uids_with_tasks)

MIN_PATH = "/usr/local/bin:/usr/bin:/bin"
CHANNEL_CAP = 4096
"""Bytes kept of what a program writes back on its harness channel."""
CHANNEL_IN_MAX = 1 << 20
"""Largest message a harness channel carries to the program (one pipe buffer, grown to fit)."""
F_SETPIPE_SZ = 1031
CHANNEL_ENV = "CODECL_HARNESS_FDS"
"""Environment variable that tells a program the harness channel's file descriptors: "READ,WRITE"."""
UID_POOL = (0x7C0DE000, 4096)
"""Default per-sample user ids (first, count): 2081284096-2081288191, in the range systemd leaves
unused (above its container ranges, below the 'foreign' and negative-looking ones)."""
UID_LOCK_DIRS = ("/run", "/run/lock", "/var/lock")
"""Where the file whose byte ranges lock pool uids across evaluator processes may live (first that works; then TMPDIR)."""


class SandboxError(CodeclError):
    """The sandbox itself cannot run (missing interpreter, failed isolation); not a test failure."""

    exit_code = 1


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 10.0
    """Wall-clock limit per program; then its whole process group (and pid namespace) is killed."""
    memory_limit_bytes: int = 2 << 30
    """RLIMIT_AS of Python programs."""
    node_memory_limit_bytes: int = 8 << 30
    """RLIMIT_AS of Node programs (V8 reserves several GiB of address space up front)."""
    max_processes: int = 256
    """RLIMIT_NPROC: tasks (processes and threads) a sample may have; with a pool uid (root) its own,
    with a shared user above that user's task count when the run starts (the kernel counts per user)."""
    max_file_bytes: int = 16 << 20
    """RLIMIT_FSIZE: largest file a program may write."""
    max_open_files: int = 256
    """RLIMIT_NOFILE."""
    max_output_bytes: int = 64 << 10
    """Bytes of stdout and of stderr kept per program; the rest is read and dropped."""
    home_size_bytes: int = 64 << 20
    """Size of the private tmpfs folder (when a mount namespace is available)."""
    namespaces: bool = True
    """Try network, mount and pid namespaces; False forces the fallback (for tests)."""
    landlock: bool = True
    """Where namespaces are missing, confine writes and TCP with Landlock (Linux >= 5.13); False: guards only."""
    user: str = "nobody"
    """Unprivileged account every program runs as when the evaluator is root and `uid_pool` cannot be used."""
    uid_pool: tuple[int, int] | None = UID_POOL
    """(first uid, count): as root, each running program gets a user and group id of its own from
    this range (no account needed), so the process limit and its folder are its own; None: all run as `user`."""
    python: str | None = None
    """Interpreter for Python programs; default: this one if the sandbox user may run it, else python3 on PATH."""
    node: str | None = None
    """Node.js executable; default: `node` on PATH."""

    def __post_init__(self):
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError(f"sandbox timeout_s must be a positive number of seconds, got {self.timeout_s}")
        for name in ("memory_limit_bytes", "node_memory_limit_bytes", "max_processes", "max_file_bytes",
                     "max_open_files", "max_output_bytes", "home_size_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sandbox {name} must be positive, got {getattr(self, name)}")
        if self.uid_pool is not None:
            first, count = self.uid_pool
            if not (1000 <= first and count >= 1 and first + count <= 0xFFFFFFFE):
                raise ConfigError(f"sandbox uid_pool must be (first >= 1000, count >= 1) below 4294967294, "
                                  f"got {self.uid_pool}")


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None
    """Exit status as `subprocess` reports it (negative: killed by that signal); None if killed at the timeout."""
    timed_out: bool
    """The wall-clock or CPU-time limit was hit."""
    duration_s: float
    stdout: str
    stderr: str
    pid: int
    """Process (and process-group) id the program was started with."""
    output_truncated: bool = False
    channel: bytes | None = None
    """What the program wrote back on its harness channel (see `Sandbox.run`), None when none was opened."""


@dataclass
class _Setup:
    python: str
    required: frozenset[str]
    report: dict = field(default_factory=dict)
    node: str | None = None


class _UidPool:
    """Hands out the per-sample user ids of `SandboxConfig.uid_pool` (root only).

    A uid is taken only while no task runs as it (a /proc scan), and only by one sample at a time:
    within this process by a set, across evaluator processes by an open-file-description lock
    (F_OFD_SETLK) on byte `uid - first` of a root-owned lock file. After the run every process
    left with that uid is killed; a uid whose processes will not die is never handed out again.
    """

    def __init__(self, first: int, count: int):
        self.first, self.count = first, count
        self._taken: set[int] = set()
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.shared_note = "uids locked across evaluator processes"
        for directory in (*UID_LOCK_DIRS, tempfile.gettempdir()):
            try:
                fd = os.open(os.path.join(directory, "codecl-sandbox-uids.lock"),
                             os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                continue
            info = os.fstat(fd)
            if (info.st_mode & 0o170000) == 0o100000 and info.st_uid == os.geteuid() and not info.st_mode & 0o022:
                self._fd = fd
                break
            os.close(fd)  # someone else's file: not trusted
        if self._fd is None:
            self.shared_note = "uids not locked across evaluator processes (no root-owned lock file could be made)"

    def _flock(self, index: int, kind: int) -> bool:
        packed = struct.pack("@hhqqi4x", kind, os.SEEK_SET, index, 1, 0)  # struct flock; l_pid 0 for OFD locks
        try:
            fcntl.fcntl(self._fd, getattr(fcntl, "F_OFD_SETLK", 37), packed)
            return True
        except OSError:
            return False

    def acquire(self) -> int:
        with self._lock:
            busy = uids_with_tasks()
            for index in range(self.count):
                uid = self.first + index
                if uid in self._taken or uid in self._lost or uid in busy:
                    continue
                if self._fd is not None and not self._flock(index, fcntl.F_WRLCK):
                    continue  # another evaluator's sample runs as it
                self._taken.add(uid)
                return uid
        raise SandboxError(f"no free sandbox uid: all {self.count} of {self.first}-{self.first + self.count - 1} "
                           "are in use or hold processes")

    def release(self, uid: int) -> None:
        """Kill what is left running as `uid`, then hand it back (or retire it if something survives)."""
        clean = kill_uid(uid)
        with self._lock:
            if not clean:
                self._lost.add(uid)  # keep its lock too: no other evaluator should get it either
            elif self._fd is not None:
                self._flock(uid - self.first, fcntl.F_UNLCK)
            self._taken.discard(uid)


def _mapped(first: int, count: int, map_file: str) -> bool:
    """Whether ids first..first+count-1 all exist in this user namespace (/proc/self/uid_map, gid_map)."""
    try:
        lines = Path(map_file).read_text().split("\n")
    except OSError:
        return True  # no user namespaces in this kernel: every id exists
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and int(fields[0]) <= first and first + count <= int(fields[0]) + int(fields[2]):
            return True
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the child exited, without reaping it (so its pid and group id stay reserved)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Output:
    """stdout and stderr of one child: keeps the first `cap` bytes of each, reads and drops the rest."""

    def __init__(self, proc: subprocess.Popen, cap: int, channel_fd: int | None = None):
        self.cap = cap
        self.buffers = {"stdout": bytearray(), "stderr": bytearray(), "channel": bytearray()}
        self.truncated = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
        if channel_fd is not None:
            self.selector.register(channel_fd, selectors.EVENT_READ, "channel")

    def open_pipes(self) -> int:
        return sum(key.data != "exit" for key in self.selector.get_map().values())

    def read(self, timeout_s: float) -> bool:
        """Read whatever is ready within `timeout_s`; True if a registered pidfd said the child exited."""
        exited = False
        for key, _ in self.selector.select(max(0.0, timeout_s)):
            if key.data == "exit":
                exited = True
                continue
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                self.selector.unregister(key.fileobj)
                continue
            buffer = self.buffers[key.data]
            cap = CHANNEL_CAP if key.data == "channel" else self.cap
            if key.data != "channel":
                self.truncated |= len(buffer) + len(chunk) > cap
            buffer += chunk[: max(0, cap - len(buffer))]
        return exited

    def text(self, name: str) -> str:
        return self.buffers[name].decode("utf-8", "replace")


def _wait_for_exit(proc: subprocess.Popen, output: _Output, deadline: float) -> bool:
    """Collect output until the child exits (True) or the deadline passes (False); the child is not reaped."""
    try:
        pidfd = os.pidfd_open(proc.pid)  # Linux >= 5.3: wakes the select when the child exits
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        output.selector.register(pidfd, selectors.EVENT_READ, "exit")
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if output.read(remaining if pidfd is not None else min(remaining, 0.02)) or _has_exited(proc):
                return True
        return _has_exited(proc)
    finally:
        if pidfd is not None:
            output.selector.unregister(pidfd)
            os.close(pidfd)


def _drain(output: _Output, grace_s: float = 1.0) -> None:
    """After the kill: read what is left in the pipes (a writer that escaped the kill gets `grace_s`)."""
    deadline = time.monotonic() + grace_s
    while output.open_pipes() and (remaining := deadline - time.monotonic()) > 0:
        output.read(remaining)
    output.selector.close()


def _remove_folder(folder: Path) -> None:
    """Delete a sandbox folder, even where the program took away its own permissions."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        for root, dirs, _ in os.walk(folder):  # top-down: fix a folder before descending into it
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700)
                except OSError:
                    pass
        shutil.rmtree(folder, ignore_errors=True)


def _traversable_by_others(path: Path) -> bool:
    for folder in [path, *path.parents]:
        try:
            if not os.stat(folder).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


# Run in the sandbox once; its report is compared with the parent's own namespaces and rights.
_PROBE = r"""
import json, os, socket, tempfile
def ns(name):
    try:
        return os.readlink('/proc/self/ns/' + name)
    except OSError:
        return None
outside = [d for d in ('/', '/tmp', '/var/tmp', '/dev/shm') if os.path.isdir(d) and os.access(d, os.W_OK)]
for d in list(outside):  # access() does not know Landlock: try it
    try:
        os.rmdir(tempfile.mkdtemp(dir=d))
    except OSError:
        outside.remove(d)
try:
    socket.socket().bind(('127.0.0.1', 0))
    tcp = True
except OSError:
    tcp = False
print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'net': ns('net'), 'mnt': ns('mnt'), 'pid': ns('pid'),
                  'ipc': ns('ipc'), 'private_tmp': all(os.path.join(d, e) == os.path.dirname(os.getcwd())
                                          for d in ('/tmp', '/dev/shm') if os.path.isdir(d) for e in os.listdir(d)),
                  'outside_writable': outside, 'home_writable': os.access('.', os.W_OK), 'tcp': tcp}))
"""


class Sandbox:
    """Runs programs in isolated children; thread-safe (one instance can serve a worker pool)."""

    def __init__(self, config: SandboxConfig | None = None):
        if sys.platform != "linux":
            raise SandboxError(f"the execution sandbox needs Linux (namespaces, /proc); this is {sys.platform}")
        self.config = config or SandboxConfig()
        self._lock = threading.Lock()
        self._setup: _Setup | None = None
        self._root = os.geteuid() == 0
        self._ids = self._sandbox_ids() if self._root else None
        self._uid_pool: _UidPool | None = None
        self._shared_uid_reason = "the evaluator is not root: every sample runs as its user"
        if self._root:
            pool = self.config.uid_pool
            if pool is None:
                self._shared_uid_reason = f"uid_pool is off: every sample runs as {self.config.user}"
            elif not (_mapped(*pool, "/proc/self/uid_map") and _mapped(*pool, "/proc/self/gid_map")):
                self._shared_uid_reason = (f"uids {pool[0]}-{pool[0] + pool[1] - 1} are not mapped in this user namespace "
                                           f"(/proc/self/uid_map): every sample runs as {self.config.user}")
            else:
                self._uid_pool = _UidPool(*pool)
                self._shared_uid_reason = ""
        self._mounts = read_mounts()
        self._landlock_abi = landlock_abi() if self.config.landlock else 0

    # ---- public -------------------------------------------------------------------------
    def isolation(self) -> dict:
        """What this machine's sandbox achieves (measured by the probe), as a small JSON-able dict."""
        return dict(self._ensure_setup().report)

    def check_language(self, language: str) -> None:
        """Raise SandboxError with one clear line if `language` cannot run here (e.g. node missing)."""
        setup = self._ensure_setup()
        if language == "javascript":
            with self._lock:
                if setup.node is None:
                    setup.node = self._find_node(setup)
        elif language != "python":
            raise SandboxError(f"the sandbox cannot run {language!r} programs (supported: python, javascript)")

    def run(self, language: str, files: Mapping[str, str], argv: Callable[[str, Path], list[str]],
            channel: bytes | None = None) -> SandboxResult:
        """Write `files` (name -> text) into a fresh private folder and run `argv(interpreter, folder)` there.

        `interpreter` is the Python or Node executable chosen for `language`; `folder` holds the files
        (read-only for the program when a mount namespace is available); the program's cwd is `folder/home`.

        `channel`: bytes for a harness channel outside the program text. The program inherits two
        pipe ends named by `$CODECL_HARNESS_FDS` ("READ,WRITE"): READ yields `channel` (at most 1 MiB) then EOF,
        and what the program writes to WRITE (up to 4 KiB) comes back as `SandboxResult.channel`.
        """
        self.check_language(language)
        setup = self._ensure_setup()
        interpreter = setup.python if language == "python" else setup.node
        return self._run(lambda folder: argv(interpreter, folder), files, setup.required, language, channel=channel)

    @property
    def network_cut(self) -> bool:
        return "net" in self._ensure_setup().required

    # ---- setup --------------------------------------------------------------------------
    def _sandbox_ids(self) -> tuple[int, int]:
        try:
            entry = pwd.getpwnam(self.config.user)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            if self.config.user == "nobody":
                return 65534, 65534
            raise ConfigError(f"sandbox user {self.config.user!r} does not exist; create it or use 'nobody'") from None

    def _ensure_setup(self) -> _Setup:
        with self._lock:
            if self._setup is None:
                self._setup = self._probe()
            return self._setup

    def _python_candidates(self) -> list[str]:
        if self.config.python:
            return [self.config.python]
        found = [sys.executable, getattr(sys, "_base_executable", None), shutil.which("python3", path=MIN_PATH)]
        unique: list[str] = []
        for c in found:
            if c and c not in unique:
                unique.append(c)
        return unique

    def _probe(self) -> _Setup:
        errors = []
        for python in self._python_candidates():
            try:
                result = self._run(lambda _: [python, "-I", "-c", _PROBE], {}, frozenset(), "python", probe=True)
            except SandboxError as exc:
                errors.append(f"{python}: {exc}")
                continue
            lines = result.stdout.strip().splitlines()
            if result.exit_code == 0 and lines:
                return self._describe(python, json.loads(lines[-1]))
            errors.append(f"{python}: exit {result.exit_code} {result.stderr.strip()[-200:]}")
        if self._uid_pool is not None:  # e.g. a security module refuses ids without an account: degrade, say why
            self._uid_pool = None
            self._shared_uid_reason = (f"running as a pool uid failed ({'; '.join(errors)[:300]}): "
                                       f"every sample runs as {self.config.user}")
            return self._probe()
        who = f"user {self.config.user!r}" if self._ids else "this user"
        raise SandboxError(f"no Python interpreter can run in the sandbox as {who} ({'; '.join(errors)}); "
                           "set SandboxConfig(python=...) to one installed outside private folders such as /root")

    def _describe(self, python: str, seen: dict) -> _Setup:
        required = {n for n in ("net", "mnt", "pid", "ipc") if seen.get(n) and seen[n] != namespace_of(n)}
        if seen["outside_writable"] or not seen["home_writable"]:  # the mount namespace did not do its job
            required.discard("mnt")
        if "mnt" not in required and self._landlock_abi and not seen["outside_writable"]:
            required.add("landlock_fs")
        if "net" not in required and self._landlock_abi >= 4 and not seen["tcp"]:
            required.add("landlock_net")
        if "net" in required:
            network = "cut (own network namespace)"
        elif "landlock_net" in required:
            network = ("weak: TCP connect/bind refused by Landlock, UDP open; "
                       "socket and network modules stubbed in the child")
        else:
            network = "weak: no network namespace; socket and network modules stubbed in the child"
        if seen["outside_writable"]:
            filesystem = f"weak: private folder, but also writable: {', '.join(seen['outside_writable'])}"
        else:
            by = "tmpfs in a mount namespace" if "mnt" in required else "Landlock"
            filesystem = f"read-only except the private folder ({by})"
        report = {
            "level": "strong" if "net" in required and not seen["outside_writable"] else "weak",
            "network": network,
            "user": (f"dropped to a user id of its own per sample, from {self._uid_pool.first}-"
                     f"{self._uid_pool.first + self._uid_pool.count - 1} (uid {seen['uid']})") if self._uid_pool
            else f"dropped to {self.config.user} (uid {seen['uid']})" if self._ids
            else f"not dropped (evaluator is not root; uid {seen['uid']})",
            "between_samples": (f"own uid per sample: its process limit and its folder (0700) are its own; "
                                f"{self._uid_pool.shared_note}") if self._uid_pool
            else f"weak: {self._shared_uid_reason}; the process limit (RLIMIT_NPROC) is shared by all samples"
                 + ("" if "mnt" in required else " and one sample can read another's folder"),
            "filesystem": filesystem,
            "processes": "own process group" + (" and pid namespace" if "pid" in required else "") + ", killed at the timeout",
            "ipc": "own IPC namespace (System V, POSIX mqueues)" if "ipc" in required else "shared with the host",
            "scratch": ("private: /tmp, /var/tmp, /dev/shm and the other sandbox folders hidden"
                        if "mnt" in required and seen.get("private_tmp") else "shared /tmp (weak)"),
            "limits": {"cpu_s": self._cpu_limit_s(), "address_space_bytes": self.config.memory_limit_bytes,
                       "node_address_space_bytes": self.config.node_memory_limit_bytes,
                       "processes": self.config.max_processes, "file_bytes": self.config.max_file_bytes,
                       "open_files": self.config.max_open_files},
            "python": python,
        }
        return _Setup(python=python, required=frozenset(required), report=report)

    def _find_node(self, setup: _Setup) -> str:
        name = self.config.node or "node"
        node = shutil.which(name) or shutil.which(name, path=MIN_PATH)
        if not node:
            raise SandboxError(f"{name} (Node.js) was not found on PATH; "
                               "install Node.js >= 18 to evaluate JavaScript problems")
        result = self._run(lambda _: [node, "-e", "process.exit(0)"], {}, setup.required, "javascript")
        if result.exit_code != 0:
            raise SandboxError(f"{node} cannot run in the sandbox (exit {result.exit_code}): "
                               f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
        return node

    # ---- one run ------------------------------------------------------------------------
    def _cpu_limit_s(self) -> int:
        return math.ceil(self.config.timeout_s) + 1

    def _plan(self, home: str, required: frozenset[str], language: str, probe: bool,
              ids: tuple[int, int] | None) -> ChildPlan:
        cfg = self.config
        wanted: tuple[str, ...] = ()
        if cfg.namespaces:
            wanted = ("net", "mnt", "pid", "ipc") if self._root else ("net", "pid", "ipc")
            if not probe:
                wanted = tuple(n for n in wanted if n in required)
        memory = cfg.node_memory_limit_bytes if language == "javascript" else cfg.memory_limit_bytes
        cpu = self._cpu_limit_s()
        # RLIMIT_NPROC counts every task of the real uid: a fresh pool uid has none; a shared one has
        # the other samples' (and, not root, the evaluator's own), counted now.
        nproc = cfg.max_processes if self._uid_pool else task_count(ids[0] if ids else os.getuid()) + cfg.max_processes
        limits = ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, memory, memory),
                  (resource.RLIMIT_NPROC, nproc, nproc), (resource.RLIMIT_FSIZE, cfg.max_file_bytes, cfg.max_file_bytes),
                  (resource.RLIMIT_NOFILE, cfg.max_open_files, cfg.max_open_files), (resource.RLIMIT_CORE, 0, 0))
        fs_rights, net_rights = landlock_rights(self._landlock_abi)
        landlock_fs = fs_rights if probe or "landlock_fs" in required else 0
        landlock_net = net_rights if probe or "landlock_net" in required else 0
        folder = os.path.dirname(home)
        private = tuple(d for d in dict.fromkeys((*PRIVATE_DIRS, os.path.dirname(folder)))
                        if os.path.isdir(d) and not os.path.islink(d) and d != "/")
        return ChildPlan(namespaces=wanted, required=required, unprivileged_userns=not self._root, mounts=self._mounts,
                         home=home, home_size_bytes=cfg.home_size_bytes, ids=ids, limits=limits,
                         landlock_fs=landlock_fs, landlock_net=landlock_net,
                         landlock_attr_size=16 if self._landlock_abi >= 4 else 8,
                         folder=folder, private_dirs=private if "mnt" in wanted else ())

    def _make_folder(self) -> Path:
        base = Path(tempfile.gettempdir())
        if self._ids and not _traversable_by_others(base):
            base = Path("/tmp")
        folder = Path(tempfile.mkdtemp(prefix="codecl-sandbox-", dir=base))
        (folder / "home").mkdir()
        return folder

    def _run(self, argv: Callable[[Path], list[str]], files: Mapping[str, str], required: frozenset[str],
             language: str, probe: bool = False, channel: bytes | None = None) -> SandboxResult:
        uid = self._uid_pool.acquire() if self._uid_pool else None
        try:
            ids = (uid, uid) if uid is not None else self._ids
            folder = self._make_folder()  # mode 0700: only its own uid (and root) may enter it
            try:
                for name, text in files.items():
                    (folder / name).write_text(text, encoding="utf-8")
                if ids:
                    for path in [folder, *folder.iterdir()]:
                        os.chown(path, *ids)
                plan = self._plan(str(folder / "home"), required, language, probe, ids)
                return self._execute(argv(folder), plan, channel)
            finally:
                _remove_folder(folder)
        finally:
            if uid is not None:
                self._uid_pool.release(uid)

    def _execute(self, argv: list[str], plan: ChildPlan, channel: bytes | None = None) -> SandboxResult:
        cfg = self.config
        env = {"PATH": MIN_PATH, "HOME": plan.home, "TMPDIR": plan.home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        report_r, report_w = os.pipe()  # the child writes why its setup failed here
        child_ends: list[int] = []
        back_r = None
        if channel is not None:  # harness channel: the child reads `channel` from in_r, answers on back_w
            if len(channel) > CHANNEL_IN_MAX:
                raise ValueError(f"a harness channel carries at most {CHANNEL_IN_MAX} bytes, got {len(channel)}")
            in_r, in_w = os.pipe()
            back_r, back_w = os.pipe()
            try:
                if len(channel) > 65536:  # it is written before the child starts: the pipe must hold it all
                    fcntl.fcntl(in_w, F_SETPIPE_SZ, len(channel))
                if os.write(in_w, channel) != len(channel):
                    raise OSError("short write to the harness channel")
            except BaseException:
                for fd in (in_r, back_r, back_w):
                    os.close(fd)
                raise
            finally:
                os.close(in_w)
            child_ends = [in_r, back_w]
            env[CHANNEL_ENV] = f"{in_r},{back_w}"
        start = time.monotonic()
        try:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=plan.home, env=env, start_new_session=True, close_fds=True,
                                        pass_fds=tuple(child_ends), preexec_fn=make_preexec(plan, report_w))
            except subprocess.SubprocessError:
                os.close(report_w)
                reason = os.read(report_r, 4096).decode(errors="replace").strip() or "preexec failed"
                os.close(report_r)
                raise SandboxError(f"sandbox setup failed in the child: {reason}") from None
            except OSError as exc:
                os.close(report_w)
                os.close(report_r)
                raise SandboxError(f"cannot start {argv[0]}: {exc.strerror}") from None
        except BaseException:
            for fd in child_ends + ([back_r] if back_r is not None else []):
                os.close(fd)
            raise
        for fd in child_ends:
            os.close(fd)
        os.close(report_w)
        os.close(report_r)
        child_pid_ns = hold_namespace("pid_for_children", proc.pid)  # None: the program is already gone
        if child_pid_ns is not None and os.fstat(child_pid_ns).st_ino == os.stat("/proc/self/ns/pid").st_ino:
            os.close(child_pid_ns)  # no pid namespace of its own
            child_pid_ns = None
        try:
            with proc:
                output = _Output(proc, cfg.max_output_bytes, back_r)
                exited = _wait_for_exit(proc, output, start + cfg.timeout_s)
                _kill_group(proc.pid)  # whatever the program left behind, or all of it at the timeout
                if child_pid_ns is not None:
                    kill_pid_namespace(child_pid_ns)  # also what left the group with setsid()
                exit_code = proc.wait()
                _drain(output)
        finally:
            if child_pid_ns is not None:
                os.close(child_pid_ns)
            if back_r is not None:
                os.close(back_r)
        duration = time.monotonic() - start
        timed_out = not exited or exit_code == -signal.SIGXCPU
        return SandboxResult(exit_code=None if timed_out else exit_code, timed_out=timed_out, duration_s=duration,
                             stdout=output.text("stdout"), stderr=output.text("stderr"),
                             pid=proc.pid, output_truncated=output.truncated,
                             channel=None if back_r is None else bytes(output.buffers["channel"]))
