"""The baselines' defining behaviours: sequential_ft, joint, replay, ewc, olora (tiny models, CPU)."""
import inspect

import pytest
import torch

from codecl.config import EwcConfig, JointConfig, LoraConfig, MethodConfig, OLoraConfig, ReplayConfig, TrainConfig
from codecl.data.batching import EncodedPairs
from codecl.errors import CheckpointError, ConfigError
from codecl.methods.build import MODEL_KINDS, build_model
from codecl.methods.ewc import EwcPenalty, fisher_diagonal
from codecl.methods.mixing import Stage, replay_buffer
from codecl.methods.lwf import LwfModel
from codecl.methods.merging import MergeModel
from codecl.methods.olora import OLoraModel, orthogonality_penalty
from codecl.methods.shared import SharedModel
from codecl.train import train_task
from helpers import make_base, tiny_config

SMALL = MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0))
TRAIN = TrainConfig(lr=1e-2, batch_size=4, epochs=1, checkpoint_every_steps=0)


def pairs(n: int, marker: int, seed: int = 0) -> EncodedPairs:
    """`n` random examples whose first source token is `marker` (which task they come from)."""
    g = torch.Generator().manual_seed(seed)
    src = [[marker] + torch.randint(3, 90, (5,), generator=g).tolist() + [1] for _ in range(n)]
    tgt = [torch.randint(3, 90, (4,), generator=g).tolist() + [1] for _ in range(n)]
    return EncodedPairs(src, tgt, 0, 0)


DATA = {"python": pairs(12, 91, 1), "javascript": pairs(12, 92, 2), "java": pairs(12, 93, 3)}


def model(method: str, cfg: MethodConfig = SMALL):
    base, info = make_base(tiny_config())
    return build_model(base, method, cfg, info)


def train(cm, task: str, data: EncodedPairs | None = None, regularizer=None, **kw):
    cm.add_task(task)
    cm.activate(task)
    stage = Stage(task, (task,))
    data = data if data is not None else cm.training_data(stage, DATA, seed=7)
    return train_task(cm, data, TRAIN, 0, torch.device("cpu"), 0, progress=False, regularizer=regularizer or cm.regularizer(), **kw)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


# ---------------------------------------------------------------- sequential_ft


def test_sequential_ft_updates_base_weights_and_lora_does_not():
    ft = model("sequential_ft")
    before = snapshot(ft.base)
    cost = train(ft, "python")
    assert cost.trainable_parameters == sum(p.numel() for p in ft.base.parameters()) == ft.stored_parameter_count()
    assert any(not torch.equal(before[n], p) for n, p in ft.base.named_parameters())

    lora = model("lora")
    before = snapshot(lora.base)
    train(lora, "python")
    base_now = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in lora.peft.named_parameters() if "lora_" not in n}
    assert all(torch.equal(before[n], base_now[n]) for n in before)


def test_full_weights_save_and_load_as_safetensors(tmp_path):
    ft = model("sequential_ft")
    train(ft, "python")
    ft.save_task("python", tmp_path / "python")
    assert (tmp_path / "python" / "model.safetensors").is_file() and not list(tmp_path.rglob("*.bin"))
    x, y = torch.randint(3, 90, (2, 6)), torch.randint(3, 90, (2, 4))
    fresh = model("sequential_ft")
    fresh.load_task("python", tmp_path / "python")
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=x, labels=y).logits, ft(input_ids=x, labels=y).logits)
    from transformers import T5ForConditionalGeneration

    assert T5ForConditionalGeneration.from_pretrained(tmp_path / "python").num_parameters() == ft.stored_parameter_count()


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_learner_loads_a_twins_modules(kind):
    """`experiment._reuse_first_stage` calls `load_task(task, folder, saved_by=twin)` on any learner whose
    method declares `first_stage_as`: every model kind takes the keyword (SharedModel once raised TypeError)."""
    assert "saved_by" in inspect.signature(MODEL_KINDS[kind].load_task).parameters


def test_shared_weights_load_what_a_twin_saved_and_refuse_other_weights(tmp_path):
    ft = model("sequential_ft")
    train(ft, "python")
    ft.save_task("python", tmp_path / "python")
    replay = model("replay", MethodConfig(lora=SMALL.lora, replay=ReplayConfig(base="full")))
    with pytest.raises(CheckpointError, match="saved by method 'sequential_ft'"):
        replay.load_task("python", tmp_path / "python")
    replay.load_task("python", tmp_path / "python", saved_by="sequential_ft")
    x, y = torch.randint(3, 90, (2, 6)), torch.randint(3, 90, (2, 4))
    with torch.no_grad():
        assert torch.equal(replay(input_ids=x, labels=y).logits, ft(input_ids=x, labels=y).logits)
    with pytest.raises(CheckpointError, match="full weights"):  # a twin's weights must be of the same kind
        model("replay").load_task("python", tmp_path / "python", saved_by="sequential_ft")


# ---------------------------------------------------------------- joint


def test_joint_trains_one_stage_on_all_tasks():
    cm = model("joint")
    stages = cm.stages(["python", "javascript", "java"])
    assert stages == [Stage("joint", ("python", "javascript", "java"))]
    cm.add_task("joint")
    cm.activate("joint")
    data = cm.training_data(stages[0], DATA, seed=7)
    assert len(data) == 36 and {s[0] for s in data.source_ids} == {91, 92, 93}
    assert cm.task_parameter_count("joint") == cm.stored_parameter_count() > 0  # one LoRA adapter by default
    full = model("joint", MethodConfig(lora=SMALL.lora, joint=JointConfig(base="full")))
    full.add_task("joint")
    assert full.stored_parameter_count() == sum(p.numel() for p in full.base.parameters())


# ---------------------------------------------------------------- replay


def test_replay_buffer_is_deterministic_and_sized():
    earlier = {"python": DATA["python"], "javascript": DATA["javascript"]}
    a, b = replay_buffer(earlier, 5, seed=3), replay_buffer(earlier, 5, seed=3)
    assert a.source_ids == b.source_ids and len(a) == 10
    assert replay_buffer(earlier, 5, seed=4).source_ids != a.source_ids
    assert len(replay_buffer(earlier, 50, seed=3)) == 24  # a task with fewer examples gives all of them


def test_replay_batches_contain_earlier_tasks_examples():
    cfg = MethodConfig(lora=SMALL.lora, replay=ReplayConfig(buffer_per_task=3))
    cm = model("replay", cfg)
    assert len(cm.training_data(Stage("python", ("python",)), DATA, seed=7)) == 12  # no earlier task yet
    train(cm, "python")
    train(cm, "javascript")
    seen = []
    cm.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"][:, 0].tolist()), with_kwargs=True)
    train(cm, "java")
    markers = [t for batch in seen for t in batch]
    assert markers.count(93) == 12 and markers.count(91) == 3 and markers.count(92) == 3
    assert cm.stored_parameter_count() == cm.task_parameter_count("java")  # one adapter carried across tasks


def test_replay_config_is_validated():
    with pytest.raises(ConfigError, match="method.replay.buffer_per_task must be >= 1"):
        ReplayConfig(buffer_per_task=0)
    with pytest.raises(ConfigError, match="method.replay.base must be lora or full"):
        ReplayConfig(base="adapter")


# ---------------------------------------------------------------- ewc


def test_ewc_penalty_zero_at_anchor_positive_away():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    penalty = EwcPenalty(strength=4.0)
    penalty.consolidate([("p", p)], {"p": torch.tensor([1.0, 0.0, 2.0])})
    assert penalty().item() == 0.0
    with torch.no_grad():
        p.add_(torch.tensor([0.5, 7.0, -1.0]))
    assert penalty().item() == pytest.approx(0.5 * 4.0 * (1.0 * 0.25 + 0.0 * 49 + 2.0 * 1.0))  # λ/2 Σ F (θ−θ*)²
    penalty().backward()
    assert torch.allclose(p.grad, 4.0 * torch.tensor([1.0, 0.0, 2.0]) * torch.tensor([0.5, 7.0, -1.0]))


def test_fisher_is_mean_squared_gradient():
    cm = model("ewc")
    cm.add_task("python")
    cm.activate("python")
    named = cm.task_parameters("python")
    one_batch = EncodedPairs(DATA["python"].source_ids[:4], DATA["python"].target_ids[:4], 0, 0)
    fisher = fisher_diagonal(cm, named, one_batch, 0, torch.device("cpu"), max_batches=5, batch_size=4, seed=0)
    from codecl.data.batching import pad_batch

    cm.zero_grad()
    cm(**pad_batch(one_batch.source_ids, one_batch.target_ids, 0)).loss.backward()
    for n, p in named:
        assert torch.allclose(fisher[n], p.grad ** 2)
    assert any(f.abs().sum() > 0 for f in fisher.values())


def test_ewc_consolidates_after_each_task_and_regularises_the_next():
    cm = model("ewc", MethodConfig(lora=SMALL.lora, ewc=EwcConfig(lambda_penalty=10.0, fisher_batches=2)))
    assert cm.regularizer() is None
    train(cm, "python")
    cm.end_stage(Stage("python", ("python",)), DATA, 0, torch.device("cpu"), 0, 4)
    reg = cm.regularizer()
    assert len(cm.ewc.terms) == 1 and reg().item() == 0.0  # at θ*
    train(cm, "javascript")
    assert reg().item() > 0.0  # moved away from θ*


# ---------------------------------------------------------------- olora


def test_orthogonality_penalty_zero_iff_orthogonal():
    eye = torch.eye(6)
    assert orthogonality_penalty([(eye[:3], eye[3:])]).item() == 0.0
    assert orthogonality_penalty([(eye[:3], eye[2:5])]).item() == pytest.approx(1.0)
    a, b = torch.randn(2, 6), torch.randn(2, 6)
    assert orthogonality_penalty([(a, b)]).item() == pytest.approx(((a @ b.T) ** 2).sum().item())


def test_olora_freezes_earlier_adapters_keeps_them_active_and_penalises_overlap():
    cm = model("olora", MethodConfig(lora=SMALL.lora, olora=OLoraConfig(lambda_orth=1.0)))
    assert isinstance(cm, OLoraModel)
    train(cm, "python")
    assert cm.regularizer() is None  # no earlier adapter to be orthogonal to
    python_weights = {n: p.detach().clone() for n, p in cm.task_parameters("python")}
    cm.add_task("javascript")
    cm.activate("javascript")
    assert {id(p) for p in cm.trainable_parameters()} == {id(p) for _, p in cm.task_parameters("javascript")}
    assert sorted(cm.peft.base_model.active_adapters) == ["javascript", "python"]  # summed: no task id at inference
    loss = cm.olora_loss("javascript")
    assert loss.item() > 0  # random A matrices overlap
    with torch.no_grad():  # make every new A orthogonal to the python A it meets
        for a_s, a_t in cm.lora_a_pairs("javascript"):
            q, _ = torch.linalg.qr(torch.cat([a_s, a_t]).T)  # (d_in, 2r)
            a_t.copy_(q[:, a_s.shape[0]:].T)
    assert cm.olora_loss("javascript").item() == pytest.approx(0.0, abs=1e-10)
    cost = train_task(cm, DATA["javascript"], TRAIN, 0, torch.device("cpu"), 0, progress=False, regularizer=cm.regularizer())
    assert cost.steps > 0
    assert all(torch.equal(python_weights[n], p) for n, p in cm.task_parameters("python"))
    cm.activate("python")  # evaluation with any task id uses every adapter
    assert sorted(cm.peft.base_model.active_adapters) == ["javascript", "python"]


def test_olora_adapters_are_plain_peft_folders(tmp_path):
    from peft import PeftModel

    cm = model("olora")
    train(cm, "python")
    cm.save_task("python", tmp_path / "python")
    plain, _ = make_base(tiny_config())
    assert PeftModel.from_pretrained(plain, tmp_path / "python") is not None


# ---------------------------------------------------------------- registry and accounting


@pytest.mark.parametrize("method,kind", [("sequential_ft", SharedModel), ("joint", SharedModel), ("replay", SharedModel),
                                         ("ewc", SharedModel), ("olora", OLoraModel), ("merge_linear", MergeModel),
                                         ("merge_ties", MergeModel), ("merge_dare", MergeModel), ("lwf", LwfModel)])
def test_every_baseline_is_registered(method, kind):
    from codecl.config import METHOD_NAMES
    from codecl.registry import METHODS

    assert isinstance(model(method), kind) and method in METHODS.names() and method not in METHOD_NAMES
    assert not METHODS.get(method).study


def test_params_reports_the_baselines():
    from codecl.config import load_config
    from codecl.methods.accounting import parameter_report

    cfg = load_config("smoke", methods="lora,sequential_ft,joint,replay,ewc,olora")
    report = parameter_report(cfg)
    m = {name: {k: row[k] for k in ("trainable_per_task", "stored_after")} for name, row in report["methods"].items()}
    base = report["base"]
    assert m["sequential_ft"] == {"trainable_per_task": base, "stored_after": {"1": base, "2": base}}
    lora = m["lora"]["trainable_per_task"]
    assert m["olora"] == m["lora"] == {"trainable_per_task": lora, "stored_after": {"1": lora, "2": 2 * lora}}
    assert m["replay"] == m["ewc"] == {"trainable_per_task": lora, "stored_after": {"1": lora, "2": lora}}
    assert m["joint"] == {"trainable_per_task": lora, "stored_after": {"2": lora}}


def test_baseline_configs_are_validated():
    with pytest.raises(ConfigError, match="method.ewc.lambda_penalty must be >= 0"):
        EwcConfig(lambda_penalty=-1)
    with pytest.raises(ConfigError, match="method.ewc.fisher_batches must be >= 1"):
        EwcConfig(fisher_batches=0)
    with pytest.raises(ConfigError, match="method.olora.lambda_orth must be >= 0"):
        OLoraConfig(lambda_orth=-0.1)
    with pytest.raises(ConfigError, match="method.joint.base must be lora or full, got 'block'"):
        JointConfig(base="block")
    from codecl.config import load_config

    with pytest.raises(ConfigError, match="unknown method.*available: .*sequential_ft, joint, replay, ewc, olora"):
        load_config("smoke", methods="lora,ewcc")
    assert load_config("smoke", overrides=["method.ewc.lambda_penalty=5", "method.replay.base=full"]).method.replay.base == "full"


# ---------------------------------------------------------------- joint in results.json


def _joint_run(stages: list[str]) -> dict:
    from codecl.results import finalize_run

    rows = [[0.1, 0.2]] + [[0.3, 0.4]] * (len(stages) - 1)
    per_stage = {s: 1.0 for s in stages[1:]}
    return finalize_run({"method": "joint", "seed": 1, "stages": stages, "scores": {m: rows for m in ("bleu", "exact_match", "syntax_pass")},
                         "trainable_parameters": per_stage, "train_seconds": per_stage, "train_samples_per_second": per_stage,
                         "peak_memory_bytes": per_stage, "stored_parameters": 10, "loss_curve": {s: [1.0] for s in stages[1:]}})


def test_joint_run_is_a_complete_results_entry():
    from codecl.errors import CheckpointError
    from codecl.results import is_complete, new_results, validate_results

    results = new_results({"methods": ["joint"], "seeds": [1]}, {"name": "tiny"}, ["python", "javascript"])
    run = _joint_run(["base", "joint"])
    assert run["forgetting"] == {} and run["bwt"]["bleu"] is None and run["final_average"]["bleu"] == pytest.approx(0.35)
    results["runs"] = [run]
    assert is_complete(results, run) and validate_results(results, complete=True)
    results["runs"] = [_joint_run(["base", "joint", "python"])]
    with pytest.raises(CheckpointError, match=r"stages must be base followed by the tasks in order .* \(or base, joint\)"):
        validate_results(results)
