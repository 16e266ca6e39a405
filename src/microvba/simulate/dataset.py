r"""A small, valid BIDS diffusion dataset in seconds, for trials and tests.

Two anatomies:

``brain`` (the default; what ``microvba simulate OUT`` writes)
    A whole brain on a coarse grid (default 4 mm): the ICBM152 2009 tissue probabilities
    (:func:`~microvba.simulate.anatomy.build_anatomy`, shipped with nilearn, so no download)
    pulled into each subject's native space by a smooth random deformation and a random rigid
    pose (:func:`~microvba.simulate.deformation.random_warp`), cropped to the head. Fibres
    follow the anatomy (:func:`~microvba.simulate.anatomy.fibre_directions`). This is the
    dataset for trying the whole pipeline: it covers the template's field of view, so the
    participant stage's normalisation to MNI succeeds and passes its QC, and the group stage
    runs (``microvba BIDS OUT participant`` then ``group --score resilience``).
``box`` (pass ``shape``)
    A small box (e.g. 12 x 12 x 8 voxels of 2 mm) holding an ellipsoidal "brain" whose voxels
    are random mixtures of grey matter, white matter and CSF (Dirichlet fractions, lightly
    smoothed so that neighbours resemble each other). Fitting it takes seconds, so it suits
    tests of the fitting; it is *not* a brain, and its normalisation to MNI fails the
    registration QC (every subject is an outlier in the group stage).

In both, microstructure follows the tissue mixture with between-subject variation
(:mod:`~microvba.simulate.microstructure`) and the DWI is the NODDI forward model
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

#: voxel size of the ``box`` anatomy
VOXEL_MM = 2.0
#: default voxel size of the ``brain`` anatomy
BRAIN_RESOLUTION_MM = 4.0
ANATOMIES = ("brain", "box")
#: intensity of grey matter at b=0 in the written images
S0_SCALE = 1000.0
#: pose and warp of each ``brain`` subject: small enough for any registration to recover
MAX_DISPLACEMENT_MM = 3.0
ROTATION_DEG = 5.0
TRANSLATION_MM = 5.0


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


def _box_subjects(shape: tuple[int, int, int], rng_anat: np.random.Generator):
    """The ``box`` anatomy: one random tissue mixture shared by every subject."""
    gm, wm, csf, mask = _tissues(shape, rng_anat)
    mu = _directions(shape, rng_anat)[mask]
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (np.asarray(shape) - 1) / 2

    def subject(rng: np.random.Generator) -> dict:
        return {"gm": gm, "wm": wm, "csf": csf, "mask": mask, "mu": mu, "affine": affine,
                "head": np.ones(shape, bool)}

    return subject


def _brain_subjects(resolution: float):
    """The ``brain`` anatomy: template tissues under a random warp and pose per subject."""
    from .anatomy import build_anatomy, fibre_directions
    from .cohort import _bbox
    from .deformation import random_warp

    anatomy = build_anatomy(resolution)
    reference = anatomy.image(anatomy.gm)
    tissues = anatomy.image(np.stack([anatomy.gm, anatomy.wm, anatomy.csf,
                                      anatomy.mask.astype(np.float32)], axis=-1))

    def subject(rng: np.random.Generator) -> dict:
        warp = random_warp(reference, rng, max_displacement_mm=MAX_DISPLACEMENT_MM,
                           rotation_deg=ROTATION_DEG, translation_mm=TRANSLATION_MM)
        native = np.asarray(warp.apply(tissues, order=1).dataobj, dtype=np.float32)
        mask = native[..., 3] >= 0.5
        # the head: the brain and 2 voxels around it (noise there, zero beyond)
        crop = tuple(slice(a, b) for a, b in _bbox(mask, pad=3))
        affine = anatomy.affine.copy()
        affine[:3, 3] = nib.affines.apply_affine(anatomy.affine, [c.start for c in crop])
        gm, wm, csf = (np.where(mask, native[..., k], 0.0)[crop] for k in range(3))
        mask = mask[crop]
        mu = fibre_directions(gm, wm, csf, anatomy.voxel_size)[mask]
        return {"gm": gm, "wm": wm, "csf": csf, "mask": mask, "mu": mu, "affine": affine,
                "head": ndimage.binary_dilation(mask, iterations=2)}

    return subject


def simulate_dataset(out_dir: str | Path, *, n_subjects: int = 4, scheme: str = "dsi515",
                     shape: tuple[int, int, int] | None = None, seed: int = 0,
                     noise_snr: float | None = None, anatomy: str | None = None,
                     resolution: float = BRAIN_RESOLUTION_MM) -> Path:
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
        ``box`` anatomy: image size in voxels (2 mm isotropic), e.g. ``(12, 12, 8)``. Passing
        it selects the ``box`` anatomy unless ``anatomy`` says otherwise.
    seed
        Seed of every random draw (same seed, same files).
    noise_snr
        b=0 signal-to-noise ratio of grey matter (Rician noise; ``inf`` for none). Default
        30 for the ``box`` (2 mm voxels); for the ``brain`` what averaging a 2 mm acquisition
        with SNR 30 onto the grid gives (:func:`~microvba.simulate.cohort.default_snr`).
    anatomy
        ``brain`` (default without ``shape``: the template brain, warped per subject, which
        the whole pipeline can normalise) or ``box`` (a tiny random tissue mixture; fast,
        for tests of the fitting; see the module docstring).
    resolution
        ``brain`` anatomy: voxel size in mm (default 4).

    Returns
    -------
    Path
        ``out_dir``, holding ``dataset_description.json``, ``participants.tsv``,
        ``sub-XX/dwi/sub-XX_dwi.{nii.gz,bval,bvec,json}`` and ``derivatives/truth``.
    """
    n_subjects = check_positive_int("n_subjects", n_subjects)
    scheme = check_choice("scheme", scheme, SCHEMES)
    anatomy = check_choice("anatomy", anatomy if anatomy is not None
                           else ("brain" if shape is None else "box"), ANATOMIES)
    if anatomy == "box":
        shape = tuple(int(n) for n in (shape if shape is not None else (12, 12, 8)))
        if len(shape) != 3 or min(shape) < 3:
            raise InputError(f"shape must be three sizes of at least 3 voxels; got {shape}",
                             file="parameter shape", fix="Pass e.g. shape=(12, 12, 8).")
    else:
        if shape is not None:
            raise InputError("shape applies to the 'box' anatomy only",
                             file="parameter shape",
                             fix="Pass anatomy='box' with shape, or resolution for the brain.")
        resolution = check_in_range("resolution", float(resolution), 1.0, 8.0)
    if noise_snr is None:
        from .cohort import default_snr

        noise_snr = 30.0 if anatomy == "box" else default_snr(resolution)
    snr = float(noise_snr)
    if not np.isinf(snr):
        check_in_range("noise_snr", snr, 1.0, 1e6)
    root = Path(out_dir)
    bvals, bvecs = gradient_scheme(scheme)
    seq = np.random.SeedSequence(int(seed))
    rng_pheno, rng_anat, *sub_seeds = (np.random.default_rng(s)
                                       for s in seq.spawn(2 + n_subjects))
    participants = simulate_participants(n_subjects, rng_pheno)
    if anatomy == "box":
        subject_anatomy = _box_subjects(shape, rng_anat)
        variability = Variability(field_fwhm_mm=8.0)
        what = "random tissue mixtures"
        size = f"{'x'.join(str(n) for n in shape)} voxels of {VOXEL_MM:g} mm"
    else:
        subject_anatomy = _brain_subjects(resolution)
        variability = Variability()
        what = "ICBM152 2009 anatomy under random warps"
        size = f"whole brain, {resolution:g} mm voxels"
    sim = NoddiSimulator(bvals, bvecs)
    age_c = participants["age"].to_numpy(float) - participants["age"].mean()

    writer.prepare_root(root, [pid[4:] for pid in participants["participant_id"]])
    writer.write_dataset_description(root, "microvba small simulated dataset",
                                     f"simulate_dataset: {what}, NODDI DWI")
    writer.write_participants(root, participants)
    writer.write_readme(root, f"Small simulated diffusion dataset ({n_subjects} subjects, "
                              f"{what}, {size}, {scheme} scheme, SNR {snr:g}) written by "
                              "microvba.")
    truth_root = root / "derivatives" / "truth"
    write_json(truth_root / "dataset_description.json", {
        "Name": "microvba simulation ground truth", "BIDSVersion": writer.BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "microvba", "Description": "simulate_dataset"}]})
    for s, rng in enumerate(sub_seeds):
        label = participants["participant_id"][s][4:]
        sub = subject_anatomy(rng)
        mask, mu, affine = sub["mask"], sub["mu"], sub["affine"]
        vox = nib.affines.voxel_sizes(affine)
        mean_maps = mix_tissues(sub["gm"], sub["wm"], sub["csf"])
        p = clip_parameters(subject_parameters(mean_maps, mask, vox, age_c[s], rng,
                                               variability))
        d_par = mean_maps["d_par"][mask]
        signal = sim.signal(p["icvf"], p["odi"], p["isovf"], mu, d_par=d_par,
                            delta_axial=p["delta_axial"], delta_radial=p["delta_radial"],
                            delta_planar=p["delta_planar"])
        data = np.zeros(mask.shape + (bvals.size,), np.float32)
        data[mask] = signal * (S0_SCALE * mean_maps["s0"][mask])[:, None]
        if not np.isinf(snr):
            head = sub["head"]
            data[head] = add_rician_noise(data[head], S0_SCALE / snr, rng)
        writer.write_dwi(root, label, data, affine, bvals, bvecs,
                         writer.dwi_sidecar(scheme, snr))
        clean = sim.signal(p["icvf"], p["odi"], p["isovf"], mu, d_par=d_par)
        tensor = fit_tensor(clean, bvals, bvecs) + excess_tensor(
            mu, p["delta_axial"], p["delta_radial"], p["delta_planar"])
        maps = {**tensor_scalars(tensor), "icvf": p["icvf"], "odi": p["odi"],
                "isovf": p["isovf"]}
        for name, values in maps.items():
            grid = np.zeros(mask.shape, np.float32)
            grid[mask] = values
            img = nib.Nifti1Image(grid, affine)
            img.header.set_xyzt_units("mm")
            save_nifti(img, map_path(truth_root, label, name, space=SPACE_NATIVE))
    return root
