"""Regressions found by a hostile pass over user tasks (`--tasks NAME=PATH`), orders and routing."""
import csv
import gzip
import json

import pytest

from codecl.config import DataConfig, UserTaskConfig, load_config
from codecl.data.tasks import clear_cache, load_pairs
from codecl.data.usertasks import task_info
from codecl.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _fresh():
    clear_cache()
    yield
    clear_cache()


def _rows(prefix, n, **extra):
    return [{"input": f"{prefix} description {i}", "target": f"def {prefix}_{i}(x):\n    return x + {i}", **extra} for i in range(n)]


def _cfg(name, **spec):
    return DataConfig(tasks={name: UserTaskConfig(**spec)})


def test_csv_with_a_bom_quoted_newlines_and_extra_columns(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8-sig") as fh:  # as spreadsheets save "CSV UTF-8"
            writer = csv.writer(fh)
            writer.writerow(["input", "target", "notes"])
            for row in _rows(split, n):
                writer.writerow([row["input"], row["target"], "ignored, with a comma"])
    cfg = _cfg("sheet", path=str(tmp_path))
    pairs = load_pairs(cfg, "sheet", "train")
    assert len(pairs) == 4 and all("\n" in p.target and not p.source.startswith("\ufeff") for p in pairs)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json"])
def test_jsonl_and_json_with_a_utf8_bom(tmp_path, suffix):
    for split, n in (("train", 3), ("test", 2)):
        rows = _rows(split, n)
        text = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
        data = "\ufeff".encode() + text.encode()
        path = tmp_path / f"{split}{suffix}"
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert len(load_pairs(_cfg("bom", path=str(tmp_path)), "bom", "train")) == 3


def test_row_language_not_registered_is_a_data_error_naming_file_line_and_field(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("a", 2, language="cobol")))
    (tmp_path / "test.jsonl").write_text(json.dumps(_rows("b", 1)[0]) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: field 'language' is 'cobol', not one of python, .* data.tasks.ts.language"):
        load_pairs(_cfg("ts", path=str(tmp_path)), "ts", "train")


def test_capitalised_row_language_is_the_language(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("a", 2, language="Python ")))
    (tmp_path / "test.jsonl").write_text(json.dumps(_rows("b", 1, language="python")[0]) + "\n")
    cfg = _cfg("cap", path=str(tmp_path))
    assert task_info(cfg, "cap").language == "python"
    assert {p.language for p in load_pairs(cfg, "cap", "test")} == {"python"}


def test_empty_user_task_names_its_own_settings_not_data_path(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.csv").write_text("input,target\n")  # header only
    with pytest.raises(DataError, match=r"no hdr test pairs in .* check data.tasks.hdr \(its path's test file"):
        load_pairs(_cfg("hdr", path=str(tmp_path)), "hdr", "test")


def test_a_comma_inside_a_task_path_is_named_not_an_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks: 'b' is no task — the comma before it split the entry 'mine=.*a'"):
        load_config("smoke", tasks=[f"mine={tmp_path}/a", "b"])
    # a built-in language or a defined task after NAME=PATH is fine
    assert load_config("smoke", tasks=[f"mine={tmp_path}", "python"]).tasks == ("mine", "python")


def _write_bom_tasks(root):
    """`sheet`: CSV saved by a spreadsheet (BOM, quoted newlines, an extra column); `bom`: JSONL with a BOM."""
    for split, n in (("train", 12), ("test", 4)):
        (root / "sheet").mkdir(parents=True, exist_ok=True)
        with open(root / "sheet" / f"{split}.csv", "w", newline="", encoding="utf-8-sig") as fh:
            writer = csv.writer(fh)
            writer.writerow(["input", "target", "notes"])
            for row in _rows(f"s{split}", n):
                writer.writerow([row["input"], row["target"], "x"])
        (root / "bom").mkdir(parents=True, exist_ok=True)
        rows = _rows(f"b{split}", n, language="JavaScript")
        rows = [dict(r, target=f"function {r['target'][4:].split('(')[0]}(x) {{\n  return x;\n}}") for r in rows]
        (root / "bom" / f"{split}.jsonl").write_bytes("\ufeff".encode() + "".join(json.dumps(r) + "\n" for r in rows).encode())


@pytest.mark.slow
def test_cli_bom_tasks_two_orders_routed_and_export_records_the_order(tmp_path):
    from helpers import run_codecl

    from codecl.results import validate_run_dir

    _write_bom_tasks(tmp_path / "data")
    cache, out = tmp_path / "cache", tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--methods", "lora", "--tasks", f"sheet={tmp_path / 'data' / 'sheet'},bom={tmp_path / 'data' / 'bom'}",
               "--orders", "2", "--set", "eval.routing=router", "--output-dir", str(out), "--quiet", cache=cache)
    results = validate_run_dir(out, complete=True)
    assert results["tasks"] == ["sheet", "bom"] and sorted(tuple(r["order"]) for r in results["runs"]) == [("bom", "sheet"), ("sheet", "bom")]
    assert all(len(r["routing_accuracy"]) == 3 and len(r["routed_scores"]["loss"]) == 3 for r in results["runs"])
    proc = run_codecl("export", str(out), "--method", "lora", "--task", "bom", "--output", str(tmp_path / "exp"), cache=cache)
    info = json.loads((tmp_path / "exp" / "codecl_export.json").read_text())
    exported = next(r for r in results["runs"] if r["order_index"] == info["order_index"])
    assert info["order"] == exported["order"], proc.stdout
    # a row language not registered stops the run with the data exit code, one line, no traceback
    bad = tmp_path / "data" / "ts"
    bad.mkdir()
    for split in ("train", "test"):
        (bad / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(split, 3, language="cobol")))
    proc = run_codecl("run", "--preset", "smoke", "--methods", "lora", "--tasks", f"ts={bad}", "--output-dir", str(tmp_path / "r2"),
                      "--quiet", cache=cache, check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "field 'language' is 'cobol'" in proc.stderr


def test_a_file_whose_name_names_no_split_is_not_ignored(tmp_path):
    from codecl.config import DataConfig, UserTaskConfig
    from codecl.data.tasks import clear_cache, load_pairs
    from codecl.errors import DataError

    clear_cache()
    for name in ("train.jsonl", "testing.jsonl"):
        (tmp_path / name).write_text('{"input": "a b", "target": "x = 1"}\n')
    with pytest.raises(DataError, match=r"testing.jsonl: task 'm' has split files .* whose name names no split"):
        load_pairs(DataConfig(tasks={"m": UserTaskConfig(path=str(tmp_path))}), "m", "train")


def test_csv_that_is_not_utf8_is_named(tmp_path):
    from codecl.config import DataConfig, UserTaskConfig
    from codecl.data.tasks import clear_cache, load_pairs
    from codecl.errors import DataError

    clear_cache()
    (tmp_path / "train.csv").write_bytes("input,target\ncaf\xe9 au lait,x = 1\n".encode("latin-1"))
    (tmp_path / "test.csv").write_text("input,target\na,b\n")
    with pytest.raises(DataError, match=r"train.csv: not UTF-8 text"):
        load_pairs(DataConfig(tasks={"c": UserTaskConfig(path=str(tmp_path))}), "c", "train")
