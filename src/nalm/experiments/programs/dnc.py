"""The Differentiable Neural Computer of Graves et al. (Nature 2016) with an LSTM controller and a seed axis: its
memory operations as pure functions, then the model (see :mod:`.models` for the conventions)."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import Tensor

from nalm.nn.models import SeedRNN
from nalm.units import get_unit
from nalm.units.base import Generators

from .rnn import SequenceRegressor, check_int, input_gates, lstm_step

# -- DNC memory operations (Graves et al. 2016, Methods; leading dimensions (S, B) are batch) ---------------


def content_weights(memory: Tensor, keys: Tensor, strengths: Tensor, eps: float = 1e-6) -> Tensor:
    """C(M, k, β) = softmax over locations of β · cos(k, M[j]).
    memory (..., N, W), keys (..., K, W), strengths (..., K) -> (..., K, N)."""
    dot = keys @ memory.transpose(-1, -2)  # (..., K, N)
    norms = (keys.pow(2).sum(-1, keepdim=True) + eps).sqrt() * (memory.pow(2).sum(-1) + eps).sqrt().unsqueeze(-2)
    return torch.softmax(strengths.unsqueeze(-1) * dot / norms, dim=-1)


def update_usage(usage: Tensor, write_weights: Tensor, free_gates: Tensor, read_weights: Tensor) -> Tensor:
    """u_t = (u + w_w − u ⊙ w_w) ⊙ ψ, ψ = Π_i (1 − f_i w_r^i), with the previous step's weightings.
    usage, write_weights (..., N), free_gates (..., R), read_weights (..., R, N) -> (..., N)."""
    retention = (1 - free_gates.unsqueeze(-1) * read_weights).prod(dim=-2)
    return (usage + write_weights - usage * write_weights) * retention


def allocation_weights(usage: Tensor, eps: float = 1e-6) -> Tensor:
    """a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i], φ the locations sorted by usage, least used first. (..., N)."""
    usage = eps + (1 - eps) * usage  # as DeepMind's addressing.py: keeps the cumulative product differentiable
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)
    before = torch.cumprod(torch.cat([torch.ones_like(sorted_usage[..., :1]), sorted_usage[..., :-1]], -1), -1)
    return torch.zeros_like(usage).scatter(-1, order, (1 - sorted_usage) * before)


def write_memory(memory: Tensor, weights: Tensor, erase: Tensor, values: Tensor) -> Tensor:
    """M ← M ⊙ (1 − w eᵀ) + w vᵀ. memory (..., N, W), weights (..., N), erase and values (..., W)."""
    w = weights.unsqueeze(-1)
    return memory * (1 - w * erase.unsqueeze(-2)) + w * values.unsqueeze(-2)


def update_links(link: Tensor, precedence: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Temporal links: L[i, j] ← (1 − w_i − w_j) L[i, j] + w_i p_j with L[i, i] = 0 (i was written after j);
    then p ← (1 − Σ_i w_i) p + w. link (..., N, N), precedence and weights (..., N)."""
    n = weights.shape[-1]
    link = (1 - weights.unsqueeze(-1) - weights.unsqueeze(-2)) * link + weights.unsqueeze(-1) * precedence.unsqueeze(-2)
    link = link * (1 - torch.eye(n, dtype=link.dtype, device=link.device))
    return link, (1 - weights.sum(-1, keepdim=True)) * precedence + weights


def directional_weights(link: Tensor, read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward f = L w and backward b = Lᵀ w of each read head. link (..., N, N), read_weights (..., R, N)."""
    return read_weights @ link.transpose(-1, -2), read_weights @ link


class DNC(SequenceRegressor):
    """Differentiable Neural Computer (Graves et al., "Hybrid computing using a neural network with dynamic
    external memory", Nature 538, 2016): an LSTM controller on [x_t; r_{t−1}] emits an interface vector (R read
    keys and strengths β = oneplus, a write key and strength, erase (σ) and write vectors, R free gates,
    allocation and write gates, and R × 3 read modes: softmax over backward / content / forward); memory is
    written at w_w = g_w (g_a a + (1 − g_a) c_w) with usage-sorted allocation a, then read through content and
    the temporal links; the output is W_y [h_t; r_t] (one value). One write head.

    Defaults as DeepMind's dnc/train.py: hidden 64, memory 16 × 16, 4 read heads. Initial state all zero.
    """

    def __init__(self, input_size: int, hidden_size: int = 64, *, num_seeds: int, pad_channel: int | None = None,
                 memory_size: int = 16, word_size: int = 16, read_heads: int = 4):
        super().__init__(input_size, num_seeds=num_seeds, pad_channel=pad_channel)
        self.hidden_size = check_int("DNC", "hidden_size", hidden_size)
        self.memory_size = check_int("DNC", "memory_size", memory_size)
        self.word_size = check_int("DNC", "word_size", word_size)
        self.read_heads = check_int("DNC", "read_heads", read_heads)
        R, W, S = read_heads, word_size, num_seeds
        # keys, strengths, write key, write strength, erase, write vector, free gates, alloc gate, write gate, modes
        self.interface_sizes = (R * W, R, W, 1, W, W, R, 1, 1, 3 * R)
        self.controller = SeedRNN("lstm", input_size + R * W, hidden_size, num_seeds=S)
        self.interface = get_unit("linear", hidden_size, sum(self.interface_sizes), num_seeds=S, bias=True)
        self.output = get_unit("linear", hidden_size + R * W, 1, num_seeds=S, bias=True)

    def reset_parameters(self, generator: Generators = None) -> None:
        for module in (self.controller, self.interface, self.output):
            module.reset_parameters(generator)

    def initial_state(self, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        """(h, c, memory, usage, links, precedence, read weights, write weights, read vectors), all zero."""
        S, N, W, R, H = self.num_seeds, self.memory_size, self.word_size, self.read_heads, self.hidden_size
        shapes = ((H,), (H,), (N, W), (N,), (N, N), (N,), (R, N), (N,), (R * W,))
        return tuple(like.new_zeros((S, batch) + s) for s in shapes)

    def step(self, gi: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step; gi = x_t's share of the controller's input gates (S, B, 4H). Returns (y (S, B, 1), state)."""
        h, c, memory, usage, link, precedence, w_read, w_write, reads = state
        R, W = self.read_heads, self.word_size
        n_x = self.input_size
        gi = gi + reads @ self.controller.weight_ih[..., n_x:].transpose(-1, -2)  # r_{t−1}'s share
        h, c = lstm_step(self.controller, gi, h, c)
        (keys, strengths, w_key, w_strength, erase, values, free, g_alloc, g_write, modes) = \
            self.interface(h).split(self.interface_sizes, dim=-1)
        lead = h.shape[:-1]
        keys, modes = keys.reshape(lead + (R, W)), torch.softmax(modes.reshape(lead + (R, 3)), dim=-1)
        usage = update_usage(usage, w_write, torch.sigmoid(free), w_read)
        c_write = content_weights(memory, w_key.unsqueeze(-2), 1 + TF.softplus(w_strength)).squeeze(-2)
        g_alloc, g_write = torch.sigmoid(g_alloc), torch.sigmoid(g_write)
        w_write = g_write * (g_alloc * allocation_weights(usage) + (1 - g_alloc) * c_write)
        memory = write_memory(memory, w_write, torch.sigmoid(erase), values)
        link, precedence = update_links(link, precedence, w_write)
        forward, backward = directional_weights(link, w_read)
        content = content_weights(memory, keys, 1 + TF.softplus(strengths))  # (S, B, R, N)
        w_read = modes[..., 0:1] * backward + modes[..., 1:2] * content + modes[..., 2:3] * forward
        reads = (w_read @ memory).flatten(-2)  # (S, B, R, W) -> (S, B, R·W)
        y = self.output(torch.cat([h, reads], dim=-1))
        return y, (h, c, memory, usage, link, precedence, w_read, w_write, reads)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._mask(x, mask)
        rnn = self.controller
        gi = input_gates(x, rnn.weight_ih[..., :self.input_size], rnn.bias_ih)  # (S, B, T, 4H)
        state = self.initial_state(x.shape[1], x)
        y = x.new_zeros(self.num_seeds, x.shape[1], 1)
        for t in range(x.shape[2]):
            y_new, new = self.step(gi[:, :, t], state)
            state = tuple(self._keep(m, t, a, b) for a, b in zip(new, state))
            y = self._keep(m, t, y_new, y)
        return y
