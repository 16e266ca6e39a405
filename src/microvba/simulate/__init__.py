"""Simulated data: small BIDS datasets for tests, and the demo cohort with planted effects.

- :func:`simulate_dataset`: a tiny valid BIDS diffusion dataset in seconds (tests).
- :func:`simulate_cohort`: the study's cohort (64 subjects, ICBM152 anatomy, random warps,
  DSI-515 DWI) with its five findings planted at the study's r; ground truth in
  ``code/ground_truth.json`` and ``derivatives/truth``.
- :data:`STUDY_EFFECTS`: the planted findings; :func:`gradient_scheme`: real DSI / multi-shell
  gradient tables; :class:`NoddiSimulator`: fast whole-brain NODDI forward model.
- :func:`expected_statistics`: voxelwise partial-r t of a cohort's true maps (how detectable
  the planted effects are before any fitting).
- :mod:`microvba.simulate.deformation`: smooth random warps with known inverses.
"""

from .check import expected_statistics
from .cohort import CohortSettings, default_snr, simulate_cohort
from .dataset import simulate_dataset
from .effects import STUDY_EFFECTS, PlantedEffect
from .forward import NoddiSimulator, add_rician_noise, tensor_metrics
from .phenotype import simulate_participants
from .schemes import SCHEMES, gradient_scheme

__all__ = [
    "STUDY_EFFECTS",
    "SCHEMES",
    "CohortSettings",
    "NoddiSimulator",
    "PlantedEffect",
    "add_rician_noise",
    "default_snr",
    "expected_statistics",
    "gradient_scheme",
    "simulate_cohort",
    "simulate_dataset",
    "simulate_participants",
    "tensor_metrics",
]
