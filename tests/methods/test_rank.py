"""`method.lora.rank: match_block` (codecl.methods.rank) and `method.block.shared_after_first`."""
import pytest
import torch

from codecl.config import BlockConfig, LoraConfig, MethodConfig, load_config
from codecl.errors import ConfigError
from codecl.methods.continual import ContinualModel
from codecl.methods.rank import block_parameter_count, lora_parameters_per_rank, resolve_lora_rank
from helpers import codet5_small_config, make_base, tiny_config

CODET5_SMALL_BLOCK = 3_146_752  # one T5 encoder layer of d_model 512, d_ff 2048, without the relative bias


def test_match_block_on_codet5_small_is_within_one_rank_step_of_the_block():
    base, info = make_base(codet5_small_config())
    cfg = MethodConfig(lora=LoraConfig(rank="match_block"), block=BlockConfig(position=6))
    per_rank = 6 * (4 * 1024 + 2 * 2560) + 6 * (8 * 1024 + 2 * 2560)  # encoder q,k,v,o,wi,wo; decoder + cross-attention
    assert block_parameter_count(base, cfg.block) == CODET5_SMALL_BLOCK
    assert lora_parameters_per_rank(base, cfg.lora.target_modules) == per_rank == 135_168
    rank = resolve_lora_rank(cfg.lora, cfg.block, base)
    assert rank == 24
    cm = ContinualModel(base, "lora", cfg, info)  # the adapter PEFT actually builds with that rank
    cm.add_task("python")
    lora = cm.task_parameter_count("python")
    assert lora == rank * per_rank and 0 <= lora - CODET5_SMALL_BLOCK < per_rank
    assert lora_parameters_per_rank(base, cfg.lora.target_modules) == per_rank  # unchanged once PEFT wrapped the layers
    cm.add_task("javascript")
    assert cm.task_parameter_count("javascript") == lora


def test_an_integer_rank_is_kept_and_bad_targets_are_named():
    base, _ = make_base(tiny_config())
    assert resolve_lora_rank(LoraConfig(rank=3), BlockConfig(), base) == 3
    with pytest.raises(ConfigError, match=r"match_block: no linear layer .* \['nope'\]"):
        resolve_lora_rank(LoraConfig(rank="match_block", target_modules=("nope",)), BlockConfig(), base)
    small = resolve_lora_rank(LoraConfig(rank="match_block", target_modules=("q", "v")), BlockConfig(), base)
    per_rank = lora_parameters_per_rank(base, ("q", "v"))
    assert (small - 1) * per_rank < block_parameter_count(base, BlockConfig()) <= small * per_rank


def test_rank_config_accepts_an_integer_or_match_block_only():
    assert load_config("smoke", overrides=["method.lora.rank=match_block"]).method.lora.rank == "match_block"
    assert load_config("smoke", overrides=["method.lora.rank=8"]).method.lora.rank == 8
    with pytest.raises(ConfigError, match="method.lora.rank must be an integer >= 1 or match_block, got 'match_blok'"):
        load_config("smoke", overrides=["method.lora.rank=match_blok"])
    with pytest.raises(ConfigError, match="method.lora.rank must be >= 1, got 0"):
        load_config("smoke", overrides=["method.lora.rank=0"])
    with pytest.raises(ConfigError, match="method.block.shared_after_first must be train or freeze, got 'never'"):
        load_config("smoke", overrides=["method.block.shared_after_first=never"])


def test_params_reports_the_resolved_rank():
    from codecl.methods.accounting import parameter_report

    report = parameter_report(load_config("smoke", overrides=["method.lora.rank=match_block"], methods=["lora", "full_layer"]))
    lora, block = report["methods"]["lora"], report["methods"]["full_layer"]
    per_rank = lora["trainable_per_task"] // lora["lora_rank"]
    assert 0 <= lora["trainable_per_task"] - block["trainable_per_task"] < per_rank and "lora_rank" not in block


@pytest.mark.parametrize("mode", ["train", "freeze"])
def test_shared_block_trained_after_the_first_task_or_frozen(mode):
    base, info = make_base(tiny_config())
    cfg = MethodConfig(lora=LoraConfig(rank=2, alpha=4, dropout=0.0), block=BlockConfig(shared_after_first=mode))
    cm = ContinualModel(base, "hybrid_shared", cfg, info)
    for task in ("python", "javascript"):
        cm.add_task(task)
    block = list(cm.blocks["shared"].parameters())
    block_count = sum(p.numel() for p in block)
    cm.activate("python")  # the first task always trains the shared block
    assert all(p.requires_grad for p in block)
    lora_count = cm.task_parameter_count("python") - block_count
    cm.activate("javascript")
    assert all(p.requires_grad == (mode == "train") for p in block)
    assert cm.task_parameter_count("javascript") == lora_count + (block_count if mode == "train" else 0)
    assert cm.stored_parameter_count() == 2 * lora_count + block_count  # the shared block counted once either way
    assert cm.slot.block is cm.blocks["shared"]  # frozen, it still runs for the later task
    before = [p.detach().clone() for p in block]
    optimizer = torch.optim.SGD(cm.trainable_parameters(), lr=0.1)
    ids = torch.randint(2, 90, (2, 6))
    cm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    changed = any(not torch.equal(a, b) for a, b in zip(before, block))
    assert changed == (mode == "train")
