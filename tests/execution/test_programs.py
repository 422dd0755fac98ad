from pathlib import Path

from codecl.execution.benchmark import Problem
from codecl.execution.programs import assemble_program, command_line, program_files

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


def test_guards_and_command_lines():
    js = program_files(JS, "", network_cut=True)
    assert "console.assert = (c, ...m)" in js["prelude.js"] and "require('module')" not in js["prelude.js"]
    assert "require('module')" in program_files(JS, "", network_cut=False)["prelude.js"]
    assert set(program_files(HUMANEVAL, "", network_cut=True)) == {"program.py"}
    assert set(program_files(HUMANEVAL, "", network_cut=False)) == {"program.py", "guard.py"}
    folder = Path("/sandbox")
    assert command_line("python", "py", folder, True) == ["py", "-I", "-B", "/sandbox/program.py"]
    assert command_line("python", "py", folder, False) == ["py", "-I", "-B", "/sandbox/guard.py", "/sandbox/program.py"]
    assert command_line("javascript", "node", folder, True) == ["node", "--require", "/sandbox/prelude.js", "/sandbox/program.js"]
