"""The kernels behind the seed-batched trainer's choices, timed on one thread at S = 100 seeds.

Each line compares what nalm uses with the obvious torch alternative on the shapes of one training step of the
static arithmetic network (S = 100, batch 128, 100 inputs, hidden 2):

- random training data: numpy's SFC64 raw bits turned into floats in [1, 2) vs torch.rand and numpy's
  float32 generator (12,800 values per seed);
- log and exp of the whole input (the NAC•/NALU log path);
- the batched products (S, 128, 100) @ (S, 100, 2) forward and (S, 2, 128) @ (S, 128, 100) backward.

    OMP_NUM_THREADS=1 python benchmarks/kernels.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from nalm.engine.ranges import uniform_1_2
from nalm.functional import matmul

S, B, IN, OUT = 100, 128, 100, 2


def per_call_ms(f, repeat: int = 200) -> float:
    f()
    start = time.perf_counter()
    for _ in range(repeat):
        f()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    sfc = [np.random.SFC64(i) for i in range(S)]
    pcg = [np.random.PCG64(i) for i in range(S)]
    gens = [np.random.Generator(np.random.PCG64(i)) for i in range(S)]
    out = np.empty((S, B * IN), np.float32)
    buffer = [None]

    def nalm_uniform(bitgens):
        _, buffer[0] = uniform_1_2(bitgens, (B, IN), buffer[0])

    rows += [("data: uniform_1_2 on SFC64 (nalm)", per_call_ms(lambda: nalm_uniform(sfc))),
             ("data: uniform_1_2 on PCG64", per_call_ms(lambda: nalm_uniform(pcg))),
             ("data: numpy Generator.random float32", per_call_ms(
                 lambda: [g.random(B * IN, dtype=np.float32, out=out[i]) for i, g in enumerate(gens)])),
             ("data: torch.rand", per_call_ms(lambda: torch.rand(S, B, IN)))]

    x = torch.rand(S, B, IN) + 1
    xn = x.numpy()
    rows += [("log: numpy (nalm)", per_call_ms(lambda: np.log(xn))),
             ("log: torch", per_call_ms(lambda: torch.log(x))),
             ("exp: numpy", per_call_ms(lambda: np.exp(xn))),
             ("exp: torch", per_call_ms(lambda: torch.exp(x)))]

    w = torch.rand(S, OUT, IN)
    g = torch.rand(S, B, OUT)
    rows += [("forward x Wᵀ: numpy matmul (nalm)", per_call_ms(lambda: matmul(x, w.transpose(-1, -2)))),
             ("forward x Wᵀ: torch.matmul", per_call_ms(lambda: torch.matmul(x, w.transpose(-1, -2)))),
             ("backward gᵀ x: numpy matmul (nalm)", per_call_ms(lambda: matmul(g.transpose(-1, -2), x))),
             ("backward gᵀ x: torch.matmul", per_call_ms(lambda: torch.matmul(g.transpose(-1, -2), x))),
             ("backward (xᵀ g)ᵀ: torch autograd's layout",
              per_call_ms(lambda: torch.matmul(x.transpose(-1, -2), g).transpose(-1, -2)))]

    print(f"S={S}, batch {B}, {IN} inputs, {torch.get_num_threads()} thread(s); milliseconds per call")
    for name, ms in rows:
        print(f"  {name:45s} {ms:7.3f}")


if __name__ == "__main__":
    main()
