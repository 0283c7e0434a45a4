"""The leanest one-model loop we could write, without nalm: how fast can plain PyTorch train this network?

A hand-written NAU → NMU (and NALU → NALU) on the static task: torch.rand batch, targets by slicing, F.linear,
F.mse_loss, torch.optim.Adam with its defaults — and no clamp, no regulariser, no evaluation, no input checks. It is
a lower bound on the time of the benchmark's ``reference`` row, which trains nalm's single-seed modules with their
constraints and evaluation.

    OMP_NUM_THREADS=1 python benchmarks/lean_loop.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class NauNmu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(2, 100).uniform_(-0.5, 0.5))
        self.w2 = nn.Parameter(torch.empty(1, 2).uniform_(0.25, 0.75))

    def forward(self, x):
        h = F.linear(x, self.w1)
        return (self.w2 * h.unsqueeze(-2) + 1 - self.w2).prod(-1)


class Nalu(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w_hat, self.m_hat, self.g = (nn.Parameter(torch.empty(n_out, n_in).uniform_(-0.3, 0.3))
                                          for _ in range(3))

    def forward(self, x):
        w = torch.tanh(self.w_hat) * torch.sigmoid(self.m_hat)
        g = torch.sigmoid(F.linear(x, self.g))
        return g * F.linear(x, w) + (1 - g) * torch.exp(F.linear(torch.log(x.abs() + 1e-7), w))


def iterations_per_second(model: nn.Module, steps: int = 3000) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        x = torch.rand(128, 100) + 1
        y = x[:, :25].sum(1, keepdim=True) * x[:, 12:37].sum(1, keepdim=True)
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name, model in (("nau-nmu", NauNmu()), ("nalu-nalu", nn.Sequential(Nalu(100, 2), Nalu(2, 1)))):
        best = max(iterations_per_second(model) for _ in range(3))
        print(f"lean loop {name}: {best:.0f} iterations/s (best of 3)")
