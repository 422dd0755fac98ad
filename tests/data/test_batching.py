"""Task data: a code cut to max_target_tokens gets no </s> label; an uncut one ends with exactly one."""
from codecl.data.batching import IGNORE_INDEX, encode_pairs, pad_batch

EOS = 1


class Tok:
    """One token (5) per word, then </s>, as a T5 tokenizer's post-processor does."""
    eos_token_id = EOS

    def __call__(self, texts):
        return {"input_ids": [[5 + i for i in range(len(t.split()))] + [EOS] for t in texts]}


def test_a_cut_target_has_no_eos_label_and_an_uncut_one_ends_with_exactly_one():
    enc = encode_pairs(Tok(), ["w " * 30, "short description"], ["x " * 20, "y z"], max_source_tokens=8, max_target_tokens=8)
    assert (enc.truncated_sources, enc.truncated_targets) == (1, 1)
    cut, whole = enc.target_ids
    assert cut == [5, 6, 7, 8, 9, 10, 11, 12] and EOS not in cut  # labels just stop at the limit
    assert whole == [5, 6, EOS] and whole.count(EOS) == 1
    assert enc.source_ids[0] == [5, 6, 7, 8, 9, 10, 11, EOS] and enc.source_ids[1] == [5, 6, EOS]  # sources keep theirs
    labels = pad_batch(enc.source_ids, enc.target_ids, 0)["labels"].tolist()
    assert EOS not in labels[0] and labels[1] == [5, 6, EOS] + [IGNORE_INDEX] * 5


def test_a_target_exactly_at_the_limit_is_not_cut():
    enc = encode_pairs(Tok(), ["a"], ["x " * 7], max_source_tokens=8, max_target_tokens=8)
    assert enc.truncated_targets == 0 and enc.target_ids[0][-1] == EOS and len(enc.target_ids[0]) == 8
