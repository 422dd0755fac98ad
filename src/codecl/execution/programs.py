"""The program that tests one completion, and the files and command line that run it.

Assembly (as the benchmarks' own harnesses do; the completion continues the prompt):
- Python, HumanEval and MBXP (the problem has `entry_point`; `test` defines `check(candidate)`):
      prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n"
  (openai/human-eval `execution.py`; amazon-science/mxeval).
- Python, HumanEval-X (no `entry_point`; `test` ends by calling `check(<name>)` itself):
      prompt + completion + "\\n" + test + "\\n"
- JavaScript, HumanEval-X and MBXP (`test` calls the function itself):
      prompt + completion + "\\n" + test + "\\n"
A program passes when it exits with status 0 within the time limit.

Runtime guards injected beside the program (never into its text, so that a Python
`from __future__` import stays first and line numbers are unchanged):
- JavaScript, always: `console.assert` is patched to throw, because in Node a failed
  `console.assert` only prints (HumanEval-X tests rely on it), so the run would exit 0.
  Loaded with `node --require prelude.js`.
- Weak isolation only (no network namespace): Python runs `guard.py`, which replaces
  `socket.socket`, `socket.create_connection` and friends with stubs that raise and blocks
  starting other programs, then runs the program with `runpy`; Node's prelude makes
  `require` refuse the network and process modules and stubs `fetch`. Best effort: these
  guards live in the program's own process and determined code can get around them.
"""
from __future__ import annotations

from pathlib import Path

from codecl.execution.benchmark import Problem

PROGRAM_FILES = {"python": "program.py", "javascript": "program.js"}

JS_ASSERT_PRELUDE = """\
'use strict';
// HumanEval-X tests use console.assert, which only prints in Node: make it throw.
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

PYTHON_GUARD = """\
# codecl sandbox guard (weak isolation: no network namespace). Best effort.
import os, runpy, socket, subprocess, sys

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
_program = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(_program, run_name="__main__")
"""


def assemble_program(problem: Problem, completion: str) -> str:
    """The full program text that tests `completion` (see the module docstring)."""
    program = problem.prompt + completion + "\n" + problem.test + "\n"
    if problem.language == "python" and problem.entry_point:
        program += f"check({problem.entry_point})\n"
    return program


def program_files(problem: Problem, completion: str, network_cut: bool) -> dict[str, str]:
    """File name -> text of everything the sandbox folder needs to run this completion."""
    files = {PROGRAM_FILES[problem.language]: assemble_program(problem, completion)}
    if problem.language == "javascript":
        files["prelude.js"] = JS_ASSERT_PRELUDE + ("" if network_cut else JS_NETWORK_GUARD)
    elif not network_cut:
        files["guard.py"] = PYTHON_GUARD
    return files


def command_line(language: str, interpreter: str, folder: Path, network_cut: bool) -> list[str]:
    """argv that runs the program written by `program_files` in `folder`."""
    program = str(folder / PROGRAM_FILES[language])
    if language == "javascript":
        return [interpreter, "--require", str(folder / "prelude.js"), program]
    if network_cut:
        return [interpreter, "-I", "-B", program]
    return [interpreter, "-I", "-B", str(folder / "guard.py"), program]
