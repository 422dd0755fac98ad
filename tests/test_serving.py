"""Serving (`codecl.serve`): the Python API, `codecl generate` and the HTTP server against a real smoke run.

The run is produced once (a real `codecl run` subprocess, hybrid_shared only: LoRA adapters and a
shared block, the case where loading order matters). The "run's evaluation" is recomputed by the
path `codecl.experiment` takes: a fresh base, the modules loaded in training order, `generate_codes`
on the validation prompts; the served code must equal it, and must score what results.json records.
"""
import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from codecl.errors import ConfigError, UnknownLanguageError
from helpers import codecl_env, run_codecl

METHOD = "hybrid_shared"
LANGUAGES = ["python", "javascript"]


def _env(cache) -> dict:
    return codecl_env(cache)


def codecl(*args, cache, check=True, stdin=None):
    return run_codecl(*args, cache=cache, check=check, stdin=stdin, timeout=600)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    codecl("run", "--preset", "smoke", "--methods", METHOD, "--output-dir", str(out), "--quiet", cache=cache)
    return out


@pytest.fixture(scope="module")
def in_cache(cache):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:  # in-process loads find the run's embedded base in the module's cache
        mp.setenv("CODECL_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generator(run_dir, in_cache):
    import codecl

    return codecl.load(run_dir)


@pytest.fixture(scope="module")
def evaluation(run_dir, in_cache):
    """{language: (validation prompts, codes)} as the run's last-stage evaluation produces them."""
    from codecl.config import from_dict
    from codecl.data.tasks import load_pairs
    from codecl.evaluation.generate import generate_codes
    from codecl.experiment import pick_device
    from codecl.methods.continual import ContinualModel
    from codecl.model.base import load_base

    cfg = from_dict(json.loads((run_dir / "results.json").read_text())["config"])
    base, tokenizer, info = load_base(cfg.model, cfg, progress=False)
    cm = ContinualModel(base, METHOD, cfg.method, info)
    for task in cfg.tasks:
        cm.load_task(task, run_dir / METHOD / "seed-42" / task)
    device = pick_device(cfg.train.device)
    cm.to(device)
    out = {}
    for language in cfg.tasks:
        cm.activate(language)
        prompts = [p.source for p in load_pairs(cfg.data, language, cfg.eval.split)]
        out[language] = (prompts, generate_codes(cm, tokenizer, prompts, cfg.data.max_source_tokens, cfg.eval, device, False))
    return out


# ---------------------------------------------------------------- Python API


def test_load_picks_the_run_and_its_languages(generator):
    assert generator.method == METHOD and generator.seed == 42
    assert generator.tasks == LANGUAGES


def test_api_reproduces_the_runs_evaluation(generator, evaluation, run_dir):
    from codecl.evaluation.metrics import score_all

    results = json.loads((run_dir / "results.json").read_text())
    final = results["runs"][0]["scores"]
    for j, language in enumerate(LANGUAGES):
        prompts, expected = evaluation[language]
        codes = generator.generate_batch(prompts, language)
        assert codes == expected, language
        assert any(codes), "the smoke model should write something"
        for metric, value in score_all(codes, [p.target for p in _references(run_dir, language)], language).items():
            if metric in final:
                assert value == pytest.approx(final[metric][-1][j]), (language, metric)


def _references(run_dir, language):
    from codecl.config import from_dict
    from codecl.data.tasks import load_pairs

    cfg = from_dict(json.loads((run_dir / "results.json").read_text())["config"])
    return load_pairs(cfg.data, language, cfg.eval.split)


def test_languages_use_their_own_modules(generator, evaluation):
    prompts, python_codes = evaluation["python"]
    assert generator.generate_batch(prompts, "javascript") != python_codes


def test_generate_one_and_max_new_tokens(generator, evaluation):
    prompts, codes = evaluation["javascript"]
    prompt = next(p for p, c in zip(prompts, codes) if len(c) > 10)  # the tiny smoke model writes nothing for some
    code = generator.generate(prompt, "javascript")
    assert code == generator.generate_batch([prompt], "javascript")[0]
    short = generator.generate(prompt, "javascript", max_new_tokens=2)
    assert short != code and len(short) < len(code)  # 2 of the run's 24 new tokens
    with pytest.raises(ConfigError, match="max_new_tokens must be a positive integer"):
        generator.generate(prompt, "javascript", max_new_tokens=0)


def test_unknown_language_lists_the_known_ones(generator):
    with pytest.raises(UnknownLanguageError, match="'rust'; known: python, javascript") as info:
        generator.generate("Add two numbers.", "rust")
    assert info.value.exit_code == 2


def test_load_refuses_a_method_that_was_not_run(run_dir, in_cache):
    import codecl

    with pytest.raises(ConfigError, match="method 'lora' has no trained modules in this run; available: hybrid_shared"):
        codecl.load(run_dir, method="lora")


def test_pick_run_prefers_finished_runs_with_the_best_bleu():
    from codecl.serve.generator import pick_run

    def run(method, seed, bleu, stages=3):
        return {"method": method, "seed": seed, "stages": ["base", "python", "javascript"][:stages], "final_average": {"bleu": bleu}}

    results = {"tasks": ["python", "javascript"],
               "runs": [run("lora", 42, 0.2), run("hybrid", 42, 0.3), run("hybrid", 43, 0.25), run("full_layer", 42, 0.9, stages=2)]}
    assert (pick_run(results)["method"], pick_run(results)["seed"]) == ("hybrid", 42)
    assert pick_run(results, seed=43)["method"] == "hybrid"
    assert pick_run(results, method="lora")["seed"] == 42
    with pytest.raises(ConfigError, match="seed 7 has no trained modules for lora; available: 42"):
        pick_run(results, method="lora", seed=7)


# ---------------------------------------------------------------- baselines: every registered method's run serves

BASELINES = ["sequential_ft", "joint", "replay", "ewc", "olora"]


def _tiny_shared(method):
    from codecl.config import LoraConfig, MethodConfig
    from codecl.methods.build import build_model
    from helpers import make_base, tiny_config

    base, info = make_base(tiny_config())
    return build_model(base, method, MethodConfig(lora=LoraConfig(rank=4, alpha=8, dropout=0.0)), info)


@pytest.mark.parametrize("method", ["sequential_ft", "replay"])
def test_single_weights_load_only_the_last_stage(method, tmp_path):
    import torch

    trained = _tiny_shared(method)
    for task in LANGUAGES:
        trained.add_task(task)
        with torch.no_grad():
            for _, p in trained.task_parameters(task):
                p.add_(torch.randn_like(p) * 0.1)  # each stage leaves different weights
        trained.save_task(task, tmp_path / task)
    (tmp_path / "python" / "manifest.json").unlink()  # a stage that is not read cannot fail the load
    served = _tiny_shared(method)
    served.load_stages(tmp_path, LANGUAGES)
    assert served.tasks == ["javascript"]
    for (name, got), (_, want) in zip(served.task_parameters("javascript"), trained.task_parameters("javascript")):
        assert torch.equal(got, want), name


def test_per_task_methods_load_every_stage(tmp_path):
    from codecl.errors import CheckpointError

    trained = _tiny_shared("olora")
    for task in LANGUAGES:
        trained.add_task(task)
        trained.save_task(task, tmp_path / task)
    served = _tiny_shared("olora")
    served.load_stages(tmp_path, LANGUAGES)
    assert served.tasks == LANGUAGES
    (tmp_path / "python" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="python"):
        _tiny_shared("olora").load_stages(tmp_path, LANGUAGES)


def test_a_joint_run_serves_every_task():
    from codecl.serve.generator import served_languages

    results = {"tasks": LANGUAGES + ["java"]}
    assert served_languages(results, {"stages": ["base", "joint"]}) == ["python", "javascript", "java"]
    assert served_languages(results, {"stages": ["base", "python"]}) == ["python"]


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, cache):
    """Every baseline on the smoke preset; a larger learning rate so that the trained weights visibly
    change the tiny model's greedy outputs (the served code must come from the trained weights)."""
    out = tmp_path_factory.mktemp("runs") / "baselines"
    codecl("run", "--preset", "smoke", "--methods", ",".join(BASELINES), "--set", "train.lr=0.01", "--output-dir", str(out),
           "--quiet", cache=cache)
    return out


def _codes(model, cfg, tokenizer, activate) -> dict[str, list[str]]:
    """{language: codes on the validation prompts}, `activate(model, language)` before each."""
    from codecl.data.tasks import load_pairs
    from codecl.evaluation.generate import generate_codes
    from codecl.experiment import pick_device

    device = pick_device(cfg.train.device)
    model.to(device)
    out = {}
    for language in cfg.tasks:
        activate(model, language)
        prompts = [p.source for p in load_pairs(cfg.data, language, cfg.eval.split)]
        out[language] = generate_codes(model, tokenizer, prompts, cfg.data.max_source_tokens, cfg.eval, device, False)
    return out


def _rebuilt(run_dir, method, cfg, stages):
    """The model as `codecl.experiment` rebuilds it on resume: every stage's folder loaded in order."""
    from codecl.methods.build import build_model
    from codecl.model.base import load_base

    base, tokenizer, info = load_base(cfg.model, cfg, progress=False)
    model = build_model(base, method, cfg.method, info)
    for stage in stages:
        model.load_task(stage, run_dir / method / "seed-42" / stage)
    return model, tokenizer


@pytest.mark.slow
def test_every_baseline_serves_what_its_evaluation_scored(baseline_dir, in_cache):
    import torch

    import codecl
    from codecl.config import from_dict
    from codecl.evaluation.metrics import score_all
    from codecl.model.base import load_base

    results = json.loads((baseline_dir / "results.json").read_text())
    cfg = from_dict(results["config"])
    base, tokenizer, _ = load_base(cfg.model, cfg, progress=False)
    bare = _codes(base, cfg, tokenizer, lambda m, language: None)
    for run in results["runs"]:
        method, stages = run["method"], run["stages"][1:]
        model, tokenizer = _rebuilt(baseline_dir, method, cfg, stages)
        # evaluate_all's rule: a trained task with its own modules, any other with the last stage's
        expected = _codes(model, cfg, tokenizer, lambda m, language: m.activate(language if language in stages else stages[-1]))
        generator = codecl.load(baseline_dir, method=method)
        assert generator.tasks == LANGUAGES, method
        served = {language: generator.generate_batch(_prompts(cfg, language), language) for language in LANGUAGES}
        assert served == expected, method
        assert served != bare, f"{method}: the served code should come from trained weights, not the bare base"
        for j, language in enumerate(LANGUAGES):
            for metric, value in score_all(served[language], [p.target for p in _references(baseline_dir, language)], language).items():
                if metric in run["scores"]:
                    assert value == pytest.approx(run["scores"][metric][-1][j]), (method, language, metric)
        if method != "joint":  # what the first stage left alone is not what is served (olora: not its adapter alone)
            first, _ = _rebuilt(baseline_dir, method, cfg, stages[:1])
            first.activate("python")
            generator.generate_batch(["x"], "python")  # leaves the model as it serves python
            prompts = _prompts(cfg, "python")
            assert not torch.allclose(_logits(generator.model, tokenizer, prompts), _logits(first, tokenizer, prompts)), method


def _logits(model, tokenizer, prompts):
    """First decoder step's logits on `prompts` (on the CPU): finer than greedy codes on a tiny model."""
    import torch

    device = next(model.parameters()).device
    batch = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=32).to(device)
    start = torch.zeros((len(prompts), 1), dtype=torch.long, device=device)
    with torch.no_grad():
        return model(**batch, decoder_input_ids=start).logits.float().cpu()  # (B, 1, V)


def _prompts(cfg, language):
    from codecl.data.tasks import load_pairs

    return [p.source for p in load_pairs(cfg.data, language, cfg.eval.split)]


@pytest.mark.slow
def test_cli_generate_and_describe_a_joint_run(baseline_dir, cache, in_cache):
    from codecl.serve import load

    generator = load(baseline_dir, method="joint")
    assert generator.describe()["methods"]["joint"]["languages"] == LANGUAGES
    prompt = _prompts(generator.cfg, "javascript")[0]
    proc = codecl("generate", str(baseline_dir), "--method", "joint", "--language", "javascript", prompt, cache=cache)
    assert proc.stdout == generator.generate(prompt, "javascript") + "\n"
    proc = codecl("generate", str(baseline_dir), "--method", "joint", "--language", "go", prompt, cache=cache, check=False)
    assert proc.returncode == 2 and "known: python, javascript" in proc.stderr


# ---------------------------------------------------------------- CLI


def test_cli_generate_prints_the_same_code(run_dir, cache, generator, evaluation, tmp_path):
    prompt = evaluation["python"][0][1]
    proc = codecl("generate", str(run_dir), "--method", METHOD, "--language", "python", prompt, cache=cache)
    assert proc.stdout == generator.generate(prompt, "python") + "\n"


def test_cli_generate_jsonl_in_and_out(run_dir, cache, generator, evaluation, tmp_path):
    lines = [{"prompt": p, "language": "javascript", "task_id": i} for i, p in enumerate(evaluation["javascript"][0][:3])]
    lines.insert(1, {"prompt": evaluation["python"][0][0]})  # takes --language
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    proc = codecl("generate", str(run_dir), "--input", str(path), "--language", "python", cache=cache)
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["prompt"] for o in out] == [line["prompt"] for line in lines]
    assert [o["language"] for o in out] == ["javascript", "python", "javascript", "javascript"]
    assert [o["code"] for o in out[0:1] + out[2:]] == generator.generate_batch([line["prompt"] for line in lines[0:1] + lines[2:]], "javascript")
    assert out[1]["code"] == generator.generate(lines[1]["prompt"], "python")
    assert out[0]["task_id"] == 0  # other fields pass through


def test_cli_generate_errors(run_dir, cache, tmp_path):
    proc = codecl("generate", str(run_dir), "--language", "rust", "Add two numbers.", cache=cache, check=False)
    assert proc.returncode == 2 and "known: python, javascript" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "language": "python"}\nnot json\n')
    proc = codecl("generate", str(run_dir), "--input", str(bad), cache=cache, check=False)
    assert proc.returncode == 3 and f"{bad}:2: not JSON" in proc.stderr
    proc = codecl("generate", str(run_dir), "Add two numbers.", cache=cache, check=False)
    assert proc.returncode == 2 and "--language is required" in proc.stderr


# ---------------------------------------------------------------- HTTP server


class Server:
    def __init__(self, run_dir, cache, log_path, *args):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "codecl", "serve", str(run_dir), "--port", "0", "--log-level", "warning", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=_env(cache))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            first = lines.get(timeout=180)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"the server printed no URL in 180 s; log: {log_path.read_text()[-2000:]}")
        assert "http://127.0.0.1:" in first, (first, log_path.read_text()[-2000:])
        self.url = first.split()[-1]
        for _ in range(100):  # the socket listens already; wait until the app answers
            try:
                if self.get("/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)

    def request(self, path, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get(self, path):
        return self.request(path)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(run_dir, cache, tmp_path_factory):
    server = Server(run_dir, cache, tmp_path_factory.mktemp("serve") / "server.log", "--max-batch", "8", "--max-wait-ms", "50")
    yield server
    server.stop()


def test_http_both_languages_answer_with_the_api_code(server, generator, evaluation):
    for language in LANGUAGES:
        prompt = evaluation[language][0][0]
        status, body = server.request("/v1/generate", {"language": language, "prompt": prompt})
        assert status == 200, body
        assert body["code"] == generator.generate(prompt, language)
        assert body["language"] == language and body["method"] == METHOD and body["latency_ms"] > 0
    status, body = server.request("/v1/generate", {"language": "python", "prompt": "Add two numbers.", "max_new_tokens": 2})
    assert status == 200 and isinstance(body["code"], str)


@pytest.mark.parametrize("payload, field", [
    ({"prompt": "Add two numbers.", "language": 5}, "language"),  # left out, the router picks it; present, it must be text
    ({"language": "python"}, "prompt"),
    ({"language": "python", "prompt": 5}, "prompt"),
    ({"language": "python", "prompt": "x", "max_new_tokens": "many"}, "max_new_tokens"),
    ({"language": "python", "prompt": "x", "max_new_tokens": 0}, "max_new_tokens"),
    ({"language": "python", "prompt": "x", "temperature": 0.7}, "temperature"),
])
def test_http_bad_body_is_400_naming_the_field(server, payload, field):
    status, body = server.request("/v1/generate", payload)
    assert status == 400
    assert body["error"]["param"] == field and f"{field}: " in body["error"]["message"]


def test_http_body_that_is_not_json_is_400(server):
    status, body = server.request("/v1/generate", raw=b"{not json")
    assert status == 400 and body["error"]["param"] == "body" and "JSON" in body["error"]["message"]


def test_http_unknown_language_is_404_listing_the_known_ones(server):
    status, body = server.request("/v1/generate", {"language": "rust", "prompt": "Add two numbers."})
    assert status == 404
    assert "python, javascript" in body["error"]["message"] and body["error"]["param"] == "language"


def test_http_oversize_prompt_is_413(server):
    status, body = server.request("/v1/generate", {"language": "python", "prompt": "x" * 4001})
    assert status == 413 and "4000" in body["error"]["message"]
    status, body = server.request("/v1/generate", {"language": "python", "prompt": "x" * 100_000})
    assert status == 413  # refused from Content-Length, before parsing


def test_http_tasks_and_health(server):
    status, body = server.get("/v1/tasks")
    assert status == 200 and body["languages"] == LANGUAGES and body["method"] == METHOD
    assert list(body["methods"]) == [METHOD] and body["methods"][METHOD]["languages"] == LANGUAGES
    status, body = server.get("/healthz")
    assert status == 200 and body["status"] == "ok" and body["languages"] == LANGUAGES


def test_http_concurrent_requests_are_batched(server, evaluation):
    before = server.get("/v1/stats")[1]
    prompts = (evaluation["python"][0] * 2)[:8]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: server.request("/v1/generate", {"language": "python", "prompt": p}), prompts))
    assert all(status == 200 for status, _ in answers)
    after = server.get("/v1/stats")[1]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 8 and batches < requests, after


# ---------------------------------------------------------------- OpenAI-compatible API (real model)


def _long_prompts(evaluation, language, k=2):
    """Validation prompts the smoke model writes more than a few tokens for."""
    prompts, codes = evaluation[language]
    return [p for p, c in zip(prompts, codes) if len(c) > 10][:k]


def test_http_openai_completions_match_the_api(server, generator, evaluation):
    status, body = server.get("/v1/models")
    assert status == 200 and [m["id"] for m in body["data"]] == [f"{METHOD}/{language}" for language in LANGUAGES] + [METHOD]  # METHOD: routed
    prompt = _long_prompts(evaluation, "javascript", 1)[0]
    full, short = generator.generate_records([prompt], "javascript")[0], generator.generate_records([prompt], "javascript", 2)[0]
    assert short.truncated and short.completion_tokens == 2
    for max_tokens, record in ((None, full), (2, short)):
        status, body = server.request("/v1/completions", {"model": f"{METHOD}/javascript", "prompt": prompt, "max_tokens": max_tokens,
                                                          "temperature": 0})
        assert status == 200, body
        choice = body["choices"][0]
        assert choice["text"] == record.text and choice["finish_reason"] == ("length" if record.truncated else "stop")
        assert body["usage"] == {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
                                 "total_tokens": record.prompt_tokens + record.completion_tokens}
    status, body = server.request("/v1/chat/completions", {"model": f"{METHOD}/javascript",
                                                           "messages": [{"role": "user", "content": prompt}], "max_tokens": 2})
    assert status == 200 and body["choices"][0]["message"] == {"role": "assistant", "content": short.text}
    assert body["choices"][0]["finish_reason"] == "length"
    status, body = server.request("/v1/completions", {"model": f"{METHOD}/python", "prompt": "x", "temperature": 0.8})
    assert status == 400 and body["error"]["param"] == "temperature" and "temperature" in body["error"]["message"]


def test_http_mixed_budgets_in_one_batch_give_what_each_gets_alone(server, generator, evaluation):
    prompts = _long_prompts(evaluation, "python")
    assert prompts, "the smoke model should write something for some python prompt"
    jobs = [(prompts[0], 3), (prompts[-1], None), (prompts[0], 24), (prompts[-1], 1)]
    alone = [generator.generate_records([p], "python", k)[0] for p, k in jobs]
    before = server.get("/v1/stats")[1]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: server.request("/v1/completions", {"model": f"{METHOD}/python", "prompt": job[0],
                                                                                "max_tokens": job[1]}), jobs))
    after = server.get("/v1/stats")[1]
    assert after["batches"] - before["batches"] < len(jobs), after  # different budgets shared a batch
    for (status, body), record in zip(answers, alone):
        assert status == 200 and body["choices"][0]["text"] == record.text
        assert body["choices"][0]["finish_reason"] == ("length" if record.truncated else "stop")
    assert alone[0].text != alone[2].text and alone[0].truncated  # the budgets matter for this prompt


def test_http_answers_name_no_local_path(server, run_dir, cache):
    for path in ("/openapi.json", "/healthz", "/v1/tasks", "/v1/models", "/v1/stats", "/nowhere"):
        request = urllib.request.Request(server.url + path)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
        for folder in (str(run_dir), str(cache), str(run_dir.parent)):
            assert folder not in text, (path, folder)


def test_openai_client_against_the_live_server(server, generator, evaluation):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == [f"{METHOD}/{language}" for language in LANGUAGES] + [METHOD]  # METHOD: routed
    prompt = _long_prompts(evaluation, "python", 1)[0]
    record = generator.generate_records([prompt], "python", 4)[0]
    completion = client.completions.create(model=f"{METHOD}/python", prompt=prompt, max_tokens=4, temperature=0)
    assert completion.choices[0].text == record.text and completion.choices[0].finish_reason == ("length" if record.truncated else "stop")
    assert completion.usage.completion_tokens == record.completion_tokens
    chat = client.chat.completions.create(model=f"{METHOD}/python", messages=[{"role": "user", "content": prompt}], max_tokens=4)
    assert chat.choices[0].message.content == record.text and chat.choices[0].message.role == "assistant"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=f"{METHOD}/python", prompt=prompt, temperature=0.5)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="lora/rust", prompt=prompt)


# ---------------------------------------------------------------- micro-batcher (no model)


def _fake_batcher(max_batch, max_wait_ms=20.0, fail_on=None):
    from codecl.serve.batcher import MicroBatcher

    calls = []

    def generate_batch(prompts, language, max_new_tokens):
        calls.append((language, max_new_tokens, list(prompts)))
        if fail_on in prompts:
            raise RuntimeError("boom")
        time.sleep(0.01)
        return [f"{language}:{p}" for p in prompts]

    return MicroBatcher(generate_batch, max_batch=max_batch, max_wait_ms=max_wait_ms), calls


def test_batcher_groups_by_language_and_keeps_answers_apart():
    async def main():
        batcher, calls = _fake_batcher(max_batch=4)
        await batcher.start()
        jobs = [batcher.submit(f"p{i}", "python" if i % 2 else "javascript") for i in range(10)]
        answers = await asyncio.gather(*jobs)
        await batcher.stop()
        return batcher, calls, answers

    batcher, calls, answers = asyncio.run(main())
    assert answers == [f"{'python' if i % 2 else 'javascript'}:p{i}" for i in range(10)]
    for language, _, prompts in calls:  # one language per call, never more than max_batch
        assert len(prompts) <= 4 and all((int(p[1:]) % 2 == 1) == (language == "python") for p in prompts)
    assert batcher.stats.requests == 10 and batcher.stats.batches == len(calls) < 10


def test_batcher_off_and_errors_reach_every_request_of_the_batch():
    async def main():
        batcher, calls = _fake_batcher(max_batch=1)
        await batcher.start()
        plain = await asyncio.gather(*[batcher.submit(f"p{i}", "python") for i in range(3)])
        await batcher.stop()
        failing, _ = _fake_batcher(max_batch=4, fail_on="bad")
        await failing.start()
        outcomes = await asyncio.gather(failing.submit("bad", "go"), failing.submit("ok", "go"), return_exceptions=True)
        await failing.stop()
        return batcher, calls, plain, outcomes

    batcher, calls, plain, outcomes = asyncio.run(main())
    assert plain == ["python:p0", "python:p1", "python:p2"] and [len(c[2]) for c in calls] == [1, 1, 1]
    assert batcher.stats.batches == 3
    assert all(isinstance(o, RuntimeError) for o in outcomes)
