"""The real CodeT5 path, offline: Salesforce/codet5-small's exact architecture (random weights) saved
with its real tokenizer (../shared/models/codet5-tokenizer: the byte-level BPE files of the hub
model's RobertaTokenizer), loaded through codecl, fed CodeSearchNet records from ../shared/data/csn.

Every test skips when the shared folder is absent. The reference tokenisation is an independent
byte-level BPE (GPT-2's algorithm over the same vocab.json / merges.txt), so "tokenises as the hub
tokenizer would" does not rest on the tokenizer class under test.
"""
from __future__ import annotations

import gzip
import json
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from helpers import SHARED_DATA, codet5_small_config, run_codecl

TOKENIZER_FILES = SHARED_DATA.parent / "models" / "codet5-tokenizer"
CSN = SHARED_DATA / "csn"
EXTRA_IDS = 100  # <extra_id_0> ... <extra_id_99>: 32,000 + 100 = codet5-small's vocab_size
PAD, BOS, EOS, UNK, MASK = 0, 1, 2, 3, 4


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared beside the repository)")
    return path


# ---------------------------------------------------------------- reference byte-level BPE


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (RoBERTa's and CodeT5's too)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@lru_cache(maxsize=1)
def _reference_tables():
    vocab = json.loads((TOKENIZER_FILES / "vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_FILES / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    return vocab, {pair: rank for rank, pair in enumerate(merges)}


def _bpe(word: str, ranks: dict) -> list[str]:
    parts = list(word)
    while len(parts) > 1:
        best = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def reference_ids(text: str) -> list[int]:
    """`<s>` + byte-level BPE ids of `text` + `</s>`, as the hub's RobertaTokenizer encodes one text."""
    import regex

    vocab, ranks = _reference_tables()
    byte_map = _bytes_to_unicode()
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    ids = [BOS]
    for piece in pattern.findall(text):
        ids += [vocab.get(tok, UNK) for tok in _bpe("".join(byte_map[b] for b in piece.encode("utf-8")), ranks)]
    return ids + [EOS]


# ---------------------------------------------------------------- fixtures


def save_codet5_tokenizer(folder: Path) -> Path:
    """The hub tokenizer's layout: RobertaTokenizer over the two files + 100 sentinel specials."""
    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer.from_pretrained(str(_need(TOKENIZER_FILES)), model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(EXTRA_IDS - 1, -1, -1)]})
    tokenizer.save_pretrained(str(folder))
    return folder


def save_codet5_folder(folder: Path, config, seed: int = 0) -> Path:
    """A `save_pretrained` model folder: T5 weights (random) + the real tokenizer beside them."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(str(folder))
    return save_codet5_tokenizer(folder)


def csn_folder(root: Path, languages=("python", "javascript"), python_valid: Path | None = None) -> Path:
    """A CodeSearchNet folder the loader reads (`<lang>/{train,valid,test}.jsonl`) from ../shared/data/csn:
    the CodeXGLUE dummy files of each language; `python_valid` replaces python's valid split."""
    dummy = _need(CSN / "codexglue_dummy_gz")
    for language in languages:
        (root / language).mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            with gzip.open(dummy / language / f"{language}_{split}_0.jsonl.gz", "rt", encoding="utf-8") as fh:
                (root / language / f"{split}.jsonl").write_text(fh.read(), encoding="utf-8")
    if python_valid is not None:
        shutil.copyfile(python_valid, root / "python" / "valid.jsonl")
    return root


@pytest.fixture(scope="module")
def codet5_small_dir(tmp_path_factory) -> Path:
    """codet5-small's exact architecture (60,492,288 parameters) with the real tokenizer."""
    _need(TOKENIZER_FILES)
    return save_codet5_folder(tmp_path_factory.mktemp("codet5-small"), codet5_small_config())


@pytest.fixture(scope="module")
def codexglue_valid(tmp_path_factory) -> Path:
    """python: CodeXGLUE code-to-text valid (120 records) + the dummy train split; javascript: the dummy."""
    valid = _need(CSN / "codexglue_code_to_text_python" / "valid.jsonl")
    return csn_folder(tmp_path_factory.mktemp("csn"), python_valid=valid)


def _load_base(folder: Path, **model_fields):
    from codecl.config import ModelConfig
    from codecl.model.base import load_base

    return load_base(ModelConfig(name=str(folder), **model_fields), progress=False)


def _pairs(root: Path, language: str, split: str, **data_fields):
    from codecl.config import DataConfig
    from codecl.data.tasks import clear_cache, load_pairs

    clear_cache()
    return load_pairs(DataConfig(source="local", path=str(root), **data_fields), language, split)


# ---------------------------------------------------------------- tests


def test_tokenizer_files_have_codet5s_special_ids():
    _need(TOKENIZER_FILES)
    vocab, _ = _reference_tables()
    assert len(vocab) == 32_000
    assert [vocab[t] for t in ("<pad>", "<s>", "</s>", "<unk>", "<mask>")] == [PAD, BOS, EOS, UNK, MASK]


def test_exact_codet5_small_loads_through_codecl(codet5_small_dir):
    """The folder loads via model.name (a pinned model.revision is ignored for a local folder):
    60,492,288 parameters, the tokenizer's 32,100 ids match the embedding rows, T5's special ids agree."""
    model, tokenizer, info = _load_base(codet5_small_dir, revision="b1ee9570c289f21b5922b9c768a1ce12957bf968")
    assert info.parameters == 60_492_288 and info.path == str(codet5_small_dir)
    assert type(tokenizer).__name__.startswith("RobertaTokenizer")
    assert len(tokenizer) == model.config.vocab_size == 32_100
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (PAD, BOS, EOS, UNK)
    assert (model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id) == (PAD, EOS, PAD)
    assert tokenizer.model_max_length == 512 and not any(p.requires_grad for p in model.parameters())


def test_csn_records_tokenise_as_the_hub_tokenizer(codet5_small_dir):
    """CodeSearchNet pairs (codecl's cleaning) encode with codecl's tokenizer exactly as the reference
    BPE: <s> ... </s> on both sides; labels end with </s> (id 2) and hold no pad id; a padded batch
    pads inputs with 0 and masks label padding with -100; a reference decodes back to itself."""
    from codecl.data.batching import IGNORE_INDEX, encode_pairs, pad_batch

    _, tokenizer, _ = _load_base(codet5_small_dir)
    root = csn_folder(codet5_small_dir.parent / "csn-dummy")
    for language in ("python", "javascript"):
        pairs = _pairs(root, language, "train")
        enc = encode_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs], 512, 512)
        references = [reference_ids(p.target) for p in pairs]
        assert (enc.truncated_sources, enc.truncated_targets) == (0, sum(len(r) > 512 for r in references))
        for pair, src, tgt, ref in zip(pairs, enc.source_ids, enc.target_ids, references):
            assert src == reference_ids(pair.source) and PAD not in tgt and tgt[0] == BOS
            if len(ref) > 512:  # cut: the first 512 labels, no </s>
                assert tgt == ref[:512] and EOS not in tgt
                continue
            assert tgt == ref and tgt[-1] == EOS and tgt.count(EOS) == 1
            assert tokenizer.decode(tgt, skip_special_tokens=True) == pair.target  # exact match sees the code as it is
        batch = pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)
        lengths = torch.tensor([len(t) for t in enc.target_ids])
        label_pad = torch.arange(batch["labels"].shape[1])[None, :] >= lengths[:, None]
        assert label_pad.any() and (batch["labels"][label_pad] == IGNORE_INDEX).all()
        assert not (batch["labels"] == PAD).any()
        assert (batch["input_ids"][batch["attention_mask"] == 0] == PAD).all() and (batch["attention_mask"] == 0).any()
    # a known string, by hand: the BPE pieces of a one-line function
    assert tokenizer.convert_ids_to_tokens(tokenizer("def f(x): return x")["input_ids"]) == [
        "<s>", "def", "Ġf", "(", "x", "):", "Ġreturn", "Ġx", "</s>"]


def test_512_token_truncation_is_counted_and_long_references_exist(codexglue_valid, codet5_small_dir):
    """CodeXGLUE python valid with the real tokenizer: a sizeable share of references is over 256
    tokens (so seed-paper needs its 512 budget) and some are over 512; every cut is counted, a cut
    reference keeps exactly max_target_tokens labels and no </s>."""
    from codecl.data.batching import encode_pairs

    _, tokenizer, _ = _load_base(codet5_small_dir)
    pairs = _pairs(codexglue_valid, "python", "valid")
    lengths = [len(reference_ids(p.target)) for p in pairs]
    over_256, over_512 = sum(n > 256 for n in lengths), sum(n > 512 for n in lengths)
    assert len(pairs) == 110  # 120 records, 10 dropped by cleaning
    assert over_256 / len(pairs) > 0.2 and over_512 > 0  # measured: 30/110 (27%) over 256, 8/110 over 512, longest 966
    sources, targets = [p.source for p in pairs], [p.target for p in pairs]
    for limit, expected in ((512, over_512), (256, over_256)):
        enc = encode_pairs(tokenizer, sources, targets, 512, limit)
        assert enc.truncated_targets == expected and enc.truncated_sources == 0
        cut = [ids for ids, n in zip(enc.target_ids, lengths) if n > limit]
        assert all(len(ids) == limit and EOS not in ids for ids in cut)
    enc = encode_pairs(tokenizer, sources, targets, 64, 512)  # descriptions: the longest is 78 tokens
    assert enc.truncated_sources == sum(len(reference_ids(s)) > 64 for s in sources) >= 1
    assert all(len(ids) <= 64 and ids[-1] == EOS for ids in enc.source_ids)


def test_seed_paper_method_on_exact_codet5_small_trains_and_generates(codet5_small_dir):
    """seed-paper's hybrid (LoRA r=16 + an identity block after encoder layer 6) on the exact
    architecture with a real-tokenizer batch: the block leaves the output unchanged at init, gets
    gradients, and generation runs through the inserted block."""
    from codecl.config import load_config
    from codecl.data.batching import encode_pairs, pad_batch
    from codecl.methods.continual import ContinualModel

    base, tokenizer, info = _load_base(codet5_small_dir)
    pairs = _pairs(csn_folder(codet5_small_dir.parent / "csn-hybrid"), "python", "train")[:2]
    enc = encode_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs], 64, 48)
    batch = pad_batch(enc.source_ids, enc.target_ids, tokenizer.pad_token_id)
    with torch.no_grad():
        before = base(**batch).logits
    cm = ContinualModel(base, "hybrid", load_config("seed-paper").method, info)
    cm.add_task("python")
    cm.activate("python")
    cm.eval()
    with torch.no_grad():
        assert torch.allclose(cm(**batch).logits, before, atol=1e-4)  # identity block, LoRA B = 0
    cm.train()
    cm(**batch).loss.backward()
    block = cm.blocks["python"]
    assert sum(p.numel() for p in block.parameters()) == 3_146_752
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    cm.eval()
    generated = cm.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 2 and generated[0, 0].item() == PAD  # decoder starts from <pad>, as T5


@pytest.mark.slow
def test_seed_paper_cli_on_a_local_codet5_small_and_csn(tmp_path):
    """`codecl run --preset seed-paper` with the model and data swapped for local copies (the preset's
    hub revisions are ignored there): all four methods over python -> javascript, a valid run folder.
    A narrower T5 than codet5-small (same vocabulary, 6 layers so the block still follows layer 6)
    keeps it to about a minute on CPU; the tokenizer is the real one."""
    from transformers import T5Config

    from codecl.results import validate_run_dir

    config = T5Config(vocab_size=32_100, d_model=64, d_kv=16, d_ff=128, num_layers=6, num_decoder_layers=6, num_heads=4,
                      feed_forward_proj="relu", dropout_rate=0.1, decoder_start_token_id=PAD, pad_token_id=PAD,
                      eos_token_id=EOS, bos_token_id=BOS)
    model_dir = save_codet5_folder(tmp_path / "codet5-narrow", config)
    data_dir = csn_folder(tmp_path / "csn")
    out = tmp_path / "run"
    run_codecl("run", "--preset", "seed-paper", "--output-dir", str(out), "--quiet",
               "--set", f"model.name={model_dir}", "--set", "data.source=local", "--set", f"data.path={data_dir}",
               "--set", "data.max_train_examples=3", "--set", "data.max_valid_examples=3",
               "--set", "data.max_source_tokens=64", "--set", "data.max_target_tokens=96",
               "--set", "train.epochs=1", "--set", "train.batch_size=2",
               "--set", "eval.max_new_tokens=8", "--set", "eval.batch_size=4",
               cache=tmp_path / "cache", timeout=600)
    results = validate_run_dir(out, complete=True)
    assert [r["method"] for r in results["runs"]] == ["lora", "full_layer", "hybrid", "hybrid_shared"]
    assert all(r["stages"] == ["base", "python", "javascript"] for r in results["runs"])
    assert results["base_model"]["name"] == str(model_dir)
    assert results["config"]["data"]["source"] == "local" and results["config"]["model"]["name"] == str(model_dir)
