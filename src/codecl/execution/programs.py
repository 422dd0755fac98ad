"""The program that tests one completion, and the files and command line that run it.

Assembly (as the benchmarks' own harnesses do; the completion continues the prompt):
- Python, HumanEval and MBXP (the problem has `entry_point`; `test` defines `check(candidate)`):
      prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n"
  (openai/human-eval `execution.py`; amazon-science/mxeval).
- Python, HumanEval-X (no `entry_point`; `test` ends by calling `check(<name>)` itself):
      prompt + completion + "\\n" + test + "\\n"
- JavaScript, HumanEval-X and MBXP (`test` calls the function itself):
      prompt + completion + "\\n" + test + "\\n"
(`assemble_program`). What runs is not that text as one script but a harness that proves the
checks ran to their end and passed.

The verdict ("a pass means the checks passed", see `evaluate.py`): a sample passes only when
(a) the harness writes back, on a channel outside the program text (an inherited pipe, see
`Sandbox.run(channel=...)`), the random per-run token the evaluator sent it, which it does only
after the checks returned normally, and (b) the process exits 0 within the time limit.

Python: two processes. The checks process (`harness.py`) reads the token, prompt, solution,
checks and entry point from the channel (nothing of it is written to the folder), makes itself
non-dumpable (PR_SET_DUMPABLE 0: a process of the same user can neither ptrace it nor read its
/proc memory, environment or descriptors), and starts the solution process: a fresh interpreter
sent only prompt + completion over a pipe. The checks run beside the prompt's own helpers (the
prompt with `pass` as the body of the function under test) and call the function under test
through a proxy: arguments and results cross the pipe as tagged JSON of plain data (None, bool,
int, float, complex, str, bytes, list, tuple, dict, set, frozenset), exceptions as their
builtin type and message. So:
- `raise SystemExit(0)`, `sys.exit(0)`, `exit()`, `os._exit(0)`, a
  `if __name__ == "__main__": sys.exit(main())` guard, `atexit` handlers, `sys.excepthook`,
  threads that end the process, exit codes that wrap to 0 (`sys.exit(256)`): they end or
  change only the solution process; the checks never returned, so no token came back.
- an object that compares equal to anything cannot cross: the solution side sends plain data
  only (a subclass of int/float/str/... crosses as its plain value, built by the base type);
  anything else arrives as `NotPlainData` (a BaseException, so a test's `except Exception`
  cannot swallow it). Whatever the solution process sends, the checks decode plain data.
- the solution cannot read the tests: they are not on disk, not in its memory, and the checks
  process is not dumpable; walking up the stack ends in the proxy's loop.
JavaScript: one process, `harness.js`, which runs solution + checks as one module (they share
a scope in the benchmark's own harness) and writes the token after it returned.
`process.exit(0)` (also 256), `process.on('exit'|'uncaughtException', ...)` handlers and
`process.exitCode` fail the same way. `console.assert` (which only prints in Node) throws and
is locked: `console` on the global object and its `assert` are non-writable and
non-configurable, so `console.assert = () => {}` does nothing (the `assert` module that MBXP
tests use is frozen for the same reason). Since a completion can still shadow `console` in
the module scope it shares with the test (`const console = {assert() {}}`), the harness also
records every line from which the real `console.assert` was called with a true condition, and
writes the token only when every line of the test that holds `console.assert` was among them
(V8 call-site line numbers; `Error.prepareStackTrace` is pinned).
Out of reach:
- JavaScript: the completion runs in the checks' process: code written against this harness
  can find the token (its descriptors, the harness's closures) and write it, read the test
  files, or return objects whose `valueOf`/`toString`/`toJSON` lie (`==`, JSON.stringify
  comparisons). Closing that needs the Python design in Node (a second process, data-only
  proxy); not done.
- Python, when the evaluator is not root: the program runs in an unprivileged user namespace
  where it holds CAP_SYS_PTRACE, which overrides "not dumpable", so a solution written against
  this harness could ptrace the checks process and forge the token. (As root the program runs as
  an unprivileged uid of its own without capabilities, in every isolation mode.) The solution process can always
  kill the checks process (same user): that only makes the sample fail.
- Both: the solution can compute the answer any way it likes (hard-coding a benchmark's known
  answers is not detected).

Runtime guards, part of the harness (never of the program text, so that a Python
`from __future__` import stays first and line numbers are unchanged):
- Weak isolation only (no network namespace): the Python solution process replaces `socket.socket`,
  `socket.create_connection` and friends with stubs that raise and blocks starting other
  programs; the Node harness makes `require` refuse the network and process modules and
  stubs `fetch`. Best effort: these guards live in the program's own process and determined
  code can get around them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from codecl.execution.benchmark import Problem

PROGRAM_FILES = {"python": "harness.py", "javascript": "harness.js"}
SOLUTION_FILES = {"python": "solution.py", "javascript": "solution.js"}
CHECKS_FILES = {"python": "checks.py", "javascript": "checks.js"}

JS_ASSERT_PRELUDE = """\
'use strict';
// HumanEval-X tests use console.assert, which only prints in Node: make it throw (for `node --require`).
console.assert = (c, ...m) => { if (!c) { throw new Error('Assertion failed: ' + m.join(' ')) } };
"""

JS_NETWORK_GUARD = """\
(() => {
  const Module = require('module');
  const blocked = new Set(['net', 'http', 'https', 'http2', 'tls', 'dgram', 'dns', 'child_process',
                           'cluster', 'worker_threads', 'inspector']);
  const originalRequire = Module.prototype.require;
  Module.prototype.require = function (id) {
    if (blocked.has(String(id).replace(/^node:/, ''))) {
      throw new Error(`require('${id}') is disabled in the codecl sandbox`);
    }
    return originalRequire.apply(this, arguments);
  };
  process.binding = () => { throw new Error('process.binding is disabled in the codecl sandbox'); };
  globalThis.fetch = () => Promise.reject(new Error('fetch is disabled in the codecl sandbox'));
})();
"""

# Runs solution.js + checks.js as one module (they share a scope, as in the benchmark's own
# harness); writes the token back only when that returned and every `console.assert` line of
# the checks was reached with a true condition. argv: harness.js program.js first_check_line.
JS_HARNESS = r"""'use strict';
const fs = require('fs');
const path = require('path');
const Module = require('module');
const [readFd, writeFd] = String(process.env.CODECL_HARNESS_FDS || '').split(',').map(Number);
delete process.env.CODECL_HARNESS_FDS;
const chunks = [];
const buffer = Buffer.alloc(4096);
for (;;) {
  const n = fs.readSync(readFd, buffer, 0, buffer.length, null);
  if (n === 0) break;
  chunks.push(Buffer.from(buffer.subarray(0, n)));
}
fs.closeSync(readFd);
const token = Buffer.concat(chunks);
const folder = __dirname;
const solution = fs.readFileSync(path.join(folder, 'solution.js'), 'utf8');
const checks = fs.readFileSync(path.join(folder, 'checks.js'), 'utf8');
const program = solution + '\n' + checks + '\n';
const programFile = path.join(folder, 'program.js');
const firstCheckLine = solution.split('\n').length + 1;
const wanted = new Set();
checks.split('\n').forEach((line, i) => { if (line.includes('console.assert')) wanted.add(firstCheckLine + i); });
const reached = new Set();
const capture = Error.captureStackTrace;
const frames = (_, stack) => stack;
Object.defineProperty(Error, 'prepareStackTrace', {value: undefined, writable: true, configurable: false});
Object.defineProperty(Error, 'stackTraceLimit', {value: 10, writable: false, configurable: false});
function codeclAssert(condition, ...message) {
  if (!condition) {
    throw new Error('Assertion failed' + (message.length ? ': ' + message.join(' ') : ''));
  }
  const saved = Error.prepareStackTrace;
  Error.prepareStackTrace = frames;
  const holder = {};
  capture(holder, codeclAssert);
  const stack = holder.stack;
  Error.prepareStackTrace = saved;
  const site = Array.isArray(stack) ? stack[0] : undefined;
  if (site && site.getFileName() === programFile) reached.add(site.getLineNumber());
}
Object.defineProperty(console, 'assert', {value: codeclAssert, writable: false, configurable: false, enumerable: true});
Object.defineProperty(globalThis, 'console', {value: console, writable: false, configurable: false});
for (const name of ['assert', 'assert/strict']) {  // MBXP tests use node:assert: lock its functions too
  const module = require(name);
  Object.freeze(module);
  if (module.strict) Object.freeze(module.strict);
}
//GUARD
const main = new Module(programFile, null);
main.filename = programFile;
main.paths = Module._nodeModulePaths(folder);
process.argv[1] = programFile;
main._compile(program, programFile);
for (const line of wanted) {
  if (!reached.has(line)) {
    throw new Error(`codecl harness: the check at program.js line ${line} never passed`);
  }
}
fs.writeSync(writeFd, token);
fs.closeSync(writeFd);
"""

PYTHON_STUBS = """\
import socket, subprocess

def _disabled(*args, **kwargs):
    raise PermissionError("network and process spawning are disabled in the codecl sandbox")

class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _disabled()

socket.socket = _NoSocket
for _name in ("create_connection", "create_server", "fromfd", "getaddrinfo"):
    setattr(socket, _name, _disabled)
subprocess.Popen = _disabled
for _name in ("system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
              "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, _disabled)
"""

# A standalone runner with the same stubs: guard.py program.py (used by the sandbox's own tests).
PYTHON_GUARD = ("# codecl sandbox guard (weak isolation: no network namespace). Best effort.\nimport os, runpy, sys\n"
                + PYTHON_STUBS + "_program = sys.argv[1]\nsys.argv = sys.argv[1:]\nrunpy.run_path(_program, run_name=\"__main__\")\n")

# The Python harness runs as two processes. The checks process (harness.py) holds the token and
# the tests; it starts the solution process (SOLUTION_SERVER, a fresh interpreter that is sent
# only prompt + completion), and the tests call the function under test through a proxy whose
# arguments and results cross a pipe as data (tagged JSON: None, bool, int, float, complex,
# str, bytes, list, tuple, dict, set, frozenset). The channel (see Sandbox.run) carries
# {"token", "prompt", "solution", "checks", "entry"}; nothing of it is on disk.
PYTHON_CODEC = r'''
import json as _json

class NotPlainData(BaseException):
    """A value that is not plain data cannot cross between the processes."""

def encode(value, depth=0):
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return {"__f": repr(value)}
    if depth > 200:
        raise NotPlainData("value nested too deeply")
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"__t": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"__d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"__s" if kind is set else "__fs": [encode(v, depth + 1) for v in value]}
    if kind is complex:
        return {"__c": [repr(value.real), repr(value.imag)]}
    if kind is bytes:
        return {"__b": value.hex()}
    for base in (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset):
        if isinstance(value, base):  # subclasses (numpy scalars, ...): their plain value, made by the base type
            try:
                plain = base(value)
            except Exception:
                break
            if type(plain) is base:
                return encode(plain, depth + 1)
    if hasattr(kind, "__index__"):
        try:
            plain = value.__index__()
        except Exception:
            plain = None
        if type(plain) is int:
            return plain
    raise NotPlainData(f"a {kind.__name__!r} is not plain data (None, bool, numbers, str, bytes, list, tuple, "
                       "dict, set): it cannot cross to the checks")

def _decode_object(obj):
    if len(obj) != 1 or not next(iter(obj)).startswith("__"):
        return obj  # a message, or a plain str-keyed dict: data either way
    (tag, body), = obj.items()
    if tag == "__f":
        return float(body)
    if tag == "__t":
        return tuple(body)
    if tag == "__d":
        return {k: v for k, v in body}
    if tag == "__s":
        return set(body)
    if tag == "__fs":
        return frozenset(body)
    if tag == "__c":
        return complex(float(body[0]), float(body[1]))
    if tag == "__b":
        return bytes.fromhex(body)
    raise ValueError("bad message")

def decode(text):
    return _json.loads(text, object_hook=_decode_object)

def dumps(message):
    return _json.dumps(message, separators=(",", ":"))
'''

SOLUTION_SERVER = r'''
import os, sys
sys.set_int_max_str_digits(0)
_requests, _replies = int(sys.argv[1]), int(sys.argv[2])
#STUBS
_in = os.fdopen(_requests, "r", encoding="utf-8")
_out = os.fdopen(_replies, "w", encoding="utf-8")
_setup = decode(_in.readline())
sys.argv = ["solution.py"]
_namespace = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "solution.py"}
exec(compile(_setup["solution"], "solution.py", "exec", dont_inherit=True), _namespace)
_function = _namespace.get(_setup["entry"])
if not callable(_function):
    _out.write(dumps({"error": f"the solution defines no function {_setup['entry']!r}"}) + "\n")
else:
    _out.write(dumps({"ready": True}) + "\n")
_out.flush()
for _line in _in:
    _call = decode(_line)
    try:
        _reply = {"result": encode(_function(*_call["args"], **_call["kwargs"]))}
    except NotPlainData as exc:
        _reply = {"raise": ["NotPlainData", str(exc)]}
    except Exception as exc:
        _reply = {"raise": [type(exc).__name__, str(exc)[:1000]]}
    _out.write(dumps(_reply) + "\n")
    _out.flush()
'''

# argv: harness.py ; everything else comes on the channel.
PYTHON_HARNESS = r'''# codecl harness (checks process). See codecl/execution/programs.py.
import builtins, ctypes, json, os, subprocess, sys
sys.set_int_max_str_digits(0)
''' + PYTHON_CODEC + r'''
class SolutionGone(BaseException):
    """The solution process ended or broke the protocol."""

def _read_channel(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))

def _stub(prompt):
    """The prompt's helpers for the checks: the prompt with `pass` as the body of its last function."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    indent = lines[-1][: len(lines[-1]) - len(lines[-1].lstrip())] if lines else ""
    for text in (prompt.rstrip("\n") + "\n" + indent + "pass\n", prompt):
        try:
            return compile(text, "prompt.py", "exec", dont_inherit=True)
        except SyntaxError:
            continue
    return compile("", "prompt.py", "exec")

def _main():
    read_fd, write_fd = (int(fd) for fd in os.environ.pop("CODECL_HARNESS_FDS").split(","))
    os.set_inheritable(write_fd, False)
    job = _read_channel(read_fd)
    token, entry = job.pop("token").encode(), job["entry"]
    try:  # not dumpable: the solution process (same user) cannot ptrace this one or read its memory
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        pass
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    server = subprocess.Popen([sys.executable, "-I", "-B", "-c", SERVER, str(requests_r), str(replies_w)],
                              stdin=subprocess.DEVNULL, pass_fds=(requests_r, replies_w), close_fds=True)
    os.close(requests_r)
    os.close(replies_w)
    to_solution = os.fdopen(requests_w, "w", encoding="utf-8")
    from_solution = os.fdopen(replies_r, "r", encoding="utf-8")

    def gone():
        try:
            status = server.wait(5)
        except subprocess.TimeoutExpired:
            status = None
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        return SolutionGone(f"the solution process ended before the checks did ({how})")

    def exchange(message):
        try:
            to_solution.write(dumps(message) + "\n")
            to_solution.flush()
        except OSError:
            raise gone() from None
        line = from_solution.readline()
        if not line:
            raise gone()
        try:
            return decode(line)
        except ValueError:
            raise SolutionGone("the solution process broke the protocol") from None

    ready = exchange({"solution": job["solution"], "entry": entry})
    if "error" in ready:
        raise SolutionGone(ready["error"])

    def candidate(*args, **kwargs):
        reply = exchange({"args": encode(list(args)), "kwargs": {str(k): encode(v) for k, v in kwargs.items()}})
        if "result" in reply:
            return reply["result"]
        name, message = reply["raise"]
        if name == "NotPlainData":
            raise NotPlainData(message)
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception):
            raise kind(message)
        raise RuntimeError(f"{name}: {message}")

    candidate.__name__ = candidate.__qualname__ = entry
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "checks.py"}
    exec(_stub(job["prompt"]), namespace)
    namespace[entry] = candidate
    exec(compile(job["checks"], "checks.py", "exec", dont_inherit=True), namespace)
    check = namespace.get("check")
    if not callable(check):
        raise RuntimeError("codecl harness: the checks define no check()")
    check(candidate)
    os.write(write_fd, token)
    os.close(write_fd)
    server.kill()
    server.wait()

_main()
'''


_FINAL_CHECK = re.compile(r"^check\(\s*([A-Za-z_]\w*)\s*\)\s*$")


def assemble_program(problem: Problem, completion: str) -> str:
    """The full program text that tests `completion` (see the module docstring)."""
    program = problem.prompt + completion + "\n" + problem.test + "\n"
    if problem.language == "python" and problem.entry_point:
        program += f"check({problem.entry_point})\n"
    return program


def _python_parts(problem: Problem, completion: str) -> tuple[str, str, str]:
    """(solution, checks, the function under test that the harness calls check() with)."""
    solution = problem.prompt + completion + "\n"
    if problem.entry_point:
        return solution, problem.test + "\n", problem.entry_point
    lines = problem.test.rstrip().split("\n")
    final = _FINAL_CHECK.match(lines[-1]) if lines else None
    if final:  # HumanEval-X: the harness makes the final check(name) call itself, through the proxy
        return solution, "\n".join(lines[:-1]) + "\n", final.group(1)
    return solution, problem.test + "\n", ""


def program_files(problem: Problem, completion: str, network_cut: bool) -> dict[str, str]:
    """File name -> text of everything the sandbox folder needs to run this completion (what it
    tests comes on the channel for Python, see `channel_payload`)."""
    if problem.language == "javascript":
        harness = JS_HARNESS.replace("//GUARD\n", "" if network_cut else JS_NETWORK_GUARD)
        return {"harness.js": harness, "solution.js": problem.prompt + completion,
                "checks.js": problem.test}
    server = PYTHON_CODEC + SOLUTION_SERVER.replace("#STUBS\n", "" if network_cut else PYTHON_STUBS)
    return {"harness.py": PYTHON_HARNESS.replace("SERVER, str(requests_r)", repr(server) + ", str(requests_r)")}


def channel_payload(problem: Problem, completion: str, token: str) -> bytes:
    """What the harness reads from its channel: the token, and for Python the texts it tests."""
    if problem.language == "javascript":
        return token.encode()
    solution, checks, entry = _python_parts(problem, completion)
    if not entry:
        raise ValueError(f"{problem.task_id}: cannot tell the function under test (no entry_point, and the test "
                         "does not end with check(<name>))")
    return json.dumps({"token": token, "prompt": problem.prompt, "solution": solution, "checks": checks,
                       "entry": entry}).encode()


def command_line(language: str, interpreter: str, folder: Path, network_cut: bool) -> list[str]:
    """argv that runs the program written by `program_files` in `folder`."""
    if language == "javascript":
        return [interpreter, str(folder / "harness.js")]
    return [interpreter, "-I", "-B", str(folder / "harness.py")]
