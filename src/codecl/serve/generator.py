"""`codecl.load(run_dir)`: a finished run's frozen base and trained modules, loaded once, as a `Generator`.

Any registered method's run folder loads: the model is built by `codecl.methods.build.build_model`
and filled by the learner's own `load_stages`. Per-task methods load every stage's modules in
training order (for `hybrid_shared` the shared block is the one the last trained task saved: the
model as it stood when the run finished) and switch them per language; olora activates all its
adapters (summed) for every language; single-weights baselines (sequential_ft, replay, ewc, joint)
load the last stage's weights once (joint: its `joint` stage) and serve every language with them.

Generation goes through the run's own evaluation path: `generate_with_flags` (what `generate_codes` runs) with the run's `eval`
config and `data.max_source_tokens`, the language's modules activated as `evaluate_all` activates
them, on the run's device. `generate_batch` over the run's validation prompts therefore returns exactly
the code the run scored after its last stage; a prompt alone or in another batch differs only by
masked padding (identical on the smoke and quickstart runs). Only `max_new_tokens` may change per call,
and, with greedy decoding (`eval.num_beams` 1), per prompt: `generate_records(prompts, language, [budgets])`
decodes prompts with different budgets in one batch, each row stopped at its own budget (greedy decoding
is prefix-consistent, so a row's output is the one it gets alone). `generate_records` also says, per
prompt, whether decoding stopped at the budget (`truncated`) and how many tokens went in and came out.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import deque
from pathlib import Path

from codecl.config import RunConfig, from_dict
from codecl.errors import AdapterMismatchError, CodeclError, ConfigError, UnknownLanguageError
from codecl.evaluation.generate import generate_with_flags
from codecl.fileio import verify_manifest
from codecl.methods.build import ContinualLearner, build_model
from codecl.model.base import load_base
from codecl.results import is_complete, is_joint, load_results, run_path


class Generator:
    """One method/seed of a run, every trained language's modules in memory; thread-safe (one model lock)."""

    def __init__(self, run_dir: Path, results: dict, run: dict, model: ContinualLearner, tokenizer, cfg: RunConfig, device):
        self.run_dir, self.results, self.run = Path(run_dir), results, run
        self.model, self.tokenizer, self.cfg, self.device = model, tokenizer, cfg, device
        self.languages = served_languages(results, run)
        self._lock = threading.Lock()  # activate() switches modules in place: one request batch at a time
        self.generated = 0
        """Prompts sent to the model so far (a request dropped before its batch never counts)."""

    @property
    def method(self) -> str:
        return self.run["method"]

    @property
    def seed(self) -> int:
        return self.run["seed"]

    @property
    def tasks(self) -> list[str]:
        """Languages the run trained, in training order (a joint run: every task of the run)."""
        return list(self.languages)

    def check_language(self, language: str) -> None:
        if language not in self.languages:
            raise UnknownLanguageError(language, self.tasks)

    def module_for(self, language: str) -> str:
        """What `activate` takes for `language`: its own modules if it has any, else the last stage's
        (a single-weights baseline's one set, loaded under its last stage's name) — `evaluate_all`'s rule."""
        return language if language in self.model.tasks else self.model.tasks[-1]

    def generate(self, prompt: str, language: str, max_new_tokens: int | None = None) -> str:
        """Code for one natural-language description."""
        return self.generate_batch([prompt], language, max_new_tokens)[0]

    def generate_batch(self, prompts: list[str], language: str, max_new_tokens: int | None = None) -> list[str]:
        """Code for every description, in input order, with `language`'s modules."""
        return [record.text for record in self.generate_records(prompts, language, max_new_tokens)]

    def generate_records(self, prompts: list[str], language: str,
                         max_new_tokens: int | None | list[int | None] = None) -> list["Generation"]:
        """`Generation`s for every description, in input order. `max_new_tokens`: one budget for all
        (None: the run's `eval.max_new_tokens`) or one per prompt."""
        if isinstance(prompts, str):
            raise ConfigError("generate_batch takes a list of prompts; use generate() for a single one")
        prompts = list(prompts)
        bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
        if bad is not None:
            raise ConfigError(f"prompts[{bad}] must be a string, got {type(prompts[bad]).__name__}")
        self.check_language(language)
        if isinstance(max_new_tokens, (list, tuple)):
            if len(max_new_tokens) != len(prompts):
                raise ConfigError(f"{len(max_new_tokens)} budgets for {len(prompts)} prompts")
            budgets = list(max_new_tokens)
        else:
            budgets = [max_new_tokens] * len(prompts)
        for budget in budgets:
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
                raise ConfigError(f"max_new_tokens must be a positive integer, got {budget!r}")
        budgets = [self.cfg.eval.max_new_tokens if b is None else b for b in budgets]
        if not prompts:
            return []
        with self._lock:
            self.generated += len(prompts)
            self.model.activate(self.module_for(language))
            keys = self._source_ids(prompts)
            if self.cfg.eval.num_beams == 1:
                try:
                    return self._generate_budgeted(prompts, budgets, keys)
                except _Unmapped:  # the model saw rows this module cannot map back: one budget at a time
                    pass
            records: list[Generation | None] = [None] * len(prompts)
            for budget in sorted(set(budgets)):
                idx = [i for i, b in enumerate(budgets) if b == budget]
                eval_cfg = dataclasses.replace(self.cfg.eval, max_new_tokens=budget)
                outputs = generate_with_flags(self.model, self.tokenizer, [prompts[i] for i in idx],
                                              self.cfg.data.max_source_tokens, eval_cfg, self.device, progress=False)
                for i, (text, cut) in zip(idx, outputs):
                    produced = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
                    records[i] = Generation(text, bool(cut), len(keys[i]), produced + (0 if cut else 1), budget)
            return records

    def _source_ids(self, prompts: list[str]) -> list[list[int]]:
        """The token ids the model gets for each prompt, as `generate_with_flags` encodes them."""
        from codecl.model.causal import prompt_format

        if (fmt := prompt_format(self.tokenizer)) is not None:
            return fmt.prompt_ids(self.tokenizer, prompts, self.cfg.data.max_source_tokens)[0]
        limit, eos = self.cfg.data.max_source_tokens, self.tokenizer.eos_token_id
        return [ids[: limit - 1] + [eos] if len(ids) > limit else ids for ids in self.tokenizer(prompts)["input_ids"]]

    def _generate_budgeted(self, prompts: list[str], budgets: list[int], keys: list[list[int]]) -> list["Generation"]:
        """One `generate_with_flags` call at the largest budget; each row stopped and cut at its own."""
        proxy = _Budgeted(self.model, keys, budgets, self.tokenizer)
        eval_cfg = dataclasses.replace(self.cfg.eval, max_new_tokens=max(budgets))
        outputs = generate_with_flags(proxy, self.tokenizer, prompts, self.cfg.data.max_source_tokens, eval_cfg,
                                      self.device, progress=False)
        if len(proxy.rows) != len(prompts):
            raise _Unmapped
        return [Generation(text, truncated=proxy.rows[i][0], prompt_tokens=len(keys[i]), completion_tokens=proxy.rows[i][1],
                           max_new_tokens=budgets[i]) for i, (text, _) in enumerate(outputs)]

    def route(self, prompts: list[str]) -> list[str]:
        """The served language each description is routed to when a request names none (`codecl.routing`):
        the run's `router.safetensors` (written by `eval.routing=router`), else a router learned now from the
        run's training inputs of every served language. Features come from the bare base (every module off)."""
        from codecl.routing import embed_rows

        router = self._router()
        keys = self._source_ids(list(prompts))
        with self._lock:
            self.model.activate(None)
            features = embed_rows(self.model.base, keys, self.tokenizer.pad_token_id, self.device, self.cfg.eval.batch_size)
        return router.route(features, [t for t in router.tasks if t in self.languages])

    def _router(self):
        if getattr(self, "_router_cache", None) is not None:
            return self._router_cache
        from codecl.routing import ROUTER_FILE, Router, embed_rows, input_rows

        path = self.run_dir / ROUTER_FILE
        router = None
        if path.is_file():
            router, extra = Router.load(path)
            if extra.get("base_fingerprint") not in (None, self.model.base_info.fingerprint) or not set(self.languages) <= set(router.tasks):
                router = None  # another base, or not every served language: learn it again
        if router is None:
            from codecl.data.batching import encode_pairs
            from codecl.data.tasks import load_pairs

            router = Router()
            with self._lock:
                self.model.activate(None)
                for task in self.languages:
                    pairs = load_pairs(self.cfg.data, task, "train")
                    encoded = encode_pairs(self.tokenizer, [p.source for p in pairs], [p.target for p in pairs],
                                           self.cfg.data.max_source_tokens, self.cfg.data.max_target_tokens)
                    router.learn(task, embed_rows(self.model.base, input_rows(encoded), self.tokenizer.pad_token_id, self.device,
                                                  self.cfg.eval.batch_size))
        self._router_cache = router
        return router

    def describe(self) -> dict:
        """The served method/seed and languages, the base, and every method of the run (no local paths: it is served over HTTP)."""
        methods = {}
        for run in self.results["runs"]:
            entry = methods.setdefault(run["method"], {"seeds": [], "languages": served_languages(self.results, run),
                                                       "final_average_bleu": {}})
            if run["seed"] not in entry["seeds"]:  # several task orders of one seed: listed once
                entry["seeds"].append(run["seed"])
            entry["final_average_bleu"][str(run["seed"])] = run.get("final_average", {}).get("bleu")
        base = {k: v for k, v in self.model.base_info.as_dict().items() if k != "path"}
        if isinstance(base.get("name"), str) and _is_local(base["name"]):  # a local save_pretrained folder: its name only
            base["name"] = Path(base["name"]).name
        return {"method": self.method, "seed": self.seed, "languages": self.tasks,
                "base_model": base, "max_source_tokens": self.cfg.data.max_source_tokens,
                "max_new_tokens": self.cfg.eval.max_new_tokens, "methods": methods}


@dataclasses.dataclass
class Generation:
    """One prompt's output: the code, whether decoding stopped at the token budget instead of at
    end-of-sequence, the prompt's tokens, the tokens generated (end-of-sequence included) and the budget."""
    text: str
    truncated: bool
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int


class _Unmapped(Exception):
    """A generated row did not match any prompt of the call (then budgets are decoded one at a time)."""


class _Budgeted:
    """Stands in for the model inside `generate_with_flags`: every `generate` call gets a stopping
    criterion that ends each row at its own prompt's budget, and rows past their budget are cut back to
    padding, so that prompts with different budgets share a batch. Rows are matched to prompts by
    their (unpadded) input ids; identical prompts keep their order (the batches are a stable sort)."""

    def __init__(self, model, keys: list[list[int]], budgets: list[int], tokenizer):
        self._model, self.budgets, self.tokenizer = model, budgets, tokenizer
        self._waiting: dict[tuple[int, ...], deque[int]] = {}
        for i, key in enumerate(keys):
            self._waiting.setdefault(tuple(key), deque()).append(i)
        self.rows: dict[int, tuple[bool, int]] = {}
        """prompt index -> (truncated, tokens generated)"""

    def __getattr__(self, name):
        return getattr(self._model, name)

    def eval(self):
        self._model.eval()
        return self

    def generate(self, **kwargs):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        index = []
        for row, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist()):
            queue = self._waiting.get(tuple(t for t, keep in zip(row, mask) if keep))
            if not queue:
                raise _Unmapped
            index.append(queue.popleft())
        budgets = torch.tensor([self.budgets[i] for i in index], dtype=torch.long)
        start: list[int] = []

        class PerRowBudget(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                if not start:  # first call: one token was generated
                    start.append(input_ids.shape[1] - 1)
                return (input_ids.shape[1] - start[0]) >= budgets.to(input_ids.device)

        criteria = StoppingCriteriaList([*(kwargs.pop("stopping_criteria", None) or []), PerRowBudget()])
        generated = self._model.generate(**kwargs, stopping_criteria=criteria)
        if not start:
            raise _Unmapped
        stops = kwargs.get("eos_token_id", self.tokenizer.eos_token_id)
        stops = set(stops) if isinstance(stops, (list, tuple)) else {stops}
        pad = self.tokenizer.pad_token_id
        generated = generated.clone()
        for r, i in enumerate(index):
            budget, new = self.budgets[i], generated[r, start[0]:].tolist()
            end = next((j for j, t in enumerate(new[:budget]) if t in stops), None)
            self.rows[i] = (end is None, budget if end is None else end + 1)
            generated[r, start[0] + budget:] = pad
        return generated


def _is_local(name: str) -> bool:
    """Whether a model name is a local folder rather than a hub id."""
    path = Path(name).expanduser()
    return path.is_absolute() or name.startswith((".", "~")) or "\\" in name or path.exists()


def served_languages(results: dict, run: dict) -> list[str]:
    """The languages a run can serve: those its completed stages trained (a joint run's one stage: all)."""
    return list(results["tasks"]) if is_joint(run) else list(run["stages"][1:])


def pick_run(results: dict, method: str | None = None, seed: int | None = None) -> dict:
    """The run to serve: `method`/`seed` if given, else the best final average BLEU (finished runs first)."""
    runs = [r for r in results["runs"] if len(r["stages"]) > 1]
    if method is not None:
        available = sorted({r["method"] for r in runs})
        if method not in available:
            raise ConfigError(f"method {method!r} has no trained modules in this run; available: {', '.join(available) or 'none'}")
        runs = [r for r in runs if r["method"] == method]
    if seed is not None:
        seeds = sorted({r["seed"] for r in runs})
        if seed not in seeds:
            raise ConfigError(f"seed {seed} has no trained modules{f' for {method}' if method else ''}; available: {', '.join(map(str, seeds))}")
        runs = [r for r in runs if r["seed"] == seed]
    if not runs:
        raise ConfigError("the run has no trained modules yet (no method finished a stage)")
    # max() keeps the first of equals: results.json order, i.e. the configured method order.
    return max(runs, key=lambda r: (is_complete(results, r), r.get("final_average", {}).get("bleu") or 0.0))


def resolve_run(run_dir: str | Path, method: str | None = None, seed: int | None = None) -> tuple[dict, dict]:
    """(results, the run to serve) without loading any model: enough to check methods and languages."""
    results = load_results(Path(run_dir) / "results.json")
    return results, pick_run(results, method, seed)


def load(run_dir: str | Path, method: str | None = None, seed: int | None = None, device: str | None = None,
         progress: bool = False) -> Generator:
    """Load a run folder's base and the trained modules of one method/seed; see `Generator`."""
    from codecl.hardware import pick_device

    run_dir = Path(run_dir)
    results, run = resolve_run(run_dir, method, seed)
    cfg = from_dict(results["config"])
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    base, tokenizer, info = _load_recorded_base(results["base_model"], cfg) or load_base(cfg.model, cfg, progress=progress)
    recorded = results["base_model"].get("fingerprint")
    if recorded != info.fingerprint:
        raise AdapterMismatchError(f"{run_dir / 'results.json'}: the run was trained on base fingerprint {recorded}, "
                                   f"but {cfg.model.name!r} loads as {info.fingerprint}")
    model = build_model(base, run["method"], cfg.method, info)
    model.load_stages(run_path(run_dir, run), run["stages"][1:])
    target = pick_device(device or cfg.train.device)
    model.to(target).eval()
    return Generator(run_dir, results, run, model, tokenizer, cfg, target)


def _load_recorded_base(recorded: dict, cfg: RunConfig):
    """The embedded base from the cache folder results.json names, if it is still there with the same
    fingerprint; None otherwise (then `load_base` finds it by its key, or rebuilds it). This skips
    re-reading the corpus that `load_base` hashes to find the folder."""
    from codecl.model.base import BaseInfo, count_parameters, fingerprint, freeze, load_pretrained

    folder = Path(recorded.get("path") or "")
    if cfg.model.name != "embedded" or not (folder / "manifest.json").is_file():
        return None
    try:
        verify_manifest(folder)
        model, tokenizer = load_pretrained(str(folder), cfg.model.frozen_dtype)
    except CodeclError:
        return None
    freeze(model).eval()
    info = BaseInfo(cfg.model.name, str(folder), fingerprint(model, cfg.model.name), count_parameters(model))
    return (model, tokenizer, info) if info.fingerprint == recorded.get("fingerprint") else None
