"""Table 3 and Figure 3 of Trask et al. (2018): English number words to their value.

- :mod:`.task`: the vocabulary, the splits and the seed-batched LSTM models with their output layers.
- :mod:`.experiment`: the ``number-words`` experiment, grids, claims and report section.
"""
