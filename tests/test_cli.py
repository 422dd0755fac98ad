"""The CLI contract (SPEC): params JSON, offline failures in one line, exit codes."""
import json
import os
import subprocess
import sys

from codecl.data.batching import encode_pairs


def codecl(*args, env_extra=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "codecl", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_params_prints_accounting_of_every_method(tmp_path):
    proc = codecl("params", "--preset", "smoke", env_extra={"CODECL_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    methods = report["methods"]
    assert set(methods) == {"lora", "full_layer", "hybrid", "hybrid_shared"}
    lora, block = methods["lora"]["trainable_per_task"], methods["full_layer"]["trainable_per_task"]
    assert methods["hybrid"]["trainable_per_task"] == lora + block
    assert methods["hybrid"]["stored_after"] == {"1": lora + block, "2": 2 * (lora + block)}
    assert methods["hybrid_shared"]["stored_after"]["2"] == 2 * lora + block
    assert report["base"] > 0 and not (tmp_path / "models").exists()  # nothing trained, nothing built


def test_seed_paper_offline_stops_at_once_naming_what_it_could_not_fetch(tmp_path):
    proc = codecl("run", "--preset", "seed-paper", "--output-dir", str(tmp_path / "run"), env_extra={"CODECL_CACHE": str(tmp_path)},
                  timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Salesforce/codet5-small" in lines[0] and "embedded" in lines[0] and "Traceback" not in proc.stderr


def test_bad_override_is_exit_2_naming_the_key():
    proc = codecl("run", "--set", "train.lr=2", "--set", "data.nope=1")
    assert proc.returncode == 2
    assert "train.lr must be in (0, 1)" in proc.stderr or "data.nope is not a known key" in proc.stderr


def test_truncation_is_counted_not_silent():
    class Tok:
        eos_token_id = 1

        def __call__(self, texts):
            return {"input_ids": [[5] * len(t.split()) + [1] for t in texts]}

    enc = encode_pairs(Tok(), ["a b c d e f g h i j", "a b"], ["x " * 20, "y"], max_source_tokens=8, max_target_tokens=8)
    assert (enc.truncated_sources, enc.truncated_targets) == (1, 1)
    assert len(enc.source_ids[0]) == 8 and enc.source_ids[0][-1] == 1 and enc.target_ids[1] == [5, 1]
    assert enc.target_ids[0] == [5] * 8  # a cut code gets no </s> (tests/data/test_batching.py)
