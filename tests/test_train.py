"""codecl.train: optimizer settings per device."""
import torch

from codecl.train import optimizer_options


def test_optimizer_is_fused_on_cuda_only():
    assert optimizer_options(torch.device("cuda", 0)) == {"fused": True}
    assert optimizer_options(torch.device("cpu")) == {}
