"""Defaults declared once, referred to by the functions, settings and command-line options.

Permutation inference (FSL randomise's values where it has one): the engine
(:mod:`microvba.stats.permutation`), the multi-contrast entry point
(:mod:`microvba.stats.randomise`), the group stage's settings and the ``randomise`` options.
A module of constants only (no import), so that the command line can read it without
loading the numerical stages.
"""

#: permutations including the unpermuted data (FSL randomise ``-n``; smallest p = 1 / n)
N_PERM = 5000
#: seed of ``np.random.SeedSequence``
SEED = 0
#: TFCE height and extent exponents (Smith & Nichols 2009; FSL randomise ``-T``)
TFCE_H = 2.0
TFCE_E = 0.5
#: TFCE neighbourhood (FSL randomise: 6 for ``-T``)
TFCE_CONNECTIVITY = 6
#: cluster-forming threshold on t (FSL randomise ``-c 3.1``)
CLUSTER_THRESHOLD = 3.1
#: cluster neighbourhood (FSL randomise: 26)
CLUSTER_CONNECTIVITY = 26
