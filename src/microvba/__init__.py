"""microvba: voxel-based analysis of diffusion MRI microstructure.

Fits DTI and NODDI per voxel, normalises the maps to MNI152, runs randomise-class
permutation inference (exact TFCE) against a behavioural score, follows clusters up with
atlas labels and partial correlations, and decodes them against Neurosynth/NeuroQuery.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
