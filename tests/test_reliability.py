"""Fault injection: kills, torn and corrupted files, malicious pickles, NaN losses, bad folders."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from codecl.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from codecl.config import LoraConfig, MethodConfig, TrainConfig
from codecl.data.batching import EncodedPairs
from codecl.errors import CheckpointError, DivergenceError
from codecl.fileio import write_manifest
from codecl.methods.continual import ContinualModel
from codecl.train import train_task
from helpers import codecl_env, make_base, tiny_config

SMALL = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.1))


def _env(cache):
    return codecl_env(cache)


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    src = [torch.randint(3, 90, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() + [1] for _ in range(n)]
    tgt = [torch.randint(3, 90, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist() + [1] for _ in range(n)]
    return EncodedPairs(src, tgt, 0, 0)


def _model():
    base, info = make_base(tiny_config())
    cm = ContinualModel(base, "hybrid", SMALL, info)
    torch.manual_seed(7)
    cm.add_task("python")
    cm.activate("python")
    return cm


def _snapshot(cm):
    return {n: p.detach().clone() for n, p in cm.task_parameters("python")}


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, checkpoint_every_steps=5, lr=0.01)
    torch.manual_seed(1)
    reference = _model()
    train_task(reference, _data(), cfg, 0, torch.device("cpu"), seed=3, progress=False)

    class Interrupt(Exception):
        pass

    def stop_at_checkpoint(event):
        if event["event"] == "checkpoint" and event["step"] == 5:
            raise Interrupt  # the process "dies" right after its first checkpoint

    torch.manual_seed(1)
    first = _model()
    with pytest.raises(Interrupt):
        train_task(first, _data(), cfg, 0, torch.device("cpu"), seed=3, progress=False, log=stop_at_checkpoint,
                   checkpoint_dir=tmp_path / "ckpt")
    torch.manual_seed(99)  # a fresh process: different RNG state, fresh modules
    resumed = _model()
    events = []
    train_task(resumed, _data(), cfg, 0, torch.device("cpu"), seed=3, progress=False, log=events.append, checkpoint_dir=tmp_path / "ckpt")
    assert events[0]["event"] == "resume_stage" and events[0]["step"] == 5
    for name, value in _snapshot(reference).items():
        assert torch.equal(value, _snapshot(resumed)[name]), name


def test_interrupted_checkpoint_swap_falls_back_to_previous(tmp_path):
    cm = _model()
    opt = torch.optim.AdamW([p for _, p in cm.task_parameters("python")])
    named = cm.task_parameters("python")
    save_checkpoint(tmp_path / "ckpt", named, opt, {"step": 5})
    os.replace(tmp_path / "ckpt", tmp_path / "ckpt.old")  # killed between the two renames of the swap
    (tmp_path / "ckpt.tmp").mkdir()  # and a half-written staging folder
    (tmp_path / "ckpt.tmp" / "trainable.safetensors").write_bytes(b"\0" * 10)
    found = find_checkpoint(tmp_path / "ckpt")
    assert found == tmp_path / "ckpt.old"
    assert load_checkpoint(found, named, opt)["step"] == 5


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_corrupted_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    cm = _model()
    named = cm.task_parameters("python")
    opt = torch.optim.AdamW([p for _, p in named])
    save_checkpoint(tmp_path / "ckpt", named, opt, {"step": 5})
    target = tmp_path / "ckpt" / "trainable.safetensors"
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-3] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="trainable.safetensors: sha256 differs"):
        load_checkpoint(tmp_path / "ckpt", named, opt)


def test_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    base, info = make_base(tiny_config())
    cm = ContinualModel(base, "full_layer", SMALL, info)
    cm.add_task("python")
    cm.save_task("python", tmp_path / "python")
    (tmp_path / "python" / "block.safetensors").write_bytes(pickle.dumps(Evil()))
    write_manifest(tmp_path / "python")  # even with a manifest that vouches for it
    with pytest.raises(CheckpointError, match="block.safetensors: not a readable safetensors file"):
        ContinualModel(make_base(tiny_config())[0], "full_layer", SMALL, info).load_task("python", tmp_path / "python")
    assert not marker.exists()


def test_nonfinite_losses_are_skipped_then_stop_the_run():
    cm = _model()
    calls = {"n": 0}
    real_forward = cm.forward

    def flaky_forward(**batch):
        calls["n"] += 1
        out = real_forward(**batch)
        return SimpleNamespace(loss=out.loss * float("nan")) if calls["n"] in (2, 3) else out

    cm.forward = flaky_forward
    events = []
    cost = train_task(cm, _data(), TrainConfig(epochs=1, batch_size=4), 0, torch.device("cpu"), seed=0, progress=False, log=events.append)
    assert cost.skipped_nonfinite_steps == 2 and cost.steps == 6
    assert all(torch.isfinite(p).all() for _, p in cm.task_parameters("python"))

    cm.forward = lambda **batch: SimpleNamespace(loss=real_forward(**batch).loss * float("inf"))
    with pytest.raises(DivergenceError, match="3 non-finite losses in a row"):
        train_task(cm, _data(), TrainConfig(epochs=1, batch_size=4, max_consecutive_nonfinite=3), 0, torch.device("cpu"), seed=0, progress=False)


def test_unwritable_output_folder_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "codecl", "run", "--preset", "smoke", "--output-dir", str(blocker / "run")],
                          capture_output=True, text=True, env=_env(tmp_path / "cache"), timeout=300)
    assert proc.returncode != 0 and str(blocker / "run") in proc.stderr and "Traceback" not in proc.stderr


def test_corrupted_results_json_is_refused_with_exit_4(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"schema_version": 1, "runs": [')
    proc = subprocess.run([sys.executable, "-m", "codecl", "run", "--preset", "smoke", "--output-dir", str(out), "--resume"],
                          capture_output=True, text=True, env=_env(tmp_path / "cache"), timeout=300)
    assert proc.returncode == 4 and "results.json" in proc.stderr


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_equals_uninterrupted(tmp_path):
    cache = tmp_path / "cache"
    args = ["run", "--preset", "smoke", "--methods", "hybrid", "--quiet", "--set", "data.max_train_examples=160",
            "--set", "train.epochs=2", "--set", "train.checkpoint_every_steps=4"]
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "codecl", *args, "--output-dir", str(whole)], check=True, env=_env(cache), timeout=900,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "codecl", *args, "--output-dir", str(killed)], env=_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = killed / "events.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and any('"checkpoint"' in line and '"javascript"' in line for line in events.read_text().splitlines()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-stage"
    subprocess.run([sys.executable, "-m", "codecl", *args, "--output-dir", str(killed), "--resume"], check=True, env=_env(cache),
                   timeout=900, capture_output=True)
    log = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(e["event"] == "resume_stage" and e["step"] > 0 for e in log)
    a, b = (json.loads((d / "results.json").read_text())["runs"][0] for d in (whole, killed))
    assert a["scores"] == b["scores"]
    assert [p["loss"] for p in a["loss_curve"]["javascript"]] == [p["loss"] for p in b["loss_curve"]["javascript"]]


def test_disk_full_names_the_file_and_keeps_the_old_version(tmp_path):
    import errno

    from codecl.errors import CodeclError
    from codecl.fileio import atomic_write, write_json

    target = tmp_path / "results.json"
    write_json(target, {"old": True})

    def full(tmp):
        with open(tmp, "w") as fh:
            fh.write("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CodeclError, match=r"cannot write .*results.json: No space left on device"):
        atomic_write(target, full)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind
