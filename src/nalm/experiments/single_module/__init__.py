"""The NALM Primer's single-module benchmark (Mistry, Farrahi & Hare, JMLR 2022, §5): every unit, nine ranges.

- :mod:`.task`: the ranges, the data of (range, seed) slots, the per-range success threshold.
- :mod:`.experiment`: ``single-module``, which unit runs on which operation, the profiles and their cost.
- :mod:`.report`: the report section (success, solved-at, sparsity per unit and range) and the claims.
- :mod:`.bench`: ``nalm bench single-module``, seed-iterations per second of all ranges at once against one range
  at a time and a one-model loop.
"""
