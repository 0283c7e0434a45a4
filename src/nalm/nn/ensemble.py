"""The seed axis for any ``nn.Module``: S independent copies of one network, run as one module.

nalm's own units carry the seed axis in their parameters. Conv nets, LSTMs and embeddings get it here, the way
PyTorch's ``torch.func`` runs model ensembles (``stack_module_state``, ``functional_call``, ``vmap``):

- ``Ensemble(factory, S)`` builds S copies with ``factory()`` and keeps ONE of them (``.stacked``) whose every
  parameter and buffer is replaced by the S copies' tensors stacked on a new leading axis, as real
  ``nn.Parameter``s. An optimiser over ``ensemble.parameters()`` therefore trains all seeds (Adam and every other
  elementwise optimiser treat the seeds independently), ``state_dict`` keys are the network's own (prefixed
  ``stacked.``) with shape (S, *shape), and per-seed gradient norms are reductions over the trailing axes.
  ``.stacked`` is never called directly: its forward expects one seed's shapes.
- ``forward(*inputs)`` takes inputs with a leading seed axis (S, B, ...) and returns (S, B, ...) (any pytree of
  outputs: tuples, e.g. ``nn.LSTM``'s). Non-tensor inputs go unchanged to every seed. ``mode="vmap"`` runs
  ``torch.func.vmap`` over ``functional_call(stacked, seed i's tensors, seed i's inputs)``; ``mode="loop"`` calls
  ``functional_call`` once per seed on ``unbind(0)`` slices (whose backward is one stack, not S scatters) and
  stacks the results. Both give the same values and gradients. Buffers (BatchNorm's running statistics) are
  updated in place per seed in both modes. Random layers (dropout) draw from torch's global generator; under
  vmap each seed gets different draws (``randomness="different"``), but not the ones the loop would draw.
- Initialisation: seed i is built as ``seeded(factory, generators[i])``: one integer drawn from generator i seeds
  torch's global generator inside ``torch.random.fork_rng()`` (so the caller's global RNG state is unchanged)
  while ``factory()`` runs. A single model built by ``seeded(factory, g)`` thus starts exactly as seed i does:
  "a run of S seeds equals S runs of one seed".

Which mode is faster (``benchmarks/ensemble.py``: forward + backward + Adam per step, 1 thread on a shared 2-core
CPU VM, torch 2.13; table in ``benchmarks/README.md``):

- MLP 16-64-64-1, 64 rows per seed: vmap is 1.5x faster than the loop at S = 10 and 3.5x at S = 100;
- the MNIST conv net, 64 images per seed: the loop is 1.3x faster than vmap at S = 10 and 1.6x at S = 100, because
  vmap turns S convolutions into one grouped convolution and torch's CPU grouped-conv kernels are slower than S
  plain ones (a hand-written grouped-conv net is as slow). A tiny conv net (1->4 channels on 8x8) went the other
  way in an ad-hoc check: vmap 27 ms vs loop 44 ms per step at S = 100;
- vmap cannot batch ``nn.LSTM``/``GRU``/``RNN`` nor ``nn.LSTMCell`` at all ("Batching rule not implemented for
  aten::lstm.input"); the loop over nn.LSTM is 1.7-2.8x faster than ``nalm.nn.models.SeedRNN`` at S = 1-100.

Hence ``mode="auto"`` (:func:`auto_mode`): the loop for a network holding a torch RNN layer or a convolution,
vmap otherwise; pass ``mode="vmap"`` for tiny conv nets. Measured on CPU only: on a GPU, re-measure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from nalm.errors import ConfigError, ShapeError

MODES = ("vmap", "loop", "auto")
SeedGenerator = torch.Generator | np.random.Generator


def _seed_from(generator: SeedGenerator) -> int:
    """One integer in [0, 2^62) drawn from a torch or numpy generator: the global seed of one model's init."""
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (), generator=generator))
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(2**62))
    raise ConfigError(f"expected a torch.Generator or numpy.random.Generator, got {type(generator).__name__}")


def seeded(factory: Callable[[], nn.Module], generator: SeedGenerator) -> nn.Module:
    """``factory()`` run with torch's global generator seeded from ``generator`` (one integer drawn from it).

    The global RNG state is the same afterwards. Seed i of ``Ensemble(factory, S, generators=gens)`` starts with
    exactly the parameters of ``seeded(factory, gens[i])``.
    """
    seed = _seed_from(generator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


def auto_mode(module: nn.Module) -> str:
    """The mode ``"auto"`` picks: ``"loop"`` if ``module`` holds a torch RNN layer (``nn.LSTM``/``GRU``/``RNN`` or a
    cell: vmap cannot batch them) or a convolution (slower as vmap's grouped conv on CPU), else ``"vmap"``."""
    loop_layers = (nn.RNNBase, nn.RNNCellBase, nn.modules.conv._ConvNd)
    return "loop" if any(isinstance(m, loop_layers) for m in module.modules()) else "vmap"


class Ensemble(nn.Module):
    """S independent copies of any ``nn.Module`` as one module: inputs (S, B, ...) -> outputs (S, B, ...).

    ``factory()`` builds one ordinary model (no seed axis). ``generators``: S torch or numpy generators, seed i
    initialised from generator i alone (see :func:`seeded`); one generator serves the seeds in turn; ``None``
    builds the copies with S calls of ``factory()`` on torch's global generator, as S plain models would be.
    ``mode``: ``"vmap"``, ``"loop"`` or ``"auto"`` (:func:`auto_mode`: loop for networks with RNN or conv layers,
    else vmap; measurements in the module docstring).
    The method follows ``torch.func``'s model ensembling (PyTorch docs, "Model ensembling").
    """

    def __init__(self, factory: Callable[[], nn.Module], num_seeds: int, *,
                 generators: Sequence[SeedGenerator] | SeedGenerator | None = None, mode: str = "auto") -> None:
        super().__init__()
        if not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or num_seeds < 1:
            raise ConfigError(f"Ensemble: num_seeds must be a positive integer, got {num_seeds!r}")
        if mode not in MODES:
            raise ConfigError(f"Ensemble: unknown mode {mode!r}; choose from: {', '.join(MODES)}")
        self.num_seeds = num_seeds
        generators = self._per_seed(generators)
        members = ([factory() for _ in range(num_seeds)] if generators is None
                   else [seeded(factory, g) for g in generators])
        if not all(isinstance(m, nn.Module) for m in members) or len({id(m) for m in members}) < num_seeds:
            raise ConfigError(f"Ensemble: factory must return a new nn.Module on each call, got "
                              f"{type(members[0]).__name__}")
        self.stacked = members[0]
        self._stack(members)
        if mode == "auto":
            mode = auto_mode(self.stacked)
        self.mode = mode
        self._factory = factory

    # -- construction ---------------------------------------------------------------------------------------------
    def _per_seed(self, generators) -> list[SeedGenerator] | None:
        """One generator per seed; a single generator serves all seeds in turn (seed i draws its i-th integer)."""
        if generators is None or isinstance(generators, (torch.Generator, np.random.Generator)):
            return None if generators is None else [generators] * self.num_seeds
        if len(generators) != self.num_seeds:
            raise ConfigError(f"Ensemble: expected a list of {self.num_seeds} generators (one per seed), got "
                              f"{len(generators)}")
        return list(generators)

    def _stack(self, members: list[nn.Module]) -> None:
        """Replace every parameter and buffer of ``self.stacked`` by the members' tensors stacked on axis 0."""
        named = [(dict(m.named_parameters(remove_duplicate=False)), dict(m.named_buffers(remove_duplicate=False)))
                 for m in members]
        done: dict[int, Tensor] = {}  # id of an original tensor -> its stacked form (keeps tied weights tied)
        for prefix, sub in list(self.stacked.named_modules(remove_duplicate=False)):
            for kind, store in ((0, sub._parameters), (1, sub._buffers)):
                for local, t in list(store.items()):
                    if t is None:
                        continue
                    if id(t) not in done:
                        key = f"{prefix}.{local}" if prefix else local
                        with torch.no_grad():
                            data = torch.stack([n[kind][key].detach() for n in named])
                        done[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if kind == 0 else data
                    setattr(sub, local, done[id(t)])  # RNN layers refresh their _flat_weights via __setattr__

    def reset_parameters(self, generators: Sequence[SeedGenerator] | SeedGenerator) -> None:
        """Re-initialise seed i exactly as ``seeded(factory, generators[i])`` would build it (S factory calls)."""
        per_seed = self._per_seed(generators)
        if per_seed is None:
            raise ConfigError("Ensemble.reset_parameters: expected one generator per seed, got None")
        for i, g in enumerate(per_seed):
            self.load_seed_module(i, seeded(self._factory, g))

    def load_seed_module(self, i: int, module: nn.Module) -> None:
        """Copy an ordinary model's parameters and buffers (same architecture) into seed i."""
        i, src, own = self._index(i), dict(module.named_parameters()) | dict(module.named_buffers()), self._tensors()
        if src.keys() != own.keys() or any(src[k].shape != t.shape[1:] for k, t in own.items()):
            raise ShapeError(f"Ensemble.load_seed_module: {type(module).__name__}'s tensors do not match the "
                             f"ensemble's {sorted(own)} (shapes without the seed axis)")
        with torch.no_grad():
            for name, t in own.items():
                t[i].copy_(src[name])

    def seed_module(self, i: int) -> nn.Module:
        """An ordinary single model (same class as ``factory()``'s) holding a copy of seed i's parameters."""
        i = self._index(i)
        memo: dict[int, object] = {}
        for p in self.stacked.parameters():
            memo[id(p)] = nn.Parameter(p.detach()[i].clone(), requires_grad=p.requires_grad)
        for b in self.stacked.buffers():
            memo[id(b)] = b[i].clone()
        return copy.deepcopy(self.stacked, memo)  # every stacked tensor is replaced by its memo'd slice

    # -- running ---------------------------------------------------------------------------------------------------
    def forward(self, *inputs):  # each tensor input (S, B, ...) -> outputs (S, B, ...)
        S = self.num_seeds
        for k, x in enumerate(inputs):
            if isinstance(x, Tensor) and (x.dim() == 0 or x.shape[0] != S):
                raise ShapeError(f"Ensemble: input {k} has shape {tuple(x.shape)}; expected a leading seed axis "
                                 f"of size num_seeds={S}")
        params, buffers = dict(self.stacked.named_parameters()), dict(self.stacked.named_buffers())
        if self.mode == "loop":
            ps = {k: v.unbind(0) for k, v in params.items()}
            bs = {k: v.unbind(0) for k, v in buffers.items()}
            xs = [x.unbind(0) if isinstance(x, Tensor) else None for x in inputs]
            outs = [functional_call(self.stacked, ({k: v[i] for k, v in ps.items()}, {k: v[i] for k, v in bs.items()}),
                                    tuple(x if u is None else u[i] for x, u in zip(inputs, xs)))
                    for i in range(S)]
            return _stack_outputs(outs)

        def one(p, b, *xs):
            return functional_call(self.stacked, (p, b), xs)

        dims = (0, 0) + tuple(0 if isinstance(x, Tensor) else None for x in inputs)
        try:
            return vmap(one, in_dims=dims, randomness="different")(params, buffers, *inputs)
        except RuntimeError as e:
            if "Batching rule not implemented" in str(e):
                raise ConfigError(f"Ensemble: torch.func.vmap cannot batch this network ({e}); "
                                  "use mode='loop' (or 'auto')") from e
            raise

    # -- per-seed gradients ------------------------------------------------------------------------------------------
    def grad_norms(self) -> Tensor:
        """Per-seed L2 norm of all parameter gradients: (S,) (parameters without a gradient count as zero)."""
        sq = [p.grad.detach().flatten(1).pow(2).sum(1) for p in self.parameters() if p.grad is not None]
        return torch.stack(sq).sum(0).sqrt() if sq else torch.zeros(self.num_seeds)

    def clip_grad_norm_(self, max_norm: float) -> Tensor:
        """Scale each seed's gradients so its norm is at most ``max_norm`` (like ``clip_grad_norm_`` per seed).

        Returns the per-seed norms before clipping, (S,).
        """
        norms = self.grad_norms()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in self.parameters():
            if p.grad is not None:
                p.grad.mul_(scale.to(p.grad).view((-1,) + (1,) * (p.dim() - 1)))
        return norms

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _index(self, i: int) -> int:
        if not isinstance(i, int) or isinstance(i, bool) or not -self.num_seeds <= i < self.num_seeds:
            raise ConfigError(f"Ensemble: seed index must be an integer in [0, {self.num_seeds}), got {i!r}")
        return i % self.num_seeds

    def _tensors(self) -> dict[str, Tensor]:
        return dict(self.stacked.named_parameters()) | dict(self.stacked.named_buffers())

    def extra_repr(self) -> str:
        return f"num_seeds={self.num_seeds}, mode={self.mode!r}"


def _stack_outputs(outs: list):
    """Stack a list of S per-seed outputs (any pytree of tensors) leaf by leaf on a new axis 0."""
    leaves, spec = zip(*(pytree.tree_flatten(o) for o in outs))
    stacked = [torch.stack(ls) if isinstance(ls[0], Tensor) else ls[0] for ls in zip(*leaves)]
    return pytree.tree_unflatten(stacked, spec[0])
