"""A small module class for the torch migration tests (importable by the sandbox)."""

from __future__ import annotations

import torch


class Net(torch.nn.Module):
    """Linear -> ReLU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(4, 8)
        self.l2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.l2(torch.relu(self.l1(x)))
        return out
