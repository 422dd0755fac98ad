"""What the sandboxed child does to itself between fork and exec: namespaces, read-only
mounts, Landlock, resource limits, dropping root (Linux only; see sandbox.py for the why).

Everything is decided in the parent (`ChildPlan`), so that the child, a fork of a possibly
multi-threaded process, only makes system calls. Kernel interfaces are reached through
ctypes: unshare(2), mount(2), prctl(2) and the Landlock syscalls (Documentation/userspace-api/landlock.rst).
"""
from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# linux/sched.h, linux/mount.h, linux/prctl.h
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x20, 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_RELATIME = 0x40000, 0x200000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# linux/landlock.h (syscalls 444-446 in the generic table: x86_64 and aarch64 alike)
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
LANDLOCK_FS_WRITE_FILE, LANDLOCK_FS_TRUNCATE = 1 << 1, 1 << 14
LANDLOCK_FS_WRITES_V1 = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make *
LANDLOCK_FS_REFER = 1 << 13
LANDLOCK_NET_BIND_TCP, LANDLOCK_NET_CONNECT_TCP = 1 << 0, 1 << 1
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
NAMESPACE_FLAGS = {"net": CLONE_NEWNET, "mnt": CLONE_NEWNS, "pid": CLONE_NEWPID, "ipc": CLONE_NEWIPC}
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
"""Shared scratch folders hidden behind an empty read-only tmpfs in the mount namespace (with the
folder that holds the sandbox folders): their Unix sockets, FIFOs and files, and other samples'
folders, are out of the program's sight."""



@dataclass(frozen=True)
class ChildPlan:
    """Everything the child needs, computed before `fork` so that the child only makes system calls."""

    namespaces: tuple[str, ...]  # wanted: subset of net, mnt, pid, ipc
    required: frozenset[str]  # must succeed (after the probe showed they work)
    unprivileged_userns: bool  # not root: unshare with CLONE_NEWUSER
    mounts: tuple[tuple[bytes, int], ...]  # mount points to remount read-only, with their flags
    home: str
    home_size_bytes: int
    ids: tuple[int, int] | None  # (uid, gid) to drop to, when root
    limits: tuple[tuple[int, int, int], ...]  # (resource, soft, hard)
    landlock_fs: int = 0  # Landlock write rights to confine to `home` (0: none)
    landlock_net: int = 0  # Landlock TCP rights to refuse (0: none)
    landlock_attr_size: int = 8  # sizeof(struct landlock_ruleset_attr): 16 from ABI 4 (handled_access_net)
    folder: str = ""  # the sandbox folder (home's parent), bound back into view after the private tmpfs mounts
    private_dirs: tuple[str, ...] = ()  # hidden behind an empty read-only tmpfs (mount namespace only)


_libc = None


def _load_libc():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        libc.unshare.argtypes = [ctypes.c_int]
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc = libc
    return _libc


def landlock_abi() -> int:
    """Landlock ABI version of this kernel (0: unavailable or blocked, e.g. by seccomp)."""
    if sys.platform != "linux":
        return 0
    libc = _load_libc()
    version = libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_long(0),
                           ctypes.c_long(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, version)


def landlock_rights(abi: int) -> tuple[int, int]:
    """(file-system write rights, TCP rights) that Landlock ABI `abi` can restrict."""
    fs = LANDLOCK_FS_WRITES_V1 | (LANDLOCK_FS_REFER if abi >= 2 else 0) | (LANDLOCK_FS_TRUNCATE if abi >= 3 else 0)
    net = LANDLOCK_NET_BIND_TCP | LANDLOCK_NET_CONNECT_TCP if abi >= 4 else 0
    return (fs if abi >= 1 else 0), net


def _landlock_restrict(plan: ChildPlan) -> str | None:
    """Confine writes to plan.home and refuse TCP (as planned); return why it failed, or None."""
    libc = _load_libc()
    attr = struct.pack("<QQ", plan.landlock_fs, plan.landlock_net)[: plan.landlock_attr_size]
    ruleset = libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.c_char_p(attr),
                           ctypes.c_long(len(attr)), ctypes.c_long(0))
    if ruleset < 0:
        return f"landlock_create_ruleset failed: errno {ctypes.get_errno()}"
    try:
        rules = [(plan.home, plan.landlock_fs)] if plan.landlock_fs else []
        if plan.landlock_fs:
            rules.append(("/dev/null", plan.landlock_fs & (LANDLOCK_FS_WRITE_FILE | LANDLOCK_FS_TRUNCATE)))
        for path, rights in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("<Qi", rights, fd)  # struct landlock_path_beneath_attr is packed
                if libc.syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_long(ruleset),
                                ctypes.c_long(LANDLOCK_RULE_PATH_BENEATH), ctypes.c_char_p(rule), ctypes.c_long(0)) < 0:
                    return f"landlock_add_rule({path}) failed: errno {ctypes.get_errno()}"
            finally:
                os.close(fd)
        if libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_long(0)) < 0:
            return f"landlock_restrict_self failed: errno {ctypes.get_errno()}"
    finally:
        os.close(ruleset)
    return None


def read_mounts() -> tuple[tuple[bytes, int], ...]:
    """Mount points of this process with the flags a read-only bind remount must keep."""
    mounts = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        flags = 0
        for option in fields[5].split(","):
            flags |= _MOUNT_FLAGS.get(option, 0)
        mounts.append((os.fsencode(point), flags))
    return tuple(mounts)


def namespace_of(name: str, pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{name}")
    except OSError:
        return None


def task_count(uid: int) -> int:
    """Threads and processes owned by `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
        threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
        if uid_line and int(uid_line.group(1)) == uid:
            count += int(threads.group(1)) if threads else 1
    return count


def uids_with_tasks() -> set[int]:
    """Real user ids that own a task (zombies included: they still count for RLIMIT_NPROC)."""
    uids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if uid_line:
            uids.add(int(uid_line.group(1)))
    return uids


def kill_uid(uid: int, rounds: int = 50) -> bool:
    """SIGKILL every process whose real uid is `uid` (the evaluator's own per-sample uid) until none
    is left alive; True when none is (zombies, dead already, do not count). Needs root."""
    for _ in range(rounds):
        alive = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
            if not uid_line or int(uid_line.group(1)) != uid or re.search(r"^State:\s+[ZX]", status, re.M):
                continue
            alive += 1
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
        if not alive:
            return True
        time.sleep(0.01)
    return False


def hide_shared_dirs(plan: ChildPlan, libc, fail) -> None:
    """Mount an empty tmpfs on each of `plan.private_dirs`, then bind the sandbox folder back into view."""
    if not plan.private_dirs:
        return
    folder_fd = os.open(plan.folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if plan.folder else -1
    try:
        for point in plan.private_dirs:
            if libc.mount(b"tmpfs", point.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          b"size=1m,mode=0755") != 0 and plan.required:
                fail(f"mounting a private tmpfs on {point} failed: errno {ctypes.get_errno()}")
        if folder_fd >= 0 and not os.path.isdir(os.path.join(plan.folder, "home")):
            os.makedirs(plan.folder, exist_ok=True)
            if libc.mount(f"/proc/self/fd/{folder_fd}".encode(), plan.folder.encode(), None, MS_BIND, None) != 0 \
                    and plan.required:
                fail(f"binding the sandbox folder back failed: errno {ctypes.get_errno()}")
    finally:
        if folder_fd >= 0:
            os.close(folder_fd)


def make_preexec(plan: ChildPlan, report_fd: int):
    """The function the child runs between fork and exec (see the module docstring)."""
    libc = _load_libc()

    def fail(reason: str) -> None:
        os.write(report_fd, reason.encode() + b"\n")
        raise RuntimeError(reason)

    def mirror_child(child: int) -> None:  # the intermediate process: wait, then exit like the program
        # Hold no pipe: Popen waits for EOF on its exec-error pipe, the caller for EOF on stdout/stderr.
        try:
            fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        except OSError:
            fds = list(range(65536))
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status):
            killed_by = os.WTERMSIG(status)
            try:
                signal.signal(killed_by, signal.SIG_DFL)
            except (OSError, ValueError):  # SIGKILL has no handler to reset
                pass
            os.kill(os.getpid(), killed_by)
            os._exit(128 + killed_by)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        got: set[str] = set()
        wanted = [NAMESPACE_FLAGS[n] for n in plan.namespaces]
        base = CLONE_NEWUSER if plan.unprivileged_userns else 0
        if wanted and libc.unshare(base | sum(wanted)) == 0:
            got.update(plan.namespaces)
        elif wanted:
            for name in plan.namespaces:
                if libc.unshare(base | NAMESPACE_FLAGS[name]) == 0:
                    got.add(name)
                    base = 0  # the user namespace exists now
        missing = [n for n in plan.namespaces if n not in got]
        if missing and plan.required:  # the probe (nothing required yet) takes what it gets
            fail(f"unshare({', '.join(missing)}) failed: errno {ctypes.get_errno()}")
        # Private propagation first: nothing below may leak into the parent's mount namespace.
        if "mnt" in got and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0:
            hide_shared_dirs(plan, libc, fail)
            for point, flags in plan.mounts:
                libc.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)
            for point in plan.private_dirs + ((plan.folder,) if plan.folder else ()):
                libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            uid, gid = plan.ids or (os.getuid(), os.getgid())
            options = f"size={plan.home_size_bytes},mode=0700,uid={uid},gid={gid}".encode()
            if libc.mount(b"tmpfs", plan.home.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options) != 0 \
                    and plan.required:
                fail(f"mounting the private tmpfs failed: errno {ctypes.get_errno()}")
        elif "mnt" in got and plan.required:
            fail(f"making mounts private failed: errno {ctypes.get_errno()}")
        if "pid" in got:
            child = os.fork()
            if child:
                mirror_child(child)
            if "mnt" in got:  # a /proc that shows only this namespace
                libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        os.chdir(plan.home)
        for which, soft, hard in plan.limits:
            resource.setrlimit(which, (soft, hard))
        if plan.ids is not None:
            os.setgroups([])
            os.setgid(plan.ids[1])
            os.setuid(plan.ids[0])
            if os.getuid() != plan.ids[0] or os.geteuid() == 0:
                fail("dropping root privileges failed")
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # also what Landlock requires
        if plan.landlock_fs or plan.landlock_net:
            problem = _landlock_restrict(plan)
            if problem and plan.required:  # the probe (nothing required yet) tolerates it
                fail(problem)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it

    return preexec


def hold_namespace(name: str, pid: int | str = "self") -> int | None:
    """An open file of /proc/PID/ns/NAME: while it is open the namespace lives on, so its inode
    number cannot be handed to a new namespace (a name read with readlink can be reused as soon
    as the namespace dies, and killing by that name could hit another sample)."""
    try:
        return os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def kill_pid_namespace(held_fd: int) -> None:
    """SIGKILL every process in the pid namespace held open by `held_fd` (see `hold_namespace`)."""
    target = os.fstat(held_fd)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        if (ns.st_ino, ns.st_dev) == (target.st_ino, target.st_dev):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
