"""Configuration: every shipped preset loads; overrides; all errors in one message."""
import pytest
import yaml

from codecl.config import RunConfig, load_config, preset_names, to_dict
from codecl.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    assert load_config(config_file=None, preset=name) == cfg
    if cfg.data.tasks:  # the example streams of user-defined tasks (domain-python, mixed-stream)
        assert all(t in cfg.data.tasks or t in ("python", "javascript") for t in cfg.tasks) and len(cfg.tasks) == 3
    else:
        assert cfg.tasks == ("python", "javascript")
    if not cfg.sweep:  # the study sweeps (lora-rank-sweep, ...) run only the methods their knob changes
        assert set(cfg.methods) == {"lora", "full_layer", "hybrid", "hybrid_shared"}


def test_presets_are_the_three_spec_names():
    assert set(preset_names()) >= {"quickstart", "smoke", "seed-paper"}
    paper = load_config("seed-paper")
    assert paper.model.name == "Salesforce/codet5-small" and paper.data.max_train_examples == 8000
    assert (paper.train.lr, paper.train.batch_size, paper.train.epochs, paper.train.grad_clip, paper.train.seed) == (5e-4, 8, 2, 1.0, 42)
    assert (paper.method.lora.rank, paper.method.lora.alpha, paper.method.lora.dropout) == (16, 32, 0.1)
    assert paper.method.lora.target_modules == ("q", "k", "v", "o", "wi", "wo") and paper.method.block.position == 6


def test_seed_paper_pins_its_hub_revisions_and_covers_its_targets():
    """Reproducible inputs (a 40-hex commit for the model and for the data) and a generation budget
    that can reproduce every 512-token reference."""
    import re

    paper = load_config("seed-paper")
    assert re.fullmatch(r"[0-9a-f]{40}", paper.model.revision)
    assert paper.data.source == "hub" and re.fullmatch(r"[0-9a-f]{40}", paper.data.hub_revision)
    assert paper.data.max_target_tokens == 512 and paper.eval.max_new_tokens >= paper.data.max_target_tokens
    # a local copy may keep the data pin (ignored there); `null` unpins
    local = load_config("seed-paper", overrides=["data.source=local", "data.path=/tmp/csn", "model.revision=null"])
    assert local.model.revision is None and local.data.hub_revision == paper.data.hub_revision


def test_revisions_are_validated():
    cfg = load_config("smoke", overrides=["model.revision=v1.0", "data.hub_revision=main"])
    assert (cfg.model.revision, cfg.data.hub_revision) == ("v1.0", "main")
    assert load_config("smoke").model.revision is None and load_config("smoke").data.hub_revision is None
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides=["model.revision=a b", "data.hub_revision="])
    assert "model.revision must be a commit hash" in str(err.value) and "data.hub_revision must be a commit hash" in str(err.value)


def test_dotted_overrides_and_top_level_flags():
    cfg = load_config("smoke", overrides=["train.epochs=3", "method.lora.target_modules=[q,v]", "data.max_train_examples=null"], tasks=["javascript"])
    assert cfg.train.epochs == 3 and cfg.method.lora.target_modules == ("q", "v") and cfg.data.max_train_examples is None
    assert cfg.tasks == ("javascript",)


def test_all_errors_are_collected_into_one_message():
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides=["train.lr=2", "train.batch_size=0", "eval.split=train"])
    message = str(err.value)
    assert "train.lr must be in (0, 1)" in message and "train.batch_size must be >= 1" in message and "eval.split" in message


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'quick'; available: .*quickstart"):
        load_config("quick")
    with pytest.raises(ConfigError, match="unknown task.*cobol.*known: the languages python, javascript"):
        load_config("smoke", tasks=["python", "cobol"])
    with pytest.raises(ConfigError, match="available: lora, full_layer, hybrid, hybrid_shared"):
        load_config("smoke", methods=["lroa"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("smoke", overrides=["train.epochs"])


def test_config_file_with_base_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"preset": "smoke", "train": {"epochs": 4}}))
    cfg = load_config(config_file=str(path))
    assert cfg.train.epochs == 4 and cfg.model.embedded.d_model == load_config("smoke").model.embedded.d_model
    assert yaml.safe_load(yaml.safe_dump(to_dict(cfg)))["train"]["epochs"] == 4
