"""Merging of per-task LoRA adapters (merge_linear, merge_ties, merge_dare): the merged ΔW against
formulas computed by hand, evaluation without a task id, stored-parameter accounting, PEFT folders
and a resume round trip (tiny T5 and a tiny GPT-2, whose Conv1D layers have fan_in_fan_out)."""
import pytest
import torch

from causal_models import make_causal
from codecl.config import LoraConfig, MergeConfig, MethodConfig
from codecl.errors import CheckpointError, ConfigError
from codecl.methods.build import build_model
from codecl.methods.merging import MERGED, MergeModel
from codecl.methods.mixing import Stage
from codecl.registry import METHODS
from codecl.model.base import BaseInfo, count_parameters, fingerprint
from helpers import make_base, tiny_config

TASKS = ["python", "javascript", "java"]


def cfg(**merge) -> MethodConfig:
    return MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0), merge=MergeConfig(**merge))


def model(method: str, config: MethodConfig | None = None, family: str | None = None):
    if family is None:
        base, info = make_base(tiny_config())
    else:
        base, _ = make_causal(family)
        info = BaseInfo(family, family, fingerprint(base, family), count_parameters(base))
    return build_model(base, method, config or cfg(), info)


def stage(cm, task: str, folder=None):
    """One stage as `codecl.experiment` runs it, with a random perturbation standing in for training."""
    torch.manual_seed(len(cm.tasks))  # as the run seeds each stage: the same adapters in every model
    cm.add_task(task)
    cm.activate(task)
    with torch.no_grad():
        for _, p in cm.task_parameters(task):
            p.add_(torch.randn_like(p) * 0.3)
    if folder is not None:
        cm.save_task(task, folder / task)
    cm.end_stage(Stage(task, (task,)), {}, 0, torch.device("cpu"), 0, 4)


def lora_layers(cm):
    from peft.tuners.lora import LoraLayer

    return [m for m in cm.peft.modules() if isinstance(m, LoraLayer) and MERGED in m.lora_A]


def deltas(layer, tasks):
    return torch.stack([layer.get_delta_weight(t) for t in tasks])  # (T, d_out, d_in)


X, Y = torch.randint(3, 90, (3, 7)), torch.randint(3, 90, (3, 5))


def logits(cm):
    with torch.no_grad():
        return cm(input_ids=X, labels=Y).logits


@pytest.mark.parametrize("weights,w", [("mean", 1 / 3), ("sum", 1.0)])
def test_linear_merge_is_the_weighted_sum_of_deltas(weights, w):
    cm = model("merge_linear", cfg(weights=weights))
    for task in TASKS:
        stage(cm, task)
    assert cm.merged_tasks == tuple(TASKS) and cm.peft.peft_config[MERGED].r == 12  # cat: Σ r_t
    for layer in lora_layers(cm):
        expected = w * deltas(layer, TASKS).sum(0)
        assert torch.allclose(layer.get_delta_weight(MERGED), expected, atol=1e-6, rtol=0)


def ties_by_hand(d: torch.Tensor, density: float, w: float) -> torch.Tensor:
    """TIES (Yadav et al. 2023) on stacked task vectors d (T, ...): trim, elect sign (total), disjoint mean."""
    trimmed = []
    for t in d:
        k = int(density * t.numel())
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        keep[t.abs().flatten().topk(k).indices] = True
        trimmed.append(t * keep.view_as(t))
    trimmed = torch.stack(trimmed)
    sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
    agree = trimmed.sign() == sign
    return (w * trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)


def test_ties_trims_to_density_and_elects_signs():
    cm = model("merge_ties", cfg(density=0.3, svd_rank=32))  # rank 32 = the tiny T5's full rank: the SVD is exact
    for task in TASKS:
        stage(cm, task)
    for layer in lora_layers(cm):
        d = deltas(layer, TASKS)
        merged = layer.get_delta_weight(MERGED)
        assert torch.allclose(merged, ties_by_hand(d, 0.3, 1 / 3), atol=1e-5, rtol=0)
        # an entry every task trimmed away stays zero; a kept entry has the elected sign
        assert not torch.allclose(merged, d.mean(0), atol=1e-3)


def test_dare_with_density_one_equals_linear_and_drops_otherwise():
    linear, dare, dropped = model("merge_linear"), model("merge_dare", cfg(density=1.0)), model("merge_dare", cfg(density=0.5))
    for task in TASKS[:2]:
        for cm in (linear, dare, dropped):
            stage(cm, task)
    for a, b, c in zip(lora_layers(linear), lora_layers(dare), lora_layers(dropped)):
        assert torch.allclose(a.get_delta_weight(MERGED), b.get_delta_weight(MERGED), atol=1e-5, rtol=0)
        assert not torch.allclose(a.get_delta_weight(MERGED), c.get_delta_weight(MERGED), atol=1e-3)


def test_dare_merge_is_reproducible_and_keeps_the_rng_state():
    a, b = model("merge_dare"), model("merge_dare")
    for task in TASKS[:2]:
        stage(a, task)
        stage(b, task)
    b.merged_tasks = ()
    torch.manual_seed(123)  # another outer RNG state: the same merge, and the state is left as it was
    state = torch.random.get_rng_state()
    b.merge()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(logits(a), logits(b))


@pytest.mark.parametrize("method", ["merge_linear", "merge_ties", "merge_dare"])
def test_evaluation_ignores_the_task_id_and_the_new_task_trains_alone(method):
    cm = model(method)
    stage(cm, "python")
    stage(cm, "javascript")
    outputs = []
    for task in ("python", "javascript"):
        cm.activate(task)
        assert cm.peft.active_adapter == MERGED and not cm.trainable_parameters()
        outputs.append(logits(cm))
    assert torch.equal(outputs[0], outputs[1])
    cm.add_task("java")
    cm.activate("java")  # not merged yet: its own adapter, and only it, trains
    assert cm.peft.active_adapter == "java"
    assert {id(p) for p in cm.trainable_parameters()} == {id(p) for _, p in cm.task_parameters("java")}
    cm.activate(None)
    bare = logits(cm)
    fresh, _ = make_base(tiny_config())
    with torch.no_grad():
        assert torch.equal(bare, fresh(input_ids=X, labels=Y).logits)


def test_first_stage_trains_the_same_adapter_as_lora_but_no_reuse_is_declared():
    merge, lora = model("merge_linear"), model("lora")
    torch.manual_seed(5)
    merge.add_task("python")
    torch.manual_seed(5)
    lora.add_task("python")
    assert all(torch.equal(p, q) for (_, p), (_, q) in zip(merge.task_parameters("python"), lora.task_parameters("python")))
    assert all(METHODS.get(m).first_stage_as is None for m in ("merge_linear", "merge_ties", "merge_dare"))


@pytest.mark.parametrize("method", ["merge_linear", "merge_ties"])
def test_stored_parameters_are_every_adapter_plus_the_merged_one(method):
    cm = model(method)
    one = None
    for n, task in enumerate(TASKS, start=1):
        cm.add_task(task)
        one = one or cm.task_parameter_count(task)
        counted_before_merge = cm.stored_parameter_count()
        stage_end = Stage(task, (task,))
        cm.end_stage(stage_end, {}, 0, torch.device("cpu"), 0, 4)
        merged = sum(p.numel() for name, p in cm.peft.named_parameters() if f".{MERGED}." in name)
        rank = 4 if n == 1 else 4 * n  # svd_rank 0 = Σ r_t, as cat
        assert merged == one * rank // 4
        assert cm.stored_parameter_count() == counted_before_merge == n * one + merged


def test_merged_adapter_folders_are_plain_peft_and_resume_gives_identical_logits(tmp_path):
    from peft import PeftModel

    cm = model("merge_ties")
    for task in TASKS[:2]:
        stage(cm, task, tmp_path)
    cm.activate("python")
    expected = logits(cm)
    fresh = model("merge_ties")
    fresh.load_stages(tmp_path, TASKS[:2])
    assert fresh.merged_tasks == tuple(TASKS[:2])
    for task in TASKS[:2]:
        fresh.activate(task)
        assert torch.equal(logits(fresh), expected)
    assert fresh.stored_parameter_count() == cm.stored_parameter_count()
    base, _ = make_base(tiny_config())
    plain = PeftModel.from_pretrained(base, tmp_path / "javascript" / MERGED).eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=X, labels=Y).logits, expected, atol=1e-6)
    # resuming continues the stream: the third stage merges all three adapters
    stage(fresh, "java")
    assert fresh.merged_tasks == tuple(TASKS) and fresh.peft.peft_config[MERGED].r == 12


def test_loading_stages_out_of_order_is_refused(tmp_path):
    cm = model("merge_linear")
    for task in TASKS[:2]:
        stage(cm, task, tmp_path)
    with pytest.raises(CheckpointError, match="merged adapter holds tasks"):
        model("merge_linear").load_task("javascript", tmp_path / "javascript")


def test_gpt2_conv1d_linear_merge_and_round_trip(tmp_path):
    cm = model("merge_linear", family="gpt2")
    x = torch.randint(0, 200, (2, 9))
    for task in TASKS[:2]:
        stage(cm, task, tmp_path)
    for layer in lora_layers(cm):
        assert torch.allclose(layer.get_delta_weight(MERGED), deltas(layer, TASKS[:2]).mean(0), atol=1e-6, rtol=0)
    fresh = model("merge_linear", family="gpt2")
    fresh.load_stages(tmp_path, TASKS[:2])
    cm.activate("python")
    fresh.activate("javascript")
    with torch.no_grad():
        assert torch.equal(cm(input_ids=x).logits, fresh(input_ids=x).logits)


def test_merge_config_is_validated():
    with pytest.raises(ConfigError, match="method.merge.weights must be mean or sum, got 'avg'"):
        MergeConfig(weights="avg")
    with pytest.raises(ConfigError, match=r"method.merge.density must be in \(0, 1\], got 0"):
        MergeConfig(density=0)
    with pytest.raises(ConfigError, match="method.merge.majority_sign must be total or frequency"):
        MergeConfig(majority_sign="vote")
    with pytest.raises(ConfigError, match="method.merge.svd_rank must be >= 0"):
        MergeConfig(svd_rank=-1)
    from codecl.config import load_config

    c = load_config("smoke", methods="merge_linear,merge_ties,merge_dare", overrides=["method.merge.density=0.7"])
    assert c.method.merge.density == 0.7 and isinstance(model("merge_dare"), MergeModel)


def test_params_reports_the_merging_methods_and_lwf():
    from codecl.config import load_config
    from codecl.methods.accounting import parameter_report

    report = parameter_report(load_config("smoke", methods="lora,merge_linear,merge_ties,merge_dare,lwf"))
    m = {name: {k: row[k] for k in ("trainable_per_task", "stored_after")} for name, row in report["methods"].items()}
    lora = m["lora"]["trainable_per_task"]
    # two adapters of rank r, then the merged adapter: rank r after one task, 2r (Σ r_t) after two
    assert m["merge_linear"] == m["merge_ties"] == m["merge_dare"] == {"trainable_per_task": lora, "stored_after": {"1": 2 * lora, "2": 4 * lora}}
    assert m["lwf"] == {"trainable_per_task": lora, "stored_after": {"1": lora, "2": lora}}
