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

Scores are on a 0–1 scale.
"""
from __future__ import annotations

import math
import re
import sys
from statistics import fmean

from sacrebleu.metrics import BLEU

__all__ = ["code_tokenize", "corpus_bleu", "smoothed_sentence_bleu", "sentence_bleus", "exact_match", "exact_matches", "syntax_pass",
           "syntax_oks", "score_all", "score_with_examples"]

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


def score_all(hyps: list[str], refs: list[str], language: str) -> dict[str, float]:
    """Every metric of one evaluation: `bleu`, `exact_match`, `syntax_pass`, `bleu_sentence_smoothed`."""
    return score_with_examples(hyps, refs, language)[0]


def score_with_examples(hyps: list[str], refs: list[str], language: str | None) -> tuple[dict[str, float | None], list[dict]]:
    """`score_all` and, per hypothesis, `{"exact_match", "syntax_ok", "bleu_sentence"}` (the
    fields of a predictions line); the corpus scores are the means of the per-example ones,
    except `bleu`, which is corpus-level. `language` None: the outputs are text, not code (a
    code → description task), so `syntax_pass` and `syntax_ok` are None."""
    matches, bleus = exact_matches(hyps, refs), sentence_bleus(hyps, refs)
    oks = syntax_oks(hyps, language) if language is not None else [None] * len(hyps)
    syntax = fmean(oks) if language is not None else None
    scores = {"bleu": corpus_bleu(hyps, refs), "exact_match": fmean(matches), "syntax_pass": syntax, "bleu_sentence_smoothed": fmean(bleus)}
    return scores, [{"exact_match": m, "syntax_ok": o, "bleu_sentence": b} for m, o, b in zip(matches, oks, bleus)]
