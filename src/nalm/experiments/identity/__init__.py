"""Figure 1 of Trask et al. (2018): MLPs with many activations fail to extrapolate the identity.

- :mod:`.task`: the identity task (scalar in, scalar out, training and test ranges).
- :mod:`.experiment`: the ``identity`` experiment, its grids, Figure 1 and its claim.
"""
