"""Code-generation metrics: pure functions on lists of strings (SPEC "Metric definitions").

- `corpus_bleu`: corpus BLEU-4 from sacrebleu (`BLEU(tokenize="none", smooth_method="none")`:
  no smoothing, so a corpus with no matching 4-gram scores 0; sacrebleu's default is exponential
  smoothing) on code split by `code_tokenize` — the headline `bleu` of results.json.
- `smoothed_sentence_bleu`: the sentence-averaged smoothed BLEU-4 of CodeXGLUE's code-to-text
  evaluator (`evaluator/smooth_bleu.py`, used by CodeT5), for comparison with published numbers.
  That script is MOSES `bleu.py` with Lin & Och (2004, "ORANGE", COLING) add-one smoothing:
  per sentence, `log BLEU = 1/4 Σ_n log((m_n + a_n) / (g_n + a_n)) + min(0, 1 − (r + 1)/(h + 1))`
  with `a_1 = 0`, `a_n = 1` for n > 1 (`m_n` clipped matches, `g_n` hypothesis n-grams, `h`/`r`
  hypothesis/reference lengths: note the +1 in the brevity penalty), averaged over sentences.
  sacrebleu's `smooth_method="add-k"` adds k the same way but uses the standard brevity penalty
  `exp(1 − r/h)` and scores 0 when a hypothesis has fewer than 4 tokens (CodeXGLUE gives those
  n-gram orders precision 1), so it does not match: sacrebleu supplies the clipped n-gram
  statistics and this module applies CodeXGLUE's formula to them. Tokens are CodeXGLUE's too:
  lower-cased, `[\\w]+|[^\\s\\w]` (its `splitPuncts`), then NIST mteval normalisation, which
  also splits identifiers at `_`.
- `exact_match`, `syntax_pass`, and `score_all` which returns every metric for one task.
- `codebleu_metric`: CodeBLEU (Ren et al. 2020) from the optional `codebleu` package.

Which metrics a run computes is `eval.metrics`, read through the metric registry
(`codecl.registry.METRICS`: each metric's `MetricSpec` names its `*_metric` function here);
`score_with_examples` loops over them.

Scores are on a 0–1 scale.
"""
from __future__ import annotations

import logging
import math
import numbers
import re
import sys
from statistics import fmean
from typing import Sequence

from sacrebleu.metrics import BLEU

from codecl.errors import CodeclError, ConfigError
from codecl.registry import DEFAULT_METRICS, METRICS

__all__ = ["code_tokenize", "corpus_bleu", "smoothed_sentence_bleu", "sentence_bleus", "exact_match", "exact_matches", "syntax_pass",
           "syntax_oks", "score_all", "score_with_examples", "codebleu_metric", "CODEBLEU_LANGUAGES"]

_STRING = r"""(?<![\w$])[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|`(?:\\.|[^`\\])*`"""
_NUMBER = r"(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)[jJlLnfFdD]?"
_IDENTIFIER = r"(?:[^\W\d]|\$)(?:\w|\$)*"
# Longest first, so `>>>=` is one token and not `>>`, `>=`.
_OPERATORS = sorted(
    """>>>= >>> <<= >>= **= //= === !== ... ?? ?. -> => := :: == != <= >= && || ++ -- += -= *= /= %= &= |= ^= ** // << >>""".split(),
    key=len,
    reverse=True,
)
_TOKEN_RE = re.compile("|".join([_STRING, _NUMBER, _IDENTIFIER, *map(re.escape, _OPERATORS), r"\S"]))


def code_tokenize(code: str) -> list[str]:
    """Split source code into tokens for BLEU; whitespace and layout are dropped.

    Language-agnostic (Python, JavaScript, Java, Go, PHP, Ruby), first match wins:
    - string literals whole, with Python prefixes (`r"a b"`, `'''doc'''`, JS template literals);
      an unterminated quote falls through to a one-character token;
    - numbers whole (`0x1F`, `1_000`, `3.14e-2`, `10n`, `2j`);
    - identifiers and keywords (Unicode letters, digits, `_`, `$`);
    - multi-character operators whole (`===`, `**=`, `=>`, `...`), longest first;
    - any other non-space character alone (brackets, `,`, `;`, `#`, single operators).
    Comments are not special: their words become identifier tokens.

    >>> code_tokenize('def f(x):\\n    return x**2 + "a b"')
    ['def', 'f', '(', 'x', ')', ':', 'return', 'x', '**', '2', '+', '"a b"']
    """
    return _TOKEN_RE.findall(code)


def _bleu_line(code: str) -> str:
    """Tokens joined by spaces; whitespace inside a token (string literals) becomes U+2581 so
    sacrebleu's whitespace split keeps each token whole."""
    return " ".join(re.sub(r"\s", "\u2581", token) for token in code_tokenize(code))


def _check_pair(hyps: list[str], refs: list[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references; they must pair up one to one")
    if not hyps:
        raise ValueError("no hypotheses to score (empty evaluation set)")


def corpus_bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU-4 (Papineni et al. 2002) of generated vs reference code, 0–1.

    sacrebleu `BLEU(tokenize="none", smooth_method="none")` (unsmoothed: any n-gram order with no
    match makes the score 0; one reference per hypothesis) on the `code_tokenize` tokens, so the
    score does not depend on sacrebleu's natural-language tokenizers.
    """
    _check_pair(hyps, refs)
    score = BLEU(tokenize="none", smooth_method="none").corpus_score([_bleu_line(h) for h in hyps], [[_bleu_line(r) for r in refs]])
    return min(score.score / 100.0, 1.0)  # sacrebleu's ×100 round trip can give 1.0000000000000004


# CodeXGLUE tokenization: `splitPuncts` on the lower-cased text, then the NIST mteval-v11a
# normalisation of MOSES bleu.py (whose punctuation class also contains `_`).
_CODEXGLUE_SPLIT = re.compile(r"[\w]+|[^\s\w]")
_NIST_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_NIST_PERIOD_COMMA = [(re.compile(r"([^0-9])([\.,])"), r"\1 \2 "), (re.compile(r"([\.,])([^0-9])"), r" \1 \2"), (re.compile(r"([0-9])(-)"), r"\1 \2 ")]


def _codexglue_tokens(text: str) -> list[str]:
    text = " ".join(_CODEXGLUE_SPLIT.findall(text.strip().lower()))
    text = _NIST_PUNCT.sub(r" \1 ", f" {text} ")
    for pattern, replacement in _NIST_PERIOD_COMMA:
        text = pattern.sub(replacement, text)
    return text.split()


def _codexglue_sentence_bleu(matches: list[int], guesses: list[int], hyp_len: int, ref_len: int) -> float:
    """CodeXGLUE `score_cooked(..., smooth=1)[0]` from clipped n-gram statistics (module docstring)."""
    tiny = sys.float_info.min  # CodeXGLUE's guard against log(0)
    log_bleu = 0.0
    for n, (m, g) in enumerate(zip(matches, guesses), start=1):
        add = 1 if n > 1 else 0
        log_bleu += math.log(m + add + tiny) - math.log(g + add + tiny)
    log_bleu /= len(matches)
    log_bleu += min(0.0, 1.0 - (ref_len + 1) / (hyp_len + 1))
    return math.exp(log_bleu)


def sentence_bleus(hyps: list[str], refs: list[str]) -> list[float]:
    """CodeXGLUE's smoothed BLEU-4 of each hypothesis against its reference (module docstring), 0–1."""
    _check_pair(hyps, refs)
    counter = BLEU(tokenize="none", max_ngram_order=4)
    scores = []
    for hyp, ref in zip(hyps, refs):
        hyp_tokens, ref_tokens = _codexglue_tokens(hyp), _codexglue_tokens(ref)
        stats = counter.corpus_score([" ".join(hyp_tokens)], [[" ".join(ref_tokens)]])
        scores.append(_codexglue_sentence_bleu(stats.counts, stats.totals, len(hyp_tokens), len(ref_tokens)))
    return scores


def smoothed_sentence_bleu(hyps: list[str], refs: list[str]) -> float:
    """Sentence-averaged smoothed BLEU-4 as CodeXGLUE computes it (module docstring), 0–1.

    CodeXGLUE reports it ×100; this returns the same number / 100.
    """
    return fmean(sentence_bleus(hyps, refs))


def _normalise_whitespace(code: str) -> str:
    return " ".join(code.split())


def exact_matches(hyps: list[str], refs: list[str]) -> list[bool]:
    """Per hypothesis: equal to its reference after whitespace normalisation (`exact_match`)."""
    _check_pair(hyps, refs)
    return [_normalise_whitespace(h) == _normalise_whitespace(r) for h, r in zip(hyps, refs)]


def syntax_oks(hyps: list[str], language: str) -> list[bool]:
    """Per hypothesis: a complete, error-free program unit of `language` (`syntax_pass`)."""
    from codecl.languages import parse_ok

    return [bool(h.strip()) and bool(parse_ok(h, language)) for h in hyps]


def exact_match(hyps: list[str], refs: list[str]) -> float:
    """Share of hypotheses equal to their reference once every whitespace run (spaces, tabs,
    newlines, indentation) is collapsed to one space and the ends are stripped."""
    return fmean(exact_matches(hyps, refs))


def syntax_pass(hyps: list[str], language: str) -> float:
    """Share of hypotheses that parse as a complete program unit of `language` without errors
    (`codecl.languages.parse_ok`: `ast.parse` for Python, tree-sitter otherwise). An empty or
    whitespace-only output is no program unit: it fails (both parsers would accept it)."""
    if not hyps:
        raise ValueError("no hypotheses to score (empty evaluation set)")
    return fmean(syntax_oks(hyps, language))


def score_all(hyps: list[str], refs: list[str], language: str | None, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float | None]:
    """Every metric of one evaluation (by default `bleu`, `exact_match`, `syntax_pass`, `bleu_sentence_smoothed`)."""
    return score_with_examples(hyps, refs, language, metrics)[0]


# ---------------------------------------------------------------- the registry's compute functions
# `compute(hyps, refs, language) -> (corpus score, per-example values or None)` (`codecl.registry.MetricSpec`).


def bleu_metric(hyps: list[str], refs: list[str], language: str | None) -> tuple[float, None]:
    return corpus_bleu(hyps, refs), None


def exact_match_metric(hyps: list[str], refs: list[str], language: str | None) -> tuple[float, list[bool]]:
    matches = exact_matches(hyps, refs)
    return fmean(matches), matches


def syntax_pass_metric(hyps: list[str], refs: list[str], language: str) -> tuple[float, list[bool]]:
    if not hyps:
        raise ValueError("no hypotheses to score (empty evaluation set)")
    oks = syntax_oks(hyps, language)
    return fmean(oks), oks


def sentence_bleu_metric(hyps: list[str], refs: list[str], language: str | None) -> tuple[float, list[float]]:
    bleus = sentence_bleus(hyps, refs)
    return fmean(bleus), bleus


CODEBLEU_LANGUAGES = {"python": "python", "javascript": "javascript", "java": "java", "go": "go", "php": "php", "ruby": "ruby",
                      "c": "c", "cpp": "cpp", "c++": "cpp", "c_sharp": "c_sharp", "csharp": "c_sharp", "c#": "c_sharp", "rust": "rust"}
"""codecl language name -> the `lang` codebleu 0.7.0 knows (its `AVAILABLE_LANGS`); others score null."""


class _NoDataflowWarning(logging.Filter):
    """codebleu warns on the root logger whenever no data flow is found (tiny models' outputs): noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "data-flow" not in record.getMessage()


def codebleu_metric(hyps: list[str], refs: list[str], language: str | None) -> tuple[float | None, None]:
    """Corpus CodeBLEU (Ren et al. 2020, arXiv 2009.10297) with the `codebleu` package's defaults: weights
    0.25 each on n-gram match, keyword-weighted n-gram match, AST (syntax) match and data-flow match,
    tokens split on whitespace. Null for a language codebleu does not support (`CODEBLEU_LANGUAGES`)
    and for text outputs. Needs `pip install --no-deps codebleu==0.7.0` (codebleu pins tree-sitter<0.23;
    it works with the tree-sitter 0.26 codecl needs)."""
    _check_pair(hyps, refs)
    lang = CODEBLEU_LANGUAGES.get(language) if language else None
    if lang is None:
        return None, None
    try:
        from codebleu import calc_codebleu
    except ImportError:
        METRICS.get("codebleu").check_installed()  # the install line; re-raised as it is if the import broke otherwise
        raise
    quiet = _NoDataflowWarning()
    logging.getLogger().addFilter(quiet)
    try:
        result = calc_codebleu(refs, hyps, lang=lang)  # references first (codebleu's signature)
    except ZeroDivisionError:  # its syntax match divides by the references' subtree count: no parsable reference
        return None, None
    finally:
        logging.getLogger().removeFilter(quiet)
    return min(max(float(result["codebleu"]), 0.0), 1.0), None


# ---------------------------------------------------------------- scoring through the registry


def _check_result(name: str, value, per_example, n: int) -> None:
    """A plugin's bad score fails here, at stage 0, not as an invalid results.json after training."""
    if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"metric {name!r} gave {value!r}; scores are numbers on a 0–1 scale or None (SPEC \"Metric definitions\")")
    if per_example is not None and not isinstance(per_example, (list, tuple)):
        raise ValueError(f"metric {name!r} gave per-example values as {type(per_example).__name__}; they must be a list (or None)")
    if per_example is not None and len(per_example) != n:
        raise ValueError(f"metric {name!r} gave {len(per_example)} per-example values for {n} hypotheses")
    bad = next((v for v in per_example or () if not (v is None or isinstance(v, (str, bool, int))
                                                      or (isinstance(v, numbers.Real) and math.isfinite(v)))), _OK)
    if bad is not _OK:
        raise ValueError(f"metric {name!r} gave the per-example value {bad!r}; they are written to the predictions lines "
                         f"(JSON): None, a string, a bool or a finite number")


_OK = object()


def _compute(spec, hyps: list[str], refs: list[str], language: str | None) -> tuple:
    """`(score, per-example values)` of one metric; a metric that raises, or gives anything else than a score or a
    `(score, per-example values)` pair, fails with one message naming it."""
    try:
        result = spec.function()(hyps, refs, language)
    except CodeclError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, named
        raise CodeclError(f"metric {spec.name!r} failed on {len(hyps)} {language or 'text'} outputs: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, tuple):
        result = (result, None)
    if len(result) != 2:
        raise ValueError(f"metric {spec.name!r} gave a tuple of {len(result)} items; compute returns (score, per-example values or None)")
    value, per_example = result
    _check_result(spec.name, value, per_example, len(hyps))
    return (float(value) if value is not None else None), per_example


def score_with_examples(hyps: list[str], refs: list[str], language: str | None,
                        metrics: Sequence[str] = DEFAULT_METRICS) -> tuple[dict[str, float | None], list[dict]]:
    """The scores of `metrics` (names of `codecl.registry.METRICS`, in that order) and, per hypothesis,
    the fields of its predictions line: `{"exact_match", "syntax_ok", "bleu_sentence"}` for the default
    metrics (each metric's `per_example_field`; a metric with per-example values and no field uses its
    name). The corpus scores of the built-ins are the means of the per-example ones, except `bleu`, which
    is corpus-level. `language` None: the outputs are text, not code (a code → description task), so the
    metrics that need code (`syntax_pass`, `codebleu`) are None, and so are their per-example fields."""
    _check_pair(hyps, refs)
    scores: dict[str, float | None] = {}
    fields: dict[str, list] = {}
    for name in metrics:
        spec = METRICS.get(name)
        if not spec.selectable:
            raise ConfigError(f"metric {name!r} is computed by the run itself, not from outputs and references; "
                              f"eval.metrics may name: {', '.join(s.name for s in METRICS if s.selectable)}")
        if spec.needs_code and language is None:
            value, per_example = None, None
        else:
            value, per_example = _compute(spec, hyps, refs, language)
        scores[name] = value
        field = spec.per_example_field or (name if per_example is not None else None)
        if field is not None:
            fields[field] = list(per_example) if per_example is not None else [None] * len(hyps)
    return scores, [{field: values[i] for field, values in fields.items()} for i in range(len(hyps))]
