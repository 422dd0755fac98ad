"""LwF (learning without forgetting): the distillation term, its effect on forgetting, its config."""
import pytest
import torch

from causal_models import make_causal
from codecl.config import LoraConfig, LwfConfig, MethodConfig, TrainConfig
from codecl.data.batching import EncodedPairs, encode_pairs, pad_batch
from codecl.errors import ConfigError
from codecl.evaluation.loss import mean_loss, per_example_losses
from codecl.methods.build import build_model
from codecl.methods.lwf import LwfModel, distillation_kl
from codecl.methods.mixing import Stage
from codecl.model.base import BaseInfo, count_parameters, fingerprint
from codecl.train import train_task
from helpers import make_base, tiny_config

CPU = torch.device("cpu")
TRAIN = TrainConfig(lr=1e-2, batch_size=8, epochs=2, checkpoint_every_steps=0)


def cfg(**lwf) -> MethodConfig:
    return MethodConfig(lora=LoraConfig(rank=8, alpha=16, dropout=0.0), lwf=LwfConfig(**lwf))


def rule_task(n: int, seed: int, program: list[int], low: int) -> EncodedPairs:
    """Random descriptions (tokens from [low, low + 40)), one fixed program: a learnable task."""
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(low, low + 40, (6,), generator=g).tolist() + [1] for _ in range(n)]
    return EncodedPairs(src, [program + [1] for _ in src], 0, 0)


A = dict(program=[11, 23, 35, 47, 59], low=3)
B = dict(program=[64, 52, 40, 28, 16], low=3)
DATA = {"python": rule_task(48, 1, **A), "javascript": rule_task(48, 2, **B)}
HELD_OUT_A = rule_task(16, 3, **A)


def run_stage(cm, task: str, seed: int):
    cm.add_task(task)
    cm.activate(task)
    stage = Stage(task, (task,))
    cost = train_task(cm, cm.training_data(stage, DATA, seed), TRAIN, 0, CPU, seed, progress=False, regularizer=cm.regularizer())
    cm.end_stage(stage, DATA, 0, CPU, seed, 8)
    return cost


def test_distillation_is_zero_at_the_first_step_and_positive_after_updates():
    base, info = make_base(tiny_config())
    cm = build_model(base, "lwf", cfg(), info)
    assert isinstance(cm, LwfModel)
    run_stage(cm, "python", 0)
    cm.add_task("javascript")
    cm.activate("javascript")
    batch = pad_batch(DATA["javascript"].source_ids[:8], DATA["javascript"].target_ids[:8], 0)
    cm.train()
    loss = cm(**batch).loss
    assert cm.last_distillation == 0.0  # the student is the teacher
    cm.eval()
    with torch.no_grad():
        assert torch.equal(cm(**batch).loss, loss)  # eval mode: plain cross-entropy, no term added
    train_task(cm, DATA["javascript"], TrainConfig(lr=1e-2, batch_size=8, epochs=1, checkpoint_every_steps=0), 0, CPU, 1, progress=False)
    cm.train()
    with torch.no_grad():
        cm(**batch)
    assert cm.last_distillation > 0.01
    teacher = cm.teacher_logits(**batch)
    assert cm.training  # the teacher's eval-mode pass restored training mode
    student = cm.model(**batch).logits
    assert not torch.allclose(teacher, student)


def test_a_large_lambda_forgets_less_than_none():
    """Same first stage, then the second task (same descriptions, another program) with λ = 0 (plain
    sequential LoRA) or λ = 5 (λ T² = 20 against the cross-entropy). Measured: the first task's held-out
    loss rises 2.65 nats without distillation, 1.75 with it. Teacher forcing on the new task's targets
    constrains the old task's decoder prefixes only indirectly, so the protection is partial (also with
    larger λ); an ignored term would give equal rises (everything here is deterministic)."""
    rises = {}
    for lam in (0.0, 5.0):
        base, info = make_base(tiny_config())
        cm = build_model(base, "lwf", cfg(lambda_distill=lam), info)
        run_stage(cm, "python", 0)
        before = mean_loss(per_example_losses(cm, HELD_OUT_A, 0, 16, CPU))
        run_stage(cm, "javascript", 1)
        rises[lam] = mean_loss(per_example_losses(cm, HELD_OUT_A, 0, 16, CPU)) - before
    assert rises[0.0] > 1.0, rises  # without distillation the first task is forgotten
    assert rises[5.0] < 0.8 * rises[0.0], rises


def test_kl_counts_only_label_positions():
    t, s = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    s_far = s.clone()
    s_far[mask == 0] += 100.0 * torch.randn_like(s_far[mask == 0])  # masked positions may differ freely
    assert torch.equal(distillation_kl(t, s, mask, 2.0), distillation_kl(t, s_far, mask, 2.0))
    assert distillation_kl(t, t, mask, 2.0) == 0
    p, q = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1)[mask.bool()].mean()
    assert torch.allclose(distillation_kl(t, s, mask, 2.0), by_hand, atol=1e-6)


@pytest.mark.parametrize("base_weights", ["lora", "full"])
def test_causal_lwf_excludes_the_prompt_trains_and_reloads(base_weights, tmp_path):
    model, tokenizer = make_causal("llama")
    info = BaseInfo("llama", "llama", fingerprint(model, "llama"), count_parameters(model))
    cm = build_model(model, "lwf", cfg(base=base_weights), info)
    descriptions, codes = ["Return the sum.", "Sort the list.", "Parse a URL.", "Push an item."], ["a + b", "xs.sort()", "new URL(u)", "push(x)"]
    enc = encode_pairs(tokenizer, descriptions, codes, 32, 64)
    data = {"python": enc, "javascript": encode_pairs(tokenizer, descriptions[::-1], codes, 32, 64)}
    train = TrainConfig(lr=1e-3, batch_size=2, epochs=1, checkpoint_every_steps=0, fast_dropout=False)
    for index, task in enumerate(("python", "javascript")):
        cm.add_task(task)
        cm.activate(task)
        train_task(cm, data[task], train, tokenizer.pad_token_id, CPU, index, progress=False)
        cm.save_task(task, tmp_path / task)
        cm.end_stage(Stage(task, (task,)), data, tokenizer.pad_token_id, CPU, index, 2)
    assert cm.last_distillation is not None and cm.last_distillation > 0
    batch = pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)
    cm.train()
    with torch.no_grad():
        out = cm(**batch)
    # the term counts target tokens only: changing the teacher's logits at prompt positions changes nothing
    teacher = cm.teacher_logits(**batch)
    prompt = torch.zeros_like(batch["labels"], dtype=torch.bool)
    prompt[:, :-1] = batch["labels"][:, 1:] == -100  # logits at t predict label t + 1
    noisy = teacher.clone()
    noisy[prompt] += 50.0
    assert torch.equal(cm.distillation_loss(batch, out.logits, teacher), cm.distillation_loss(batch, out.logits, noisy))
    assert not torch.equal(cm.distillation_loss(batch, out.logits, teacher), cm.distillation_loss(batch, out.logits, teacher + 50.0 * torch.randn_like(teacher)))
    cm.eval()
    fresh_base, _ = make_causal("llama")
    fresh = build_model(fresh_base, "lwf", cfg(base=base_weights), info)
    fresh.load_stages(tmp_path, ["python", "javascript"])
    fresh.activate("javascript")
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, cm(**batch).logits)
    assert fresh.stored_parameter_count() == cm.stored_parameter_count()


def test_lwf_config_is_validated():
    with pytest.raises(ConfigError, match="method.lwf.base must be lora or full, got 'block'"):
        LwfConfig(base="block")
    with pytest.raises(ConfigError, match="method.lwf.lambda_distill must be >= 0"):
        LwfConfig(lambda_distill=-1)
    with pytest.raises(ConfigError, match="method.lwf.temperature must be > 0, got 0"):
        LwfConfig(temperature=0)
    from codecl.config import load_config

    c = load_config("smoke", methods="lwf", overrides=["method.lwf.temperature=3", "method.lwf.base=full"])
    assert (c.method.lwf.temperature, c.method.lwf.base, c.method.lwf.lambda_distill) == (3.0, "full", 1.0)
