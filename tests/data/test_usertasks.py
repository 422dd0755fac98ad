"""Tasks from the user's own data (`data.tasks`, `--tasks NAME=PATH`): formats, splits, cleaning, errors."""
import csv
import json
import re

import pytest

from codecl.config import DataConfig, UserTaskConfig, load_config
from codecl.data.tasks import clear_cache, load_pairs, load_pairs_with_stats
from codecl.data.usertasks import task_info
from codecl.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _fresh():
    clear_cache()
    yield
    clear_cache()


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(prefix, n, **extra):
    return [{"input": f"{prefix} description {i}", "target": f"def {prefix}_{i}(x):\n    return x + {i}", **extra} for i in range(n)]


def _cfg(name, **spec):
    return DataConfig(tasks={name: UserTaskConfig(**spec)})


def test_folder_of_jsonl_splits(tmp_path):
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        _jsonl(tmp_path / f"{split}.jsonl", _rows(split, n))
    cfg = _cfg("mine", path=str(tmp_path))
    assert [len(load_pairs(cfg, "mine", s)) for s in ("train", "valid", "test")] == [6, 2, 3]
    pair = next(p for p in load_pairs(cfg, "mine", "test") if p.source.endswith(" 0"))  # pairs come in a hash-of-id order
    assert pair.source == "test description 0" and pair.target.startswith("def test_0") and pair.language == "python"
    assert task_info(cfg, "mine").language == "python" and task_info(cfg, "mine").direction == "nl_to_code"


def test_csv_and_parquet_and_field_mapping(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    with open(tmp_path / "train.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["q", "a"])
        writer.writeheader()
        for i in range(4):
            writer.writerow({"q": f"say {i}, with a comma", "a": f"console.log({i});\nreturn {i};"})
    table = pyarrow.table({"q": ["show 9", "show 10"], "a": ["console.log(9);", "console.log(10);"]})
    pq.write_table(table, tmp_path / "test.parquet")
    cfg = _cfg("js", path=str(tmp_path), input_field="q", target_field="a", language="javascript")
    train = load_pairs(cfg, "js", "train")
    assert [p.source for p in train if p.source.startswith("say 1")] == ["say 1, with a comma"]
    assert any("\n" in p.target for p in train)  # a quoted multi-line CSV field stays one example
    assert sorted(p.target for p in load_pairs(cfg, "js", "test")) == ["console.log(10);", "console.log(9);"]
    assert task_info(cfg, "js").language == "javascript"


def test_single_file_is_split_deterministically(tmp_path):
    _jsonl(tmp_path / "all.jsonl", _rows("a", 200))
    cfg = _cfg("one", path=str(tmp_path / "all.jsonl"), split_fractions=(0.8, 0.1, 0.1))
    sizes = [len(load_pairs(cfg, "one", s)) for s in ("train", "valid", "test")]
    assert sum(sizes) == 200 and 140 <= sizes[0] <= 180 and sizes[1] > 0 and sizes[2] > 0
    ids = {s: {p.id for p in load_pairs(cfg, "one", s)} for s in ("train", "valid", "test")}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["valid"])
    clear_cache()
    assert {p.id for p in load_pairs(cfg, "one", "test")} == ids["test"]  # the same split on every read


def test_cleaning_drops_empty_duplicates_and_leaks(tmp_path):
    train = _rows("t", 4) + [{"input": "  ", "target": "x"}, _rows("t", 1)[0]]
    test = [_rows("t", 1)[0] | {"input": "other words"}, *_rows("z", 2)]  # its target is a training target: a leak
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "test.jsonl", test)
    pairs, stats = load_pairs_with_stats(_cfg("c", path=str(tmp_path)), "c", "train")
    assert len(pairs) == 4 and stats["dropped"] == {"duplicate": 1, "empty": 1}
    pairs, stats = load_pairs_with_stats(_cfg("c", path=str(tmp_path)), "c", "test")
    assert len(pairs) == 2 and stats["dropped"] == {"target_in_train": 1}
    clear_cache()
    assert len(load_pairs(_cfg("c", path=str(tmp_path), clean=False), "c", "test")) == 3  # switchable


def test_row_language_field_sets_the_task_language_and_must_agree(tmp_path):
    _jsonl(tmp_path / "train.jsonl", _rows("r", 3, language="ruby"))
    _jsonl(tmp_path / "test.jsonl", _rows("q", 2, language="ruby"))
    assert task_info(_cfg("rb", path=str(tmp_path)), "rb").language == "ruby"
    clear_cache()
    _jsonl(tmp_path / "test.jsonl", _rows("q", 1, language="ruby") + _rows("w", 1, language="go"))
    with pytest.raises(DataError, match=r"test.jsonl:2: language 'go' but task 'rb' is 'ruby'"):
        load_pairs(_cfg("rb", path=str(tmp_path)), "rb", "test")


@pytest.mark.parametrize("bad_line, message", [
    ('{"input": "x"}', r"train.jsonl:3: no field 'target' \(fields: input\) — set data.tasks.m.target_field"),
    ('{"input": "x", "target": 5}', r"train.jsonl:3: field 'target' is int, not text"),
    ('{"input": "x", "target": ', r"train.jsonl:3: not valid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad_line, message):
    rows = _rows("a", 2)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + bad_line + "\n")
    _jsonl(tmp_path / "test.jsonl", _rows("b", 1))
    with pytest.raises(DataError, match=message):
        load_pairs(_cfg("m", path=str(tmp_path)), "m", "train")


def test_missing_train_file_and_missing_path(tmp_path):
    _jsonl(tmp_path / "test.jsonl", _rows("b", 1))
    with pytest.raises(DataError, match="has test files but no train file"):
        load_pairs(_cfg("m", path=str(tmp_path)), "m", "train")
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(_cfg("m", path=str(tmp_path / "nope")), "m", "train")


def test_codesearchnet_records_both_directions(tmp_path, shared_data):
    source = next(shared_data.rglob("*python*.jsonl"), None) or next(shared_data.rglob("*.jsonl"))
    lines = source.read_text().splitlines()
    if not json.loads(lines[0]).get("code"):
        pytest.skip(f"{source} is not CodeSearchNet-format")
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:40]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[40:60]) + "\n")
    forward = load_pairs(_cfg("gen", path=str(tmp_path), format="codesearchnet", language="python"), "gen", "train")
    clear_cache()
    backward = load_pairs(_cfg("sum", path=str(tmp_path), format="codesearchnet", language="python", direction="code_to_nl"), "sum", "train")
    assert forward and [(p.source, p.target) for p in forward] == [(p.target, p.source) for p in backward]


def test_embedded_task_with_match_is_a_domain(tmp_path):
    cfg = load_config("smoke", overrides=["data.tasks.mail.embedded=true", "data.tasks.mail.language=python",
                                          "data.tasks.mail.match=[path=^(email|mailbox|smtplib|imaplib)]"])
    from dataclasses import replace

    uncapped = replace(cfg.data, max_train_examples=None)
    pairs = load_pairs(uncapped, "mail", "train")
    assert len(pairs) > 24 and all(re.search(r"/(email|mailbox|smtplib|imaplib)", p.id) for p in pairs)
    every = {p.id for p in load_pairs(uncapped, "python", "train")}
    assert {p.id for p in pairs} < every  # a part of the python corpus, not all of it
    assert len(load_pairs(cfg.data, "mail", "train")) == 24  # data.max_train_examples caps it like a language


def test_config_errors_are_one_line_and_name_the_field():
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides=["data.tasks.x.format=csv", "data.tasks.x.direction=sideways", "data.tasks.x.split_fractions=[0.5,0.5]"])
    text = str(err.value)
    assert "\n" not in text
    for part in ("data.tasks.x.path the task needs exactly one of path, hub_dataset or embedded", "data.tasks.x.format must be pairs or codesearchnet",
                 "data.tasks.x.direction must be one of", "data.tasks.x.split_fractions must be three"):
        assert part in text
    with pytest.raises(ConfigError, match="data.tasks name 'python' must be"):
        load_config("smoke", overrides=["data.tasks.python.path=/x"])
    with pytest.raises(ConfigError, match=r"data.tasks.y.match .*bad regular expression"):
        load_config("smoke", overrides=["data.tasks.y.path=/x", "data.tasks.y.match=[path=(]"])
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['nope'\]"):
        load_config("smoke", tasks=["python", "nope"])


def test_name_equals_path_on_the_command_line(tmp_path):
    cfg = load_config("smoke", tasks=["python", f"mine={tmp_path}"])
    assert cfg.tasks == ("python", "mine") and cfg.data.tasks["mine"].path == str(tmp_path)
    with pytest.raises(ConfigError, match="must be NAME=PATH"):
        load_config("smoke", tasks=["python", "=x"])
