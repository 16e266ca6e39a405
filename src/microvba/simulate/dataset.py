r"""A tiny, valid BIDS diffusion dataset in seconds, for tests and quick trials.

Each subject is a small box (default 12 x 12 x 8 voxels of 2 mm) holding an ellipsoidal
"brain" whose voxels are random mixtures of grey matter, white matter and CSF (Dirichlet
fractions, lightly smoothed so that neighbours resemble each other). Microstructure follows
the tissue mixture with between-subject variation (:mod:`~microvba.simulate.microstructure`),
fibre directions vary smoothly, and the DWI is the NODDI forward model
(:mod:`~microvba.simulate.forward`) on a real gradient scheme (DIPY's DSI-515 rescaled to
bmax 4000, or a 3-shell scheme) with Rician noise. The true native-space maps are written
to ``derivatives/truth`` with the fitter's file names, so fitting can be checked against them.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .._provenance import save_nifti, write_json
from .._validation import InputError, check_choice, check_in_range, check_positive_int
from ..io.derivatives import SPACE_NATIVE, map_path
from . import writer
from .forward import NoddiSimulator, add_rician_noise, excess_tensor, fit_tensor, tensor_scalars
from .microstructure import Variability, clip_parameters, mix_tissues, subject_parameters
from .phenotype import simulate_participants
from .schemes import SCHEMES, gradient_scheme

VOXEL_MM = 2.0


def _tissues(shape: tuple[int, int, int], rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random smooth tissue fractions inside an ellipsoid; zero outside."""
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape, float) - 1) / 2
    radius = np.maximum(np.asarray(shape, float) / 2 - 0.5, 1.0)
    mask = (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2
            ).sum(0) <= 1.0
    raw = rng.dirichlet([1.2, 1.2, 0.4], size=shape).astype(np.float32)
    raw = np.stack([ndimage.gaussian_filter(raw[..., k], 0.8) for k in range(3)], -1)
    raw /= raw.sum(-1, keepdims=True)
    gm, wm, csf = (np.where(mask, raw[..., k], 0.0).astype(np.float32) for k in range(3))
    return gm, wm, csf, mask


def _directions(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
                      for _ in range(3)], -1)
    return field / np.maximum(np.linalg.norm(field, axis=-1, keepdims=True), 1e-12)


def simulate_dataset(out_dir: str | Path, n_subjects: int = 4, scheme: str = "dsi515",
                     shape: tuple[int, int, int] = (12, 12, 8), seed: int = 0,
                     noise_snr: float = 30.0) -> Path:
    """Write a small simulated BIDS dataset and return its root.

    Parameters
    ----------
    out_dir
        Dataset root (created).
    n_subjects
        Number of subjects (``sub-01`` ...).
    scheme
        ``dsi515`` (DIPY's DSI-515 grid, bmax 4000), ``dsi515-half`` or ``multishell``
        (b = 0, 1000, 2000, 3000 with 30/60/90 directions).
    shape
        Image size in voxels (2 mm isotropic).
    seed
        Seed of every random draw (same seed, same files).
    noise_snr
        b=0 signal-to-noise ratio of grey matter (Rician noise; ``inf`` for none).

    Returns
    -------
    Path
        ``out_dir``, holding ``dataset_description.json``, ``participants.tsv``,
        ``sub-XX/dwi/sub-XX_dwi.{nii.gz,bval,bvec,json}`` and ``derivatives/truth``.
    """
    n_subjects = check_positive_int("n_subjects", n_subjects)
    scheme = check_choice("scheme", scheme, SCHEMES)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 3:
        raise InputError(f"shape must be three sizes of at least 3 voxels; got {shape}",
                         file="parameter shape", fix="Pass e.g. shape=(12, 12, 8).")
    snr = float(noise_snr)
    if not np.isinf(snr):
        check_in_range("noise_snr", snr, 1.0, 1e6)
    root = Path(out_dir)
    bvals, bvecs = gradient_scheme(scheme)
    seq = np.random.SeedSequence(int(seed))
    rng_pheno, rng_anat, *sub_seeds = (np.random.default_rng(s)
                                       for s in seq.spawn(2 + n_subjects))
    participants = simulate_participants(n_subjects, rng_pheno)
    gm, wm, csf, mask = _tissues(shape, rng_anat)
    mu_grid = _directions(shape, rng_anat)
    mean_maps = mix_tissues(gm, wm, csf)
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (np.asarray(shape) - 1) / 2
    sim = NoddiSimulator(bvals, bvecs)
    variability = Variability(field_fwhm_mm=8.0)
    age_c = participants["age"].to_numpy(float) - participants["age"].mean()

    writer.prepare_root(root, [pid[4:] for pid in participants["participant_id"]])
    writer.write_dataset_description(root, "microvba small simulated dataset",
                                     "simulate_dataset: random tissue mixtures, NODDI DWI")
    writer.write_participants(root, participants)
    writer.write_readme(root, f"Small simulated diffusion dataset ({n_subjects} subjects, "
                              f"{scheme} scheme, SNR {snr:g}) written by microvba.")
    truth_root = root / "derivatives" / "truth"
    write_json(truth_root / "dataset_description.json", {
        "Name": "microvba simulation ground truth", "BIDSVersion": writer.BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "microvba", "Description": "simulate_dataset"}]})
    mu = mu_grid[mask]
    for s, rng in enumerate(sub_seeds):
        label = participants["participant_id"][s][4:]
        p = clip_parameters(subject_parameters(mean_maps, mask, np.full(3, VOXEL_MM),
                                               age_c[s], rng, variability))
        d_par = mean_maps["d_par"][mask]
        signal = sim.signal(p["icvf"], p["odi"], p["isovf"], mu, d_par=d_par,
                            delta_axial=p["delta_axial"], delta_radial=p["delta_radial"],
                            delta_planar=p["delta_planar"])
        data = np.zeros(shape + (bvals.size,), np.float32)
        data[mask] = signal * (1000.0 * mean_maps["s0"][mask])[:, None]
        if not np.isinf(snr):
            data = add_rician_noise(data, 1000.0 / snr, rng)
        writer.write_dwi(root, label, data, affine, bvals, bvecs,
                         writer.dwi_sidecar(scheme, snr))
        clean = sim.signal(p["icvf"], p["odi"], p["isovf"], mu, d_par=d_par)
        tensor = fit_tensor(clean, bvals, bvecs) + excess_tensor(
            mu, p["delta_axial"], p["delta_radial"], p["delta_planar"])
        maps = {**tensor_scalars(tensor), "icvf": p["icvf"], "odi": p["odi"],
                "isovf": p["isovf"]}
        for name, values in maps.items():
            grid = np.zeros(shape, np.float32)
            grid[mask] = values
            img = nib.Nifti1Image(grid, affine)
            img.header.set_xyzt_units("mm")
            save_nifti(img, map_path(truth_root, label, name, space=SPACE_NATIVE))
    return root
