import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, d_in: int = 4, n_labels: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def make_batches(n_batches: int = 8, batch_size: int = 16, seed: int = 0, d_in: int = 4, n_labels: int = 3):
    """Linearly separable toy data: label = argmax of the first n_labels features."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch_size, d_in, generator=g)
        out.append({"x": x, "labels": x[:, :n_labels].argmax(-1)})
    return out


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def batches():
    return make_batches()
