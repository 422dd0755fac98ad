"""Between samples (issue 15, "Done when"): a process-limit hog cannot fail a concurrent sample
or the run; another sample's folder is unreadable; `--workers 48` on 48 JavaScript samples
completes; a sample that cannot start is its own failure and the last-line JSON still comes.
Per-sample uids need root (CI is); elsewhere these tests skip with the sandbox's own reason."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from codecl.execution import Problem, Sandbox, SandboxConfig, run_problem_samples

pytestmark = pytest.mark.sandbox

TOY = {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
JS_TOYS = [{"task_id": f"JavaScript/{i}", "prompt": f"const add{i} = (a, b) => {{\n",
            "test": f"const testAdd = () => {{\n  console.assert(add{i}(2, 3) === 5)\n  console.assert(add{i}(-1, 1) === 0)\n}}\n"
                    "testAdd()\n"} for i in range(4)]

# Forks until the process limit refuses, holds every child, and sleeps past the timeout.
HOG = """    import os, time
    try:
        while True:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
    except OSError:
        pass
    time.sleep(60)
"""
# Starts once the hog has had time to reach its limit, then needs threads and processes of its own.
ORDINARY = """    import os, threading, time
    time.sleep(1.5)
    threads = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(4)]
    for t in threads:
        t.start()
    pids = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.2)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    for t in threads:
        t.join()
    return a + b
"""


def per_sample_uids(sandbox: Sandbox) -> None:
    between = sandbox.isolation()["between_samples"]
    if between.startswith("weak"):
        pytest.skip(f"no per-sample uid on this machine: {between}")


def evaluate_exec(tmp_path, records, rows, *args, timeout=120):
    benchmark, samples = tmp_path / "bench.jsonl", tmp_path / "samples.jsonl"
    benchmark.write_text("".join(json.dumps(r) + "\n" for r in records))
    samples.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows))
    results = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, "-m", "codecl", "evaluate-exec", "--benchmark", str(benchmark),
                           "--samples", str(samples), "--results", str(results), "--allow-code-execution", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary, [json.loads(line) for line in results.read_text().splitlines()]


def test_a_process_limit_hog_fails_no_concurrent_sample(tmp_path, strong_sandbox):
    per_sample_uids(strong_sandbox)
    rows = [("HumanEval/0", HOG)] + [("HumanEval/0", ORDINARY)] * 6
    summary, results = evaluate_exec(tmp_path, [TOY], rows, "--workers", "4", "--timeout-s", "6")
    assert results[0]["status"] == "timed_out"
    assert [r["status"] for r in results[1:]] == ["passed"] * 6, results
    assert summary["results"] == {"passed": 6, "failed": 0, "timed_out": 1}


@pytest.mark.parametrize("mode", ["default", "no-namespaces", "bare"])
def test_a_sample_cannot_read_a_concurrent_samples_folder(mode, request):
    sandbox = request.getfixturevalue({"default": "strong_sandbox", "no-namespaces": "weak_sandbox",
                                       "bare": "bare_sandbox"}[mode])
    per_sample_uids(sandbox)
    owner_out = {}
    victim = threading.Thread(target=lambda: owner_out.update(result=sandbox.run(
        "python", {"program.py": "import time\nopen('secret.txt', 'w').write('SECRET-' + 'VALUE')\n"
                                 "open('../program.py').read()\ntime.sleep(3)\n"},
        lambda python, folder: [python, "-I", "-B", str(folder / "program.py")])))
    victim.start()
    time.sleep(0.8)
    try:
        thief = sandbox.run("python", {"program.py": r"""
import glob, os, tempfile
mine = os.path.dirname(os.getcwd())
seen, read = set(), []
parents = {os.path.dirname(mine), tempfile.gettempdir(), '/tmp', '/var/tmp', '/dev/shm'}
for parent in parents:
    try:
        seen.update(os.path.join(parent, n) for n in os.listdir(parent) if n.startswith('codecl-sandbox-'))
    except OSError:
        pass
seen.discard(mine)
paths = [p + s for p in sorted(seen) for s in ('/home/secret.txt', '/program.py', '/home')]
paths += glob.glob('/proc/[0-9]*/cwd/secret.txt') + glob.glob('/proc/[0-9]*/root' + mine.rsplit('/', 1)[0] + '/*/home/secret.txt')
for path in paths:
    try:
        text = os.listdir(path) if os.path.isdir(path) else open(path).read()
        print('READ', path, text)
    except OSError as exc:
        print('DENIED', path, type(exc).__name__)
print('OTHERS', len(seen))
"""}, lambda python, folder: [python, "-I", "-B", str(folder / "program.py")])
    finally:
        victim.join()
    assert owner_out["result"].exit_code == 0, owner_out["result"].stderr
    assert thief.exit_code == 0, thief.stderr
    assert "READ" not in thief.stdout and "SECRET-VALUE" not in thief.stdout, thief.stdout
    others = int(thief.stdout.split("OTHERS")[-1])
    if "mnt" not in sandbox._ensure_setup().required:  # the other folder is in sight: its uid keeps it closed
        assert others >= 1 and "DENIED" in thief.stdout, thief.stdout


def test_48_javascript_samples_with_48_workers_complete(tmp_path, node, strong_sandbox):
    rows = [(f"JavaScript/{i % 4}", "  return a + b\n}\n") for i in range(47)] + [("JavaScript/0", "  return 0\n}\n")]
    start = time.monotonic()
    summary, results = evaluate_exec(tmp_path, JS_TOYS, rows, "--workers", "48", "--timeout-s", "60", timeout=180)
    assert summary["results"] == {"passed": 47, "failed": 1, "timed_out": 0}, [r for r in results if r["status"] != "passed"]
    failed = [r for r in results if r["status"] == "failed"]
    assert [(r["task_id"], r["sample_index"]) for r in failed] == [("JavaScript/0", 12)]
    assert "could not run" not in failed[0]["reason"]
    assert time.monotonic() - start < 120


def test_a_sample_that_cannot_start_is_its_own_failure_and_the_summary_comes(tmp_path):
    too_big = "    return a + b\n" + "#" * (1 << 20) + "\n"  # more than a harness channel carries
    summary, results = evaluate_exec(tmp_path, [TOY], [("HumanEval/0", "    return a + b\n"), ("HumanEval/0", too_big),
                                                       ("HumanEval/0", "    return a + b\n")], "--workers", "2")
    assert summary["results"] == {"passed": 2, "failed": 1, "timed_out": 0}
    assert [r["status"] for r in results] == ["passed", "failed", "passed"]
    assert results[1]["reason"].startswith("could not run: ") and results[1]["exit_code"] is None


def test_no_free_uid_is_that_samples_failure(strong_sandbox):
    per_sample_uids(strong_sandbox)
    first = strong_sandbox.config.uid_pool[0] + 4000  # one uid, held by the first sample while the second wants it
    sandbox = Sandbox(SandboxConfig(timeout_s=5.0, uid_pool=(first, 1)))
    problem = Problem(task_id="HumanEval/0", language="python", prompt=TOY["prompt"], test=TOY["test"], entry_point="add")
    slow = "    import time\n    time.sleep(1.5)\n    return a + b\n"
    results = run_problem_samples({"HumanEval/0": problem}, {"HumanEval/0": [slow, slow]}, sandbox=sandbox, workers=2)
    statuses = sorted(r.status for r in results["HumanEval/0"])
    assert statuses == ["failed", "passed"]
    failed = next(r for r in results["HumanEval/0"] if r.status == "failed")
    assert failed.reason.startswith("could not run: no free sandbox uid")
    again = run_problem_samples({"HumanEval/0": problem}, {"HumanEval/0": [slow]}, sandbox=sandbox, workers=1)
    assert again["HumanEval/0"][0].passed  # the uid was handed back
