"""A pass means the checks passed (issue 15): early exits, exit handlers, always-equal results
and peeking at the tests fail, in Python and JavaScript, in every isolation mode."""
import pytest

from codecl.execution import Problem, run_problem_samples

pytestmark = pytest.mark.sandbox

# HumanEval style (the harness calls check(entry_point)) and HumanEval-X style (the test ends with check(name)).
HUMANEVAL = Problem("Toy/0", "python", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
HUMANEVAL_X = Problem("Python/0", "python", "def add(a, b):\n", "def check(add):\n    assert add(2, 3) == 5\n\ncheck(add)")
JS = Problem("JavaScript/0", "javascript", "const add = (a, b) => {\n",
             "const testAdd = () => {\n  console.assert(add(2, 3) === 5)\n  console.assert(\n    add(1, 1) === 2\n  )\n}\n"
             "testAdd()\n")

WRONG_PY = "    return a - b\n"
PYTHON_CHEATS = {
    "raise SystemExit(0)": "    raise SystemExit(0)\n",
    "sys.exit(0) at import": WRONG_PY + "import sys\nsys.exit(0)\n",
    "exit()": WRONG_PY + "exit()\n",
    "os._exit(0)": WRONG_PY + "import os\nos._exit(0)\n",
    "os._exit(0) in the function": "    import os\n    os._exit(0)\n",
    "__main__ guard": WRONG_PY + "def main():\n    return 0\nif __name__ == '__main__':\n    import sys\n    sys.exit(main())\n",
    "atexit": WRONG_PY + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook": WRONG_PY + "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "thread": WRONG_PY + "import threading, os, time\nthreading.Thread(target=lambda: (time.sleep(0.2), os._exit(0))).start()\n"
              "time.sleep(5)\n",
    "exit status 256": WRONG_PY + "import sys\nsys.exit(256)\n",
    "always-equal object": "    class AlwaysEqual:\n        def __eq__(self, other):\n            return True\n"
                           "    return AlwaysEqual()\n",
    "always-equal int subclass": "    class AlwaysEqual(int):\n        def __eq__(self, other):\n            return True\n"
                                 "    return AlwaysEqual(0)\n",
    "always-equal posing as int": "    class AlwaysEqual:\n        __class__ = property(lambda self: int)\n"
                                  "        def __eq__(self, other):\n            return True\n    return AlwaysEqual()\n",
}
WRONG_JS = "  return a - b\n}\n"
JS_CHEATS = {
    "process.exit(0)": WRONG_JS + "process.exit(0)\n",
    "process.exit(0) in the function": "  process.exit(0)\n}\n",
    "process.exit(256)": WRONG_JS + "process.exit(256)\n",
    "console.assert replaced": WRONG_JS + "console.assert = () => {}\n",
    "console.assert redefined": WRONG_JS + "Object.defineProperty(console, 'assert', {value: () => {}})\n",
    "console replaced": WRONG_JS + "globalThis.console = {assert() {}, log() {}}\n",
    "console shadowed": WRONG_JS + "const console = {assert() {}}\n",
    "console shadowed after true asserts": WRONG_JS + "for (let i = 0; i < 9; i++) globalThis.console.assert(true)\n"
                                           "const console = {assert() {}}\n",
    "exit handler": WRONG_JS + "process.on('exit', () => { process.exitCode = 0 })\n",
    "exit handler calling exit": WRONG_JS + "process.on('exit', () => process.exit(0))\n",
    "uncaughtException handler": WRONG_JS + "process.on('uncaughtException', () => {})\n",
    "exitCode": WRONG_JS + "process.exitCode = 0\n",
}


@pytest.mark.parametrize("problem", [HUMANEVAL, HUMANEVAL_X], ids=["humaneval", "humaneval-x"])
def test_python_cheats_fail_and_honest_code_passes(sandbox, problem):
    completions = ["    return a + b\n", WRONG_PY, *PYTHON_CHEATS.values()]
    results = run_problem_samples({problem.task_id: problem}, {problem.task_id: completions}, sandbox=sandbox, workers=2)
    statuses = [r.status for r in results[problem.task_id]]
    assert statuses[:2] == ["passed", "failed"]
    passed = [name for name, r in zip(PYTHON_CHEATS, results[problem.task_id][2:]) if r.status != "failed"]
    assert passed == [], [(r.status, r.reason) for r in results[problem.task_id][2:]]
    by_name = dict(zip(PYTHON_CHEATS, results[problem.task_id][2:]))
    assert "SolutionGone" in by_name["os._exit(0)"].reason
    assert "NotPlainData" in by_name["always-equal object"].reason


def test_javascript_cheats_fail_and_honest_code_passes(node, sandbox):
    completions = ["  return a + b\n}\n", WRONG_JS, *JS_CHEATS.values()]
    results = run_problem_samples({JS.task_id: JS}, {JS.task_id: completions}, sandbox=sandbox, workers=2)
    statuses = [r.status for r in results[JS.task_id]]
    assert statuses[:2] == ["passed", "failed"], [r.stderr_tail for r in results[JS.task_id][:2]]
    passed = [name for name, r in zip(JS_CHEATS, results[JS.task_id][2:]) if r.status != "failed"]
    assert passed == [], [(r.status, r.reason) for r in results[JS.task_id][2:]]
    by_name = dict(zip(JS_CHEATS, results[JS.task_id][2:]))
    assert "never passed" in by_name["console shadowed"].stderr_tail


def test_plain_data_results_cross_unchanged(strong_sandbox):
    problem = Problem("Toy/1", "python", "def f():\n",
                      "def check(candidate):\n"
                      "    r = candidate()\n"
                      "    assert r == ([1, 2.5, 'a', b'b', None, True, (3,), {4: {5}}, frozenset({6}), 1j], 7.0)\n"
                      "    assert type(r) is tuple and type(r[0][6]) is tuple and type(r[1]) is float\n", "f")
    completions = ["    return ([1, 2.5, 'a', b'b', None, True, (3,), {4: {5}}, frozenset({6}), 1j], 7.0)\n",
                   # a float subclass crosses as its plain value, so its own __eq__ is never asked
                   "    class F(float):\n        def __eq__(self, other):\n            return True\n"
                   "    return ([1, 2.5, 'a', b'b', None, True, (3,), {4: {5}}, frozenset({6}), 1j], F(7.0))\n",
                   "    class F(float):\n        def __eq__(self, other):\n            return True\n"
                   "    return ([1, 2.5, 'a', b'b', None, True, (3,), {4: {5}}, frozenset({6}), 1j], F(8.0))\n"]
    results = run_problem_samples({problem.task_id: problem}, {problem.task_id: completions}, sandbox=strong_sandbox)
    assert [r.status for r in results[problem.task_id]] == ["passed", "passed", "failed"]


def test_a_sample_that_cannot_start_is_that_samples_failure(monkeypatch, strong_sandbox):
    from codecl.execution import sandbox as sandbox_module

    real = sandbox_module.Sandbox.run
    calls = []

    def flaky(self, language, files, argv, channel=None):
        calls.append(1)
        if len(calls) == 2:
            raise sandbox_module.SandboxError("sandbox setup failed in the child: unshare(net) failed: errno 12")
        return real(self, language, files, argv, channel=channel)

    monkeypatch.setattr(sandbox_module.Sandbox, "run", flaky)
    results = run_problem_samples({HUMANEVAL.task_id: HUMANEVAL}, {HUMANEVAL.task_id: ["    return a + b\n"] * 3},
                                  sandbox=strong_sandbox, workers=1)
    statuses = [r.status for r in results[HUMANEVAL.task_id]]
    assert statuses.count("passed") == 2 and statuses.count("failed") == 1
    failed = next(r for r in results[HUMANEVAL.task_id] if r.status == "failed")
    assert failed.reason.startswith("could not run: sandbox setup failed") and failed.exit_code is None


def test_crashes_and_limits_are_that_samples_failure(strong_sandbox):
    completions = ["    import ctypes\n    ctypes.string_at(0)\n",  # the interpreter crashes (SIGSEGV)
                   "    x = bytearray(1 << 40)\n",  # the memory limit
                   "    while True:\n        pass\n",  # the time limit
                   "    return a + b\n"]
    results = run_problem_samples({HUMANEVAL.task_id: HUMANEVAL}, {HUMANEVAL.task_id: completions}, sandbox=strong_sandbox)
    r = results[HUMANEVAL.task_id]
    assert [x.status for x in r] == ["failed", "failed", "timed_out", "passed"]
    assert "killed by signal 11" in r[0].reason and "MemoryError" in r[1].reason and "time limit" in r[2].reason


def test_concurrent_samples_never_kill_each_other(strong_sandbox):
    """Regression: the parent killed 'the pid namespace named pid:[N]' after a sample ended, and
    the kernel reuses a dead namespace's number at once, so it could SIGKILL another sample."""
    results = run_problem_samples({HUMANEVAL.task_id: HUMANEVAL}, {HUMANEVAL.task_id: ["    return a + b\n"] * 160},
                                  sandbox=strong_sandbox, workers=8)
    failed = [(r.status, r.reason) for r in results[HUMANEVAL.task_id] if not r.passed]
    assert failed == []


def test_node_assert_module_cannot_be_disarmed(node, strong_sandbox):
    mbxp = Problem("MBJSP/1", "javascript", "function add(a, b) {\n",
                   "const assert = require('node:assert');\nfunction test() {\n  let candidate = add;\n"
                   "  assert.deepEqual(candidate(2, 3), 5);\n}\ntest();\n")
    completions = ["  return a + b\n}\n", "  return a - b\n}\n",
                   "  return a - b\n}\nrequire('assert').deepEqual = () => {}\n",
                   "  return a - b\n}\nrequire('assert').strict.deepEqual = () => {}; require('assert').deepEqual = () => {}\n"]
    results = run_problem_samples({mbxp.task_id: mbxp}, {mbxp.task_id: completions}, sandbox=strong_sandbox)
    assert [r.status for r in results[mbxp.task_id]] == ["passed", "failed", "failed", "failed"]


PEEKS = {
    "read the tests from the folder": "    import glob, os\n    here = os.path.dirname(os.getcwd())\n"
        "    text = ''.join(open(f).read() for f in glob.glob(here + '/*') if os.path.isfile(f))\n"
        "    return 5 if 'candidate(2, 3) == 5' in text else 0\n",
    "walk up the stack": "    import sys\n    frame = sys._getframe()\n    while frame:\n"  # to check()'s constants
        "        if frame.f_code.co_name == 'check':\n            return frame.f_code.co_consts[-1]\n"
        "        frame = frame.f_back\n    return 0\n",
    "read the harness's memory": "    import os\n    try:\n        data = open(f'/proc/{os.getppid()}/environ', 'rb').read()"
        " + open(f'/proc/{os.getppid()}/cmdline', 'rb').read()\n    except OSError:\n        data = b''\n"
        "    return 5 if b'CODECL_HARNESS' in data else 0\n",
}


def test_python_solution_cannot_see_the_checks(sandbox):
    """The function under test runs in a process of its own that was sent only prompt + completion."""
    honest_if_peeking_works = list(PEEKS.values())
    results = run_problem_samples({HUMANEVAL.task_id: HUMANEVAL}, {HUMANEVAL.task_id: honest_if_peeking_works},
                                  sandbox=sandbox)
    assert [(r.status, r.reason) for r in results[HUMANEVAL.task_id]] == [("failed", "exit status 1: AssertionError")] * 3


def test_python_exceptions_cross_as_their_builtin_type(strong_sandbox):
    problem = Problem("Toy/2", "python", "def f(x):\n",
                      "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as exc:\n"
                      "        assert 'negative' in str(exc)\n    else:\n        assert False\n"
                      "    assert candidate(x=2) == 2\n", "f")
    completions = ["    if x < 0:\n        raise ValueError('negative')\n    return x\n",
                   "    if x < 0:\n        raise KeyError('negative')\n    return x\n"]
    results = run_problem_samples({problem.task_id: problem}, {problem.task_id: completions}, sandbox=strong_sandbox)
    assert [r.status for r in results[problem.task_id]] == ["passed", "failed"]
