"""Table 1 of Trask et al. (2018): static and recurrent arithmetic on one network of two units.

- :mod:`.task`: the static task (sums of input subsets, then an operation) and the recurrent one (a running target).
- :mod:`.thresholds`: the success criterion (the MSE of an ε-perturbed exact solution, Madsen & Johansen 2020).
- :mod:`.experiment`: ``arithmetic`` and ``arithmetic-recurrent``, grids, costs and claims.
- :mod:`.report`: the report section (Table 1 beside the paper, success rates, figures).
- :mod:`.bench`: ``nalm bench throughput``, seed-iterations per second of the seed axis against a one-model loop.
"""
