"""Training-step time of S seeds of ordinary networks: nalm.nn.ensemble.Ensemble (vmap / loop) vs native stacked forms.

One step is forward + backward + Adam(foreach=True) of all S seeds on a fixed random batch (data generation is not
timed): mean squared error to a random target, summed over seeds. Two networks:

- conv: the 2018 PyTorch MNIST example net with one output (conv 1->20 5x5, ReLU, maxpool 2, conv 20->50 5x5,
  ReLU, maxpool 2, FC 800->500, ReLU, FC 500->1), 64 images of 28x28 per seed;
- lstm: nn.LSTM(16 -> 64) over 10 steps, linear read-out of the final state, 64 sequences per seed;
- mlp: 16 -> 64 -> 64 -> 1 with ReLU, 64 rows per seed (a network whose step is overhead-bound).

Rows: Ensemble(mode="vmap"), Ensemble(mode="loop"), a native stacked form (conv: grouped convolutions with the seeds
folded into the channels; lstm: nalm.nn.models.SeedRNN, batched matmuls with a seed axis; mlp: nalm.nn.models.mlp
with a seed axis), and S separate plain
models (each with its own Adam) trained one after another. For the LSTM, vmap cannot batch nn.LSTM, so the vmap row
uses the same LSTM written with two nn.Linear layers and a Python loop over time ("linear-lstm").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble.py [--seeds 1 10 100] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from nalm import get_unit
from nalm.nn.ensemble import Ensemble
from nalm.nn.models import SeedRNN, mlp

BATCH, IN, HIDDEN, T = 64, 16, 64, 10


def mnist_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 1))


class GroupedMnistNet(nn.Module):
    """The MNIST net for S seeds: convolutions with groups=S (seeds folded into channels), batched FC layers."""

    def __init__(self, S: int):
        super().__init__()
        self.S = S
        self.c1 = nn.Conv2d(S, 20 * S, 5, groups=S)
        self.c2 = nn.Conv2d(20 * S, 50 * S, 5, groups=S)
        self.w1, self.b1 = nn.Parameter(torch.randn(S, 800, 500) / 800**0.5), nn.Parameter(torch.zeros(S, 1, 500))
        self.w2, self.b2 = nn.Parameter(torch.randn(S, 500, 1) / 500**0.5), nn.Parameter(torch.zeros(S, 1, 1))

    def forward(self, x):  # (S, B, 1, 28, 28) -> (S, B, 1)
        S, B = x.shape[:2]
        h = x.transpose(0, 1).reshape(B, S, 28, 28)
        h = F.max_pool2d(F.relu(self.c1(h)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)  # (B, S*50, 4, 4)
        h = h.reshape(B, S, 800).transpose(0, 1)  # (S, B, 800), each seed's features in nn.Flatten's order
        h = F.relu(torch.baddbmm(self.b1, h, self.w1))
        return torch.baddbmm(self.b2, h, self.w2)


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.out = nn.LSTM(IN, HIDDEN, batch_first=True), nn.Linear(HIDDEN, 1)

    def forward(self, x):  # (B, T, IN) -> (B, 1)
        return self.out(self.lstm(x)[1][0][-1])


class LinearLSTM(nn.Module):
    """nn.LSTM's equations with two nn.Linear layers and a loop over time (so torch.func.vmap can batch it)."""

    def __init__(self):
        super().__init__()
        self.ih, self.hh, self.out = nn.Linear(IN, 4 * HIDDEN), nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(HIDDEN, 1)

    def forward(self, x):  # (B, T, IN) -> (B, 1)
        gi = self.ih(x)
        h = c = x.new_zeros(x.shape[0], HIDDEN)
        for t in range(x.shape[1]):
            i, f, g, o = (gi[:, t] + self.hh(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.out(h)


class SeedLSTMNet(nn.Module):
    def __init__(self, S: int):
        super().__init__()
        self.rnn = SeedRNN("lstm", IN, HIDDEN, num_seeds=S)
        self.out = get_unit("linear", HIDDEN, 1, num_seeds=S, bias=True)

    def forward(self, x):  # (S, B, T, IN) -> (S, B, 1)
        return self.out(self.rnn(x))


def plain_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def stacked_runner(model: nn.Module, x, y):
    opt = torch.optim.Adam(model.parameters(), foreach=True)

    def step():
        opt.zero_grad(set_to_none=True)
        (model(x) - y).pow(2).mean(dim=(1, 2)).sum().backward()
        opt.step()
    return step


def separate_runner(factory, x, y):
    models = [factory() for _ in range(x.shape[0])]
    opts = [torch.optim.Adam(m.parameters(), foreach=True) for m in models]

    def step():
        for m, o, xi, yi in zip(models, opts, x, y):
            o.zero_grad(set_to_none=True)
            (m(xi) - yi).pow(2).mean().backward()
            o.step()
    return step


def steps_per_second(step, seconds: float) -> tuple[float, int]:
    step()  # warm-up: allocations, vmap's first trace
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start), n


def rows(net: str, S: int):
    g = torch.Generator().manual_seed(S)
    if net == "conv":
        x, y = torch.rand(S, BATCH, 1, 28, 28, generator=g), torch.rand(S, BATCH, 1, generator=g)
        return x, y, [("Ensemble vmap", lambda: stacked_runner(Ensemble(mnist_net, S, mode="vmap"), x, y)),
                      ("Ensemble loop", lambda: stacked_runner(Ensemble(mnist_net, S, mode="loop"), x, y)),
                      ("grouped conv", lambda: stacked_runner(GroupedMnistNet(S), x, y)),
                      ("separate models", lambda: separate_runner(mnist_net, x, y))]
    if net == "mlp":
        x, y = torch.rand(S, BATCH, IN, generator=g), torch.rand(S, BATCH, 1, generator=g)
        return x, y, [("Ensemble vmap", lambda: stacked_runner(Ensemble(plain_mlp, S, mode="vmap"), x, y)),
                      ("Ensemble loop", lambda: stacked_runner(Ensemble(plain_mlp, S, mode="loop"), x, y)),
                      ("nalm.nn.models.mlp", lambda: stacked_runner(mlp([IN, HIDDEN, HIDDEN, 1], "relu", num_seeds=S),
                                                                  x, y)),
                      ("separate models", lambda: separate_runner(plain_mlp, x, y))]
    x, y = torch.rand(S, BATCH, T, IN, generator=g), torch.rand(S, BATCH, 1, generator=g)
    return x, y, [("Ensemble vmap (linear-lstm)", lambda: stacked_runner(Ensemble(LinearLSTM, S, mode="vmap"), x, y)),
                  ("Ensemble loop (nn.LSTM)", lambda: stacked_runner(Ensemble(LSTMNet, S, mode="loop"), x, y)),
                  ("SeedRNN", lambda: stacked_runner(SeedLSTMNet(S), x, y)),
                  ("separate models (nn.LSTM)", lambda: separate_runner(LSTMNet, x, y))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--nets", nargs="+", default=["conv", "lstm", "mlp"],
                        choices=["conv", "lstm", "mlp"])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row (at least 2 steps)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH} per seed")
    print(f"{'net':5s} {'S':>4s}  {'form':28s} {'steps':>5s} {'ms/step':>9s} {'seed-it/s':>10s} {'samples/s':>10s}")
    for net in args.nets:
        for S in args.seeds:
            x, y, candidates = rows(net, S)
            for name, make in candidates:
                rate, n = steps_per_second(make(), args.seconds)
                print(f"{net:5s} {S:4d}  {name:28s} {n:5d} {1e3 / rate:9.1f} {S * rate:10.1f} "
                      f"{S * BATCH * rate:10.0f}", flush=True)


if __name__ == "__main__":
    main()
