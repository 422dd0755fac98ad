"""Data-parallel runs (codecl.distributed): the batch-splitting math, two real gloo processes, and
`codecl run` launched by `accelerate launch` on two CPU processes against a single-process run."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from codecl import distributed
from codecl.config import LoraConfig, MethodConfig, TrainConfig
from codecl.data.batching import EncodedPairs, pad_batch
from codecl.distributed import Distributed, slice_bounds
from codecl.methods.continual import ContinualModel
from codecl.train import train_task
from helpers import codecl_env, make_base, tiny_config

NO_DROPOUT = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0))  # tiny_config has dropout_rate 0 too: exact math


def _data(n: int) -> EncodedPairs:
    g = torch.Generator().manual_seed(0)
    src = [torch.randint(3, 90, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() + [1] for _ in range(n)]
    tgt = [torch.randint(3, 90, (int(torch.randint(2, 12, (1,), generator=g)),), generator=g).tolist() + [1] for _ in range(n)]
    return EncodedPairs(src, tgt, 0, 0)


def _model() -> ContinualModel:
    base, info = make_base(tiny_config())
    cm = ContinualModel(base, "hybrid", NO_DROPOUT, info)  # a PEFT adapter and a hook-inserted block
    torch.manual_seed(7)
    cm.add_task("python")
    cm.activate("python")
    return cm


def _grads(cm, data, ids, weight=1.0):
    batch = pad_batch([data.source_ids[i] for i in ids], [data.target_ids[i] for i in ids], 0)
    (cm(**batch).loss * weight).backward()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slice_bounds_cover_the_batch_contiguously():
    assert slice_bounds(8, 2) == [(0, 4), (4, 8)]
    assert slice_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert slice_bounds(1, 2) == [(0, 1), (1, 1)]


def test_single_process_is_a_pass_through():
    distributed.reset()
    dist = distributed.setup(torch.device("cpu"), "no")
    assert (dist.rank, dist.world_size, dist.is_main, dist.is_distributed) == (0, 1, True, False)
    assert dist.split_batch([5, 3, 9], [4, 4, 4]) == ([5, 3, 9], 1.0)
    assert dist.shard([[1], [2], [3]]) == [[1], [2], [3]] and dist.gather([(0, "a")]) == [(0, "a")]
    assert not torch.distributed.is_initialized()  # no process group, no collective cost


@pytest.mark.parametrize("world_size", [2, 3])
def test_token_weighted_slices_give_the_single_process_gradient(world_size):
    data, ids = _data(7), list(range(7))  # 7 examples over 2 or 3 ranks: unequal slices, unequal token counts
    tokens = [len(data.target_ids[i]) for i in ids]
    full = _model()
    _grads(full, data, ids)
    reference = {n: p.grad.clone() for n, p in full.task_parameters("python")}

    split, naive = _model(), _model()
    for rank in range(world_size):
        mine, weight = Distributed(rank=rank, world_size=world_size).split_batch(ids, tokens)
        _grads(split, data, mine, weight)  # what each rank backpropagates; the all-reduce sums them
        _grads(naive, data, mine, 1 / world_size)  # DDP-style equal averaging, for contrast
    assert sum(Distributed(rank=r, world_size=world_size).split_batch(ids, tokens)[1] for r in range(world_size)) == pytest.approx(1.0)
    for name, p in split.task_parameters("python"):
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-5, atol=1e-7, msg=name)
    naive_gap = max((p.grad - reference[n]).abs().max().item() for n, p in naive.task_parameters("python"))
    assert naive_gap > 1e-5  # equal weights would not be the single-process gradient


def test_a_rank_without_examples_joins_at_weight_zero():
    mine, weight = Distributed(rank=1, world_size=2).split_batch([4], [3])
    assert mine == [4] and weight == 0.0


def test_bf16_autocast_through_accelerate_keeps_trainable_weights_float32():
    from accelerate.state import AcceleratorState

    distributed.reset()
    AcceleratorState._reset_state(True)  # an earlier in-process Trainer or run may have set it (process-wide)
    try:
        dist = distributed.setup(torch.device("cpu"), "bf16")  # CPU here; on GPUs the same Accelerate autocast
        assert not dist.is_distributed and dist.mixed_precision == "bf16"
        cm = _model()
        with dist.autocast():
            assert torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        cost = train_task(cm, _data(16), TrainConfig(epochs=1, batch_size=8), 0, torch.device("cpu"), seed=0, progress=False)
        assert cost.steps == 2 and cost.skipped_nonfinite_steps == 0
        assert all(p.dtype == torch.float32 for _, p in cm.task_parameters("python"))
    finally:
        distributed.reset()
        AcceleratorState._reset_state(True)


def _gloo_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist = distributed.setup(torch.device("cpu"), "no")
    assert dist.is_distributed and dist.rank == rank
    cm = _model()
    if rank == 1:  # a rank that starts out of step is brought in line by the stage-start broadcast
        with torch.no_grad():
            next(p for _, p in cm.task_parameters("python")).add_(1.0)
    cost = train_task(cm, _data(17), TrainConfig(epochs=2, batch_size=8, lr=0.01), 0, torch.device("cpu"), seed=3, progress=False)
    from safetensors.torch import save_file

    save_file({n: p.detach().contiguous() for n, p in cm.task_parameters("python")}, f"{out}/rank{rank}.safetensors")
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"losses": [p["loss"] for p in cost.loss_curve], "steps": cost.steps, "shards": dist.shard(list(range(5))),
                   "gathered": dist.gather([rank * 10, rank * 10 + 1])}, fh)
    dist.close()


def test_two_gloo_processes_train_like_one_process(tmp_path):
    from safetensors.torch import load_file

    torch.multiprocessing.spawn(_gloo_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    distributed.reset()
    single = _model()
    cost = train_task(single, _data(17), TrainConfig(epochs=2, batch_size=8, lr=0.01), 0, torch.device("cpu"), seed=3, progress=False)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for name, p in single.task_parameters("python"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # every rank holds the same modules
        torch.testing.assert_close(ranks[0][name], p.detach(), rtol=1e-4, atol=1e-5, msg=name)  # 6 steps, a last batch of 1
    assert logs[0]["steps"] == cost.steps == 6  # same global batch: same number of optimizer steps
    assert logs[0]["losses"] == pytest.approx([p["loss"] for p in cost.loss_curve], rel=1e-5)
    assert logs[0]["shards"] == [0, 2, 4] and logs[1]["shards"] == [1, 3]
    assert logs[0]["gathered"] == logs[1]["gathered"] == [0, 1, 10, 11]


# ------------------------------------------------------------------ `codecl run` under accelerate launch

# lr 0.01 and 3 epochs: training moves the held-out loss far more than dropout noise does, so the
# comparison below can fail (the smoke preset's own 3 steps at 5e-4 move it ~0.2%).
SMOKE = ["-m", "codecl", "run", "--preset", "smoke", "--quiet", "--set", "train.lr=0.01", "--set", "train.epochs=3"]


def _launch(launcher_args, out, cache, *extra):
    env = {**codecl_env(cache), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launcher_args, *SMOKE, "--output-dir", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_matches_one(tmp_path):
    cache = tmp_path / "cache"
    # The command. accelerate 1.15 starts ONE process for `--cpu` without an mpirun hostfile
    # (huggingface/accelerate#2741): it is the single-process reference here, and codecl says so.
    one = _launch(["--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"], tmp_path / "one", cache)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "started a single process" in one.stderr
    # Two CPU processes, gloo, through accelerate's torchrun launcher; the cache is already built.
    two = _launch(["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                   "--main_process_port", str(_free_port())], tmp_path / "two", cache)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run folder:") == 1  # one process prints the summary

    events = [json.loads(line) for line in (tmp_path / "two" / "events.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in events if e["event"] == "distributed"] == [2]
    # 4 methods x 2 tasks, each logged by one writer (hybrid_shared's first stage is taken from hybrid's)
    stages = [(e["method"], e["task"]) for e in events if e["event"] in ("stage", "stage_reused")]
    assert len(stages) == len(set(stages)) == 8
    assert [(e["method"], e["task"]) for e in events if e["event"] == "stage_reused"] == [("hybrid_shared", "python")]
    assert [e["event"] for e in events].count("done") == 1
    assert not [p for p in (tmp_path / "two").rglob("*") if p.name.endswith(".tmp") or ".checkpoint" in p.name]

    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert [r["method"] for r in a["runs"]] == [r["method"] for r in b["runs"]]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert rb["stages"] == ra["stages"]
        for metric, rows in ra["scores"].items():
            # Stage 0 is exact: evaluation hands whole batches to ranks, so every example is decoded in its single-process batch.
            assert rb["scores"][metric][0] == rows[0], (ra["method"], metric)
        # After training: each rank draws its own dropout masks, so two processes are another draw of the
        # same training, not the same floats, and greedy decoding of the smoke model can flip a token — the
        # discrete scores of a few examples then say nothing. The teacher-forced loss is continuous: within
        # 1% of the single process, while training moved it by several times that from stage 0.
        for row_a, row_b in zip(ra["scores"]["loss"][1:], rb["scores"]["loss"][1:]):
            assert row_b == pytest.approx(row_a, rel=0.01), ra["method"]
        moved = [abs(a - b) / b for a, b in zip(ra["scores"]["loss"][-1], ra["scores"]["loss"][0])]
        assert max(moved) > 0.03, (ra["method"], moved)
        for task, curve in ra["loss_curve"].items():
            # Same global batch and token-weighted mean: the loss differs only by dropout noise (measured < 0.4%).
            assert [p["loss"] for p in rb["loss_curve"][task]] == pytest.approx([p["loss"] for p in curve], rel=0.02)

    # Resume under two processes: hybrid_shared interrupted after python; every rank reads the same results and modules.
    import shutil

    from helpers import interrupt_run

    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "two", partial)
    hs = b["runs"][3]
    cut = interrupt_run(hs, 2)
    (partial / "results.json").write_text(json.dumps({**b, "runs": b["runs"][:3] + [cut]}))
    shutil.rmtree(partial / "hybrid_shared" / "seed-42" / "javascript")
    resumed = _launch(["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                       "--main_process_port", str(_free_port())], partial, cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = json.loads((partial / "results.json").read_text())
    assert [r["scores"] for r in c["runs"]] == [r["scores"] for r in b["runs"]]  # same processes, same draws: exact
    log = [json.loads(line) for line in (partial / "events.jsonl").read_text().splitlines()]
    trained = [(e["method"], e["task"]) for e in events if e["event"] == "stage"]
    assert [(e["method"], e["task"]) for e in log if e["event"] == "stage"] == trained + [("hybrid_shared", "javascript")]
