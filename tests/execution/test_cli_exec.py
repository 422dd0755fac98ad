"""`codecl evaluate-exec` through a real subprocess."""
import json
import subprocess
import sys

TOY = {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}


def files(tmp_path, completions):
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(json.dumps(TOY) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": c}) + "\n" for c in completions))
    return ["--benchmark", str(benchmark), "--samples", str(samples)]


def codecl(*args):
    return subprocess.run([sys.executable, "-m", "codecl", "evaluate-exec", *args], capture_output=True, text=True, timeout=120)


def test_prints_the_summary_as_its_last_line(tmp_path):
    proc = codecl(*files(tmp_path, ["    return a + b\n", "    return 0\n"]), "--k", "1,2", "--timeout-s", "5",
                  "--allow-code-execution")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["problems"] == 1 and summary["results"] == {"passed": 1, "failed": 1, "timed_out": 0}
    assert summary["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert {"network", "user", "filesystem"} <= set(summary["isolation"])


def test_without_the_flag_nothing_runs_and_it_exits_2(tmp_path):
    args = files(tmp_path, ["    return a + b\n"])
    check = ("import sys\nfrom codecl.cli import main\nsys.argv = ['codecl', 'evaluate-exec', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit as exc:\n"
             "    print('sandbox imported:', 'codecl.execution.sandbox' in sys.modules)\n    raise\n")
    proc = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sandbox imported: False" in proc.stdout
    assert "--allow-code-execution" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_sample_line_is_one_line_with_exit_3(tmp_path):
    args = files(tmp_path, ["    return a + b\n"])
    with open(args[-1], "a") as fh:
        fh.write('{"task_id": "HumanEval/7", "completion": ""}\n')
    proc = codecl(*args, "--allow-code-execution")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "samples.jsonl:2: unknown task_id 'HumanEval/7'" in lines[0]


def test_bad_samples_are_their_own_failures_and_the_summary_still_comes(tmp_path):
    completions = ["    return a + b\n",
                   "    import ctypes\n    ctypes.string_at(0)\n",  # crashes the interpreter
                   "    x = bytearray(1 << 40)\n",  # the memory limit
                   "    return 0\nraise SystemExit(0)\n",  # exit 0 before the checks
                   "    while True:\n        pass\n"]  # the time limit
    results = tmp_path / "results.jsonl"
    proc = codecl(*files(tmp_path, completions), "--timeout-s", "2", "--results", str(results), "--allow-code-execution")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["results"] == {"passed": 1, "failed": 3, "timed_out": 1}
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["passed", "failed", "failed", "failed", "timed_out"]
    assert rows[0]["reason"] == "" and "killed by signal 11" in rows[1]["reason"] and "MemoryError" in rows[2]["reason"]
    assert "solution process ended" in rows[3]["reason"]
