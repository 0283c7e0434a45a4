"""Figures 4 and 6 of Trask et al. (2018): evaluating small programs (``program-add``, ``program-eval``).

- :mod:`.task`: nalm's own program generator and interpreter (nothing generated is ever run by Python).
- :mod:`.metrics`: digit accuracy, exact match and absolute error per seed.
- :mod:`.models`, :mod:`.dnc`: the seed-batched UGRNN, LSTM, DNC and LSTM + NALU read-outs.
- :mod:`.experiment`, :mod:`.report`: the experiments, their claims and report section.
"""
