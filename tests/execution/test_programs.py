import json
from pathlib import Path

from codecl.execution.benchmark import Problem
from codecl.execution.programs import assemble_program, channel_payload, command_line, program_files

HUMANEVAL = Problem("HumanEval/0", "python", "def f(x):\n", "def check(candidate):\n    assert candidate(1) == 2\n", "f")
HUMANEVAL_X = Problem("Python/0", "python", "def f(x):\n", "def check(f):\n    assert f(1) == 2\ncheck(f)")
JS = Problem("JavaScript/0", "javascript", "const f = (x) => {\n", "console.assert(f(1) === 2)")


def test_python_humaneval_appends_the_check_call():
    program = assemble_program(HUMANEVAL, "    return x + 1\n")
    assert program == "def f(x):\n    return x + 1\n\ndef check(candidate):\n    assert candidate(1) == 2\n\ncheck(f)\n"


def test_humaneval_x_python_and_javascript_tests_call_themselves():
    assert assemble_program(HUMANEVAL_X, "    return x + 1\n").endswith("check(f)\n")
    assert assemble_program(HUMANEVAL_X, "    return x + 1\n").count("\ncheck(f)") == 1
    assert assemble_program(JS, "  return x + 1\n}\n") == "const f = (x) => {\n  return x + 1\n}\n\nconsole.assert(f(1) === 2)\n"


def test_harness_files_channel_and_command_lines():
    js = program_files(JS, "  return x + 1\n}\n", network_cut=True)
    assert set(js) == {"harness.js", "solution.js", "checks.js"}
    assert "codeclAssert" in js["harness.js"] and "const blocked" not in js["harness.js"]
    assert "const blocked" in program_files(JS, "", network_cut=False)["harness.js"]
    assert js["solution.js"] + "\n" + js["checks.js"] + "\n" == assemble_program(JS, "  return x + 1\n}\n")
    assert channel_payload(JS, "", "tok") == b"tok"
    py = program_files(HUMANEVAL, "    return x + 1\n", network_cut=True)
    assert set(py) == {"harness.py"} and "_NoSocket" not in py["harness.py"]  # the tests are not on disk
    assert "candidate(1) == 2" not in py["harness.py"] and "return x + 1" not in py["harness.py"]
    assert "_NoSocket" in program_files(HUMANEVAL, "", network_cut=False)["harness.py"]
    job = json.loads(channel_payload(HUMANEVAL, "    return x + 1\n", "tok"))
    assert job == {"token": "tok", "prompt": "def f(x):\n", "solution": "def f(x):\n    return x + 1\n\n",
                   "checks": HUMANEVAL.test + "\n", "entry": "f"}
    job = json.loads(channel_payload(HUMANEVAL_X, "    return x + 1\n", "tok"))
    assert job["entry"] == "f" and "\ncheck(f)" not in job["checks"]  # the harness makes the call, through the proxy
    folder = Path("/sandbox")
    assert command_line("python", "py", folder, True) == ["py", "-I", "-B", "/sandbox/harness.py"]
    assert command_line("javascript", "node", folder, True) == ["node", "/sandbox/harness.js"]
