"""The `truncated` flag of a generation: cut at the token budget vs ended by end-of-sequence (T5 path).
End to end on a real model: tests/test_run_warnings.py (a 2-token budget cuts the outputs, counted in
results.json); decoder-only models: tests/model/test_causal.py (forced / banned end-of-sequence)."""
import torch

from codecl.evaluation.generate import _stopped_at_budget


def test_a_row_is_cut_only_without_eos_after_the_start_token():
    assert _stopped_at_budget(torch.tensor([0, 5, 6, 7]), eos_id=1)           # budget reached, no </s>
    assert not _stopped_at_budget(torch.tensor([0, 5, 1, 0]), eos_id=1)       # ended, then padding
    assert not _stopped_at_budget(torch.tensor([0, 5, 6, 1]), eos_id=1)       # </s> as the last allowed token
    assert _stopped_at_budget(torch.tensor([1, 5, 6, 7]), eos_id=1)           # a start token equal to </s> does not count
