"""Diagnostics: per seed and evaluation step, what a unit's behaviour depends on (a NALU's gate and the weights of
each path, a recurrent cell's recurrent weights), stored in the results store like any other metric so that the
report can show why a claim holds or fails.

Every module of a model that has a ``diagnostics(x)`` method (every :class:`~nalm.units.base.ArithmeticUnit`, and
:class:`~nalm.units.recurrent.RecurrentCell`) is asked once per evaluation, with the inputs it saw during one forward
pass over a few rows of an evaluation set (all time steps of a recurrent pass). Names are
``diag.<module path>.<value>``, e.g. ``diag.cell.unit.gate_mean``; a model without such modules gives none.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["collect"]


@torch.no_grad()
def collect(model: nn.Module, x: Tensor, num_seeds: int, rows: int = 256, device=None) -> dict[str, Tensor]:
    """Per-seed diagnostics (S,) float64 of ``model`` over the first ``rows`` rows of x (S or 1, N, ...)."""
    seen: dict[str, tuple[nn.Module, list[Tensor]]] = {}
    hooks = []
    for name, module in model.named_modules():
        if callable(getattr(module, "diagnostics", None)):
            seen[name] = (module, [])
            hooks.append(module.register_forward_pre_hook(lambda m, args, inputs=seen[name][1]: inputs.append(
                args[0].detach())))
    if not seen:
        return {}
    xs = x[:, :rows].to(device)
    try:
        model(xs.expand((num_seeds,) + xs.shape[1:]))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, (module, inputs) in seen.items():
        if not inputs:  # a module the forward pass did not reach
            continue
        lead = 0 if getattr(module, "num_seeds", None) is None else 1  # (S, ..., in) -> (S, rows, in)
        flat = torch.cat([i.reshape(i.shape[:lead] + (-1, i.shape[-1])) for i in inputs], dim=-2)
        for key, value in module.diagnostics(flat).items():
            out[".".join(p for p in ("diag", name, key) if p)] = value.double().cpu().expand(num_seeds)
    return out
