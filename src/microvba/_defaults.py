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

# NODDI (Zhang et al. 2012): the fit (:mod:`microvba.models.noddi`), the simulator
# (:mod:`microvba.simulate.forward`), the participant stage's settings and the ``fit`` options
#: intrinsic parallel diffusivity presets (mm^2/s): white and gray matter
D_PAR_WM = 1.7e-3
D_PAR_GM = 1.1e-3
#: free-water diffusivity at body temperature (mm^2/s)
D_ISO = 3.0e-3
#: the ``--tissue`` presets of the intrinsic parallel diffusivity, and the default one
TISSUE_D_PAR = {"wm": D_PAR_WM, "gm": D_PAR_GM}
TISSUE = "wm"
