"""Metrics against hand-computed numbers and against sacrebleu itself."""
import math

import pytest
from sacrebleu.metrics import BLEU

from codecl.evaluation.metrics import code_tokenize, corpus_bleu, exact_match, score_all, smoothed_sentence_bleu, syntax_pass


def test_tokenizer_splits_operators_and_keeps_literals_whole():
    code = 'def f(x):\n    return x**2 + "a b" # note'
    assert code_tokenize(code) == ["def", "f", "(", "x", ")", ":", "return", "x", "**", "2", "+", '"a b"', "#", "note"]


def test_tokenizer_javascript():
    code = "const s = `x ${y}`; if (a === 0x1F && b >>>= 1_000) { c?.d ?? 3.14e-2; } $el => 10n"
    assert code_tokenize(code) == [
        "const", "s", "=", "`x ${y}`", ";", "if", "(", "a", "===", "0x1F", "&&", "b", ">>>=", "1_000", ")",
        "{", "c", "?.", "d", "??", "3.14e-2", ";", "}", "$el", "=>", "10n",
    ]


def test_tokenizer_python_string_prefixes_and_triple_quotes():
    assert code_tokenize("x = r'a b' + f\"{y}\" + '''one\ntwo'''") == ["x", "=", "r'a b'", "+", 'f"{y}"', "+", "'''one\ntwo'''"]


def test_tokenizer_unterminated_quote_is_one_character():
    assert code_tokenize("s = 'oops\nx") == ["s", "=", "'", "oops", "x"]


def test_identical_is_one_and_disjoint_is_zero():
    refs = ["def add(a, b):\n    return a + b", "x = [i for i in range(10)]"]
    assert corpus_bleu(refs, refs) == pytest.approx(1.0)
    assert corpus_bleu(["foo bar baz qux"], ["alpha beta gamma delta"]) == 0.0


def test_layout_does_not_matter_but_string_contents_do():
    assert corpus_bleu(['print( "a b" ,x )'], ['print("a b", x)']) == pytest.approx(1.0)
    assert corpus_bleu(['print("a b", x)'], ['print("a  b", x)']) < 1.0


def test_bleu_by_hand():
    # hyp x = a + b (5 tokens), ref x = a + c ; (6 tokens): precisions 4/5, 3/4, 2/3, 1/2,
    # brevity penalty exp(1 - 6/5).
    expected = math.exp(1 - 6 / 5) * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu(["x = a + b"], ["x = a + c;"]) == pytest.approx(expected, abs=1e-12)


def test_bleu_equals_sacrebleu_on_tokens():
    hyps = ["def f(x): return x+1", "for i in range(n): total += i", "if a == b:\n    pass"]
    refs = ["def f(y): return y + 1", "for j in range(n): total += j", "if a != b: return"]
    joined = lambda code: " ".join(code_tokenize(code))
    reference = BLEU(tokenize="none", smooth_method="none").corpus_score([joined(h) for h in hyps], [[joined(r) for r in refs]]).score / 100
    assert corpus_bleu(hyps, refs) == pytest.approx(reference, abs=1e-12)
    assert 0 < corpus_bleu(hyps, refs) < 1


def test_bleu_is_unsmoothed_when_no_4gram_matches():
    # unigram..trigram precisions 2/5, 1/4, 0/3: sacrebleu's default exponential smoothing gives 0.214 here.
    assert corpus_bleu(["a b c d e"], ["a b x y z"]) == 0.0
    assert BLEU(tokenize="none").corpus_score(["a b c d e"], [["a b x y z"]]).score > 20  # what smoothing would add
    # every order matches somewhere in the corpus but no 4-gram does: still 0.
    assert corpus_bleu(["x = a + b", "p q r"], ["x = a - b", "p q s"]) == 0.0
    # one matching 4-gram anywhere in the corpus makes it positive.
    assert corpus_bleu(["x = a + b", "p q r s"], ["x = a - b", "p q r s"]) > 0.0


def test_smoothed_bleu_identical_is_one():
    assert smoothed_sentence_bleu(["a = b + c"], ["a = b + c"]) == 1.0


def test_smoothed_bleu_codexglue_brevity_penalty_by_hand():
    # 3 vs 4 tokens: every (add-one) precision is 1; CodeXGLUE's penalty is exp(1 - (4+1)/(3+1)).
    assert smoothed_sentence_bleu(["a b c"], ["a b c d"]) == pytest.approx(math.exp(-0.25))
    # sacrebleu's add-k smoothing uses exp(1 - 4/3) instead: the reason it is not used directly.
    sacre = BLEU(tokenize="none", smooth_method="add-k", effective_order=False).sentence_score("a b c", ["a b c d"]).score / 100
    assert sacre == pytest.approx(math.exp(1 - 4 / 3))


def test_smoothed_bleu_lowercases_and_splits_underscores_by_hand():
    # foo_bar vs FOO_baz -> [foo, _, bar] vs [foo, _, baz]: 2/3, (1+1)/(2+1), (0+1)/(1+1), (0+1)/(0+1)
    expected = (2 / 3 * 2 / 3 * 1 / 2 * 1) ** 0.25
    assert smoothed_sentence_bleu(["foo_bar"], ["FOO_baz"]) == pytest.approx(expected)


def test_smoothed_bleu_averages_sentences_and_scores_empty_hypotheses():
    # Empty hypothesis: all log-precisions 0, penalty 1 - (3+1)/(0+1) = -3.
    assert smoothed_sentence_bleu(["", "x y"], ["a b c", "x y"]) == pytest.approx((math.exp(-3) + 1.0) / 2)


def test_exact_match_normalises_whitespace_only():
    hyps = ["def f():\n\treturn  1\n", "x=1", "a"]
    refs = ["def f(): return 1", "x = 1", "b"]
    assert exact_match(hyps, refs) == pytest.approx(1 / 3)


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        exact_match([], [])


def test_syntax_pass_uses_the_language_parser():
    assert syntax_pass(["def f():\n    return 1", "def f(:\n"], "python") == 0.5
    assert syntax_pass(["function f() { return 1; }", "function f( {"], "javascript") == 0.5


def test_score_all_reports_every_metric():
    scores = score_all(["def f():\n    return 1"], ["def f():\n    return 1"], "python")
    assert scores == {"bleu": pytest.approx(1.0), "exact_match": 1.0, "syntax_pass": 1.0, "bleu_sentence_smoothed": 1.0}


def test_empty_output_fails_syntax_pass():
    from codecl.evaluation.metrics import syntax_pass

    assert syntax_pass(["", "   \n", "def f():\n    return 1\n", "def f(:"], "python") == 0.25
