r"""The demo cohort: the study's 64 subjects, real anatomy, the five findings planted.

Pipeline (one seeded generator per stage, so every part is reproducible on its own):

1. participants (:mod:`~microvba.simulate.phenotype`): resilience, age, sex, education,
   severity, realistically correlated;
2. each subject's microstructure on the template grid (MNI space,
   :mod:`~microvba.simulate.microstructure`): tissue mixture of the ICBM152 2009 probability
   maps, between-subject variation, age effects;
3. nothing elsewhere: the component of every parameter along the covariate-adjusted score is
   removed, so outside the planted regions the true maps have zero sample partial correlation
   with resilience (the tensor metrics, non-linear in the parameters, to second order);
   then the planted effects (:mod:`~microvba.simulate.effects`): amplitudes solved so that
   each region's *true* metric has exactly the study's partial r with resilience;
4. per subject, a smooth random deformation and a random rigid pose
   (:func:`~microvba.simulate.deformation.random_warp`) pull the maps into native space, fibre
   directions follow the native anatomy, and the DWI is the NODDI (+ excess tensor) signal
   (:mod:`~microvba.simulate.forward`) on the DSI-515 grid (bmax 4000) with Rician noise;
5. BIDS output plus ``code/ground_truth.json`` (planted effects, secondary effects measured on
   the truth, parameters) and ``derivatives/truth/`` (per-metric 4-D true maps in MNI space,
   one volume per participant in ``participants.tsv`` order, and the planted regions).

Size and speed. ``full=True`` is the 2 mm whole brain with all 515 DSI volumes. The default is
the whole brain on a 4 mm grid (~29k brain voxels) with the half-sphere DSI grid (258 volumes;
the signal is antipodally symmetric, so this keeps the information and halves the data):
about 15 MB and 1-4 s per subject (the latter on a loaded 2-core machine), ~1 GB for 64.
SNR (b=0, grey matter) defaults to 30 at 2 mm and, on coarser grids, to what averaging a
2 mm acquisition onto the grid gives: :math:`30\sqrt{V/8\,\mathrm{mm}^3}`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .._logging import get_logger, progress
from .._provenance import save_nifti, write_json
from .._validation import check_in_range, check_positive_int
from ..io import derivatives
from . import writer
from .anatomy import (
    Anatomy,
    build_anatomy,
    fibre_directions,
    label_centre_mm,
    load_atlas,
    region_fraction,
)
from .effects import (
    MECHANISMS,
    STUDY_EFFECTS,
    PlantedEffect,
    max_effect_scale,
    plant_parameter_effect,
    scale_effects,
    solve_tensor_effect,
    standardised_residual_score,
    tensor_effect,
)
from .forward import NoddiSimulator, add_rician_noise, excess_tensor, fit_tensor, tensor_scalars
from .microstructure import (
    PARAMETERS,
    Variability,
    clip_parameters,
    mix_tissues,
    subject_parameters,
)
from .phenotype import COVARIATES, SCORE, covariate_matrix, partial_r, simulate_participants
from .schemes import DSI_BMAX, gradient_scheme

log = get_logger(__name__)

METRICS: tuple[str, ...] = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
#: intensity of grey matter at b=0 in the written images
S0_SCALE = 1000.0
#: quadrature orientations for the true tensors (b <= 1750: 400 are accurate to ~1e-4)
TRUTH_QUADRATURE = 400


def default_snr(resolution: float) -> float:
    """b=0 grey-matter SNR: 30 at 2 mm, scaled by the square root of the voxel volume."""
    return float(30.0 * np.sqrt((resolution / 2.0) ** 3)) if resolution > 2.0 else 30.0


@dataclass(frozen=True)
class CohortSettings:
    """Everything that shapes a simulated cohort (recorded in the ground truth)."""

    n_subjects: int = 64
    resolution: float = 4.0
    full: bool = False
    seed: int = 0
    snr: float = 84.85
    scheme: str = "dsi515-half"
    bmax: float = DSI_BMAX
    dti_bmax: float = 1750.0
    max_displacement_mm: float = 4.0
    rotation_deg: float = 5.0
    translation_mm: float = 5.0
    effect_scale: float = 1.0


def _seeds(seed: int) -> dict[str, np.random.Generator]:
    names = ("participants", "parameters", "subjects")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _region_data(anatomy: Anatomy, atlas, effects) -> list[dict]:
    mask = anatomy.mask
    out = []
    for eff in effects:
        frac = region_fraction(atlas, eff.label_ids, anatomy.affine, anatomy.shape)
        weight = np.where(mask, frac, 0.0)[mask]
        out.append({"weight": weight, "inside": weight >= 0.5,
                    "centre": label_centre_mm(atlas, eff.label_ids)})
    return out


def _true_tensors(sim: NoddiSimulator, params: dict[str, np.ndarray], mean_maps: dict,
                  mu: np.ndarray, sel: np.ndarray, dti_bmax: float) -> np.ndarray:
    """True tensors (NODDI part + excess tensor) of the voxels ``sel`` for one subject."""
    p = clip_parameters({k: v[sel] for k, v in params.items()})
    signal = sim.signal(p["icvf"], p["odi"], p["isovf"], mu[sel], d_par=mean_maps["d_par"][sel],
                        delta_axial=0.0, delta_radial=0.0)
    tensor = fit_tensor(signal, sim.bvals, sim.bvecs, bmax=dti_bmax)
    return tensor + excess_tensor(mu[sel], p["delta_axial"], p["delta_radial"],
                                  p["delta_planar"])


def simulate_cohort(out_dir: str | Path, *, n_subjects: int = 64, resolution: float | None = None,
                    full: bool = False, seed: int = 0, snr: float | None = None,
                    scheme: str | None = None, data_dir: str | Path | None = None,
                    effects: tuple[PlantedEffect, ...] = STUDY_EFFECTS,
                    variability: Variability | None = None, dti_bmax: float = 1750.0,
                    write_truth_maps: bool = True, write_dwi: bool = True,
                    n_jobs: int | None = None, effect_scale: float = 1.0) -> Path:
    """Simulate the demo cohort as a BIDS dataset (see the module docstring).

    Parameters
    ----------
    out_dir
        Folder of the BIDS dataset (created; existing subject files are overwritten).
    n_subjects
        Number of participants (the study had 64).
    resolution
        Voxel size in mm of the simulation (native) and truth (MNI) grids; default 2 with
        ``full``, else 4.
    full
        2 mm whole brain, all 515 DSI volumes (slow); default is the fast demo size.
    seed
        Seed of every random draw.
    snr
        b=0 grey-matter SNR; default :func:`default_snr`.
    scheme
        ``dsi515`` (default with ``full``), ``dsi515-half`` (default otherwise) or
        ``multishell``.
    data_dir
        Folder holding ``atlases/brainnetome`` (default ``$MICROVBA_DATA``, else
        ``~/.cache/microvba``).
    effects
        Regional effects to plant (default the study's five).
    variability
        Between-subject variation of the microstructure.
    dti_bmax
        b-value limit of the tensor fit that defines the true DTI metrics (the fitter's).
    write_truth_maps
        Write ``derivatives/truth/`` (per-metric 4-D true maps in MNI space).
    write_dwi
        Simulate and write the DWI (False: participants, truth and ground truth only, in
        seconds; for checking the planted effects).
    effect_scale
        Strength of the planted effects in units of their r's Fisher z (1: exactly the
        given r; see :func:`~microvba.simulate.effects.scale_effects`).
    n_jobs
        Worker processes simulating subjects in parallel (default 1; -1 = all cores). The
        results do not depend on it (every subject has its own seeded generator); it pays
        only on an idle machine, since the forward model already uses every core.

    Returns
    -------
    Path
        ``out_dir``.
    """
    n_subjects = check_positive_int("n_subjects", n_subjects)
    variability = variability if variability is not None else Variability()
    if n_subjects < 8:
        from .._validation import InputError

        raise InputError(f"a cohort needs at least 8 subjects to plant correlations with "
                         f"{len(COVARIATES)} covariates; got {n_subjects}",
                         file="parameter n_subjects", fix="Pass --n-subjects 8 or more.")
    resolution = float(resolution if resolution is not None else (2.0 if full else 4.0))
    check_in_range("resolution", resolution, 1.0, 8.0)
    scheme = scheme or ("dsi515" if full else "dsi515-half")
    snr = float(snr) if snr is not None else default_snr(resolution)
    check_in_range("snr", snr, 1.0, 1e4)
    if effect_scale != 1.0:
        check_in_range("effect_scale", effect_scale, 0.1, max_effect_scale(effects))
        effects = scale_effects(effects, effect_scale)
    settings = CohortSettings(n_subjects=n_subjects, resolution=resolution, full=bool(full),
                              seed=int(seed), snr=snr, scheme=scheme, dti_bmax=dti_bmax,
                              effect_scale=float(effect_scale))
    bvals, bvecs = gradient_scheme(scheme, bmax=settings.bmax)
    atlas = load_atlas(data_dir)
    root = Path(out_dir)
    rngs = _seeds(settings.seed)

    anatomy = build_anatomy(resolution)
    participants = simulate_participants(n_subjects, rngs["participants"])
    labels = [pid[4:] for pid in participants["participant_id"]]
    writer.prepare_root(root, labels)
    score = participants[SCORE].to_numpy(float)
    design = covariate_matrix(participants)
    age_c = participants["age"].to_numpy(float) - participants["age"].mean()

    mask = anatomy.mask
    mean_maps = {k: v for k, v in mix_tissues(anatomy.gm, anatomy.wm, anatomy.csf).items()}
    mean_vox = {k: v[mask] for k, v in mean_maps.items()}
    mu_mni = fibre_directions(anatomy.gm, anatomy.wm, anatomy.csf, anatomy.voxel_size)[mask]
    params = [clip_parameters(subject_parameters(mean_maps, mask, anatomy.voxel_size, age_c[s],
                                                 rngs["parameters"], variability))
              for s in range(n_subjects)]
    stacked = {k: np.stack([p[k] for p in params]) for k in PARAMETERS}
    del params
    # nothing elsewhere: no parameter keeps any chance partial correlation with the score
    rhat = standardised_residual_score(score, design)
    for k in PARAMETERS:
        stacked[k] -= np.outer(rhat, rhat @ stacked[k]) / (rhat @ rhat)

    truth_sim = NoddiSimulator(bvals[bvals <= dti_bmax], bvecs[bvals <= dti_bmax],
                               n_quadrature=TRUTH_QUADRATURE)
    regions = _region_data(anatomy, atlas, effects)
    planted = []
    for eff, reg in zip(effects, regions, strict=True):
        planted.append(_plant(eff, reg, stacked, mean_vox, mu_mni, truth_sim, score, design,
                              dti_bmax))
    stacked = {k: (np.clip(v, *_bounds(k)) if k in ("icvf", "odi", "isovf") else v)
               for k, v in stacked.items()}

    writer.write_dataset_description(
        root, "microvba simulated DSI cohort (Gao et al. 2025 findings planted)",
        "simulate_cohort: ICBM152 2009 anatomy, NODDI DWI, planted resilience effects")
    writer.write_participants(root, participants)
    writer.write_readme(root, _readme(settings, effects))

    sim = NoddiSimulator(bvals, bvecs)
    truth = {m: np.zeros((n_subjects, int(mask.sum())), np.float32) for m in METRICS}
    seeds = np.random.SeedSequence(int(rngs["subjects"].integers(2**63))).spawn(n_subjects)
    tasks = ((root, labels[s], anatomy, {k: v[s] for k, v in stacked.items()}, sim,
              truth_sim, mean_vox, mu_mni, settings, seeds[s], write_dwi)
             for s in range(n_subjects))
    n_jobs = _n_jobs(n_jobs, n_subjects)
    if n_jobs == 1:
        results = map(_simulate_subject, tasks)
        pool = None
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_single_threaded)
        results = pool.map(_simulate_subject, tasks)
    try:
        for s, values in enumerate(progress(results, desc="simulate subjects",
                                            total=n_subjects, unit="subject")):
            for name, v in values.items():
                truth[name][s] = v
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    truth_r = _truth_partial_r(truth, regions, score, design)
    _write_ground_truth(root, settings, effects, regions, planted, truth_r, anatomy,
                        variability)
    if write_truth_maps:
        _write_truth_maps(root, anatomy, truth, regions, participants)
    return root


def _n_jobs(n_jobs: int | None, n_subjects: int) -> int:
    import os

    if n_jobs is None:
        n_jobs = 1
    if n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    return max(1, min(int(n_jobs), n_subjects))


def _single_threaded() -> None:
    """Worker initialiser: one numba thread per process (the processes share the cores)."""
    import numba

    numba.set_num_threads(1)


def _simulate_subject(task: tuple) -> dict[str, np.ndarray]:
    """True MNI-space metrics of one subject; writes its DWI (runs in a worker process)."""
    (root, label, anatomy, p, sim, truth_sim, mean_vox, mu_mni, settings, seed,
     write_dwi) = task
    tensor = _true_tensors(truth_sim, p, mean_vox, mu_mni, slice(None), settings.dti_bmax)
    values = {name: v.astype(np.float32) for name, v in tensor_scalars(tensor).items()}
    for name in ("icvf", "odi", "isovf"):
        values[name] = p[name].astype(np.float32)
    values.update(_fitted_noddi_truth(sim, p, mean_vox, mu_mni))
    if write_dwi:
        _write_subject(root, label, anatomy, p, sim, settings, np.random.default_rng(seed))
    return values


def _fitted_noddi_truth(sim: NoddiSimulator, p: dict, mean_vox: dict, mu: np.ndarray
                        ) -> dict[str, np.ndarray]:
    r"""True NODDI maps where an excess tensor makes them differ from the parameters.

    Where an AD or FA effect is planted the signal carries an excess tensor that NODDI does
    not model, so the fitter converges to other values than the parameters: there the truth
    is the NODDI fit (:class:`~microvba.models.NoddiModel`, :math:`d_\parallel` of the voxel)
    of the noiseless signal, as the true tensor is the tensor fit of it. These are the
    secondary NODDI effects of the planted tensor effects.
    """
    from ..models import NoddiModel
    from ..models.gradients import GradientTable
    from ..models.noddi import NoddiFit

    sel = np.flatnonzero((p["delta_axial"] != 0) | (p["delta_radial"] != 0)
                         | (p["delta_planar"] != 0))
    if sel.size == 0:
        return {}
    q = clip_parameters({k: v[sel] for k, v in p.items()})
    d_par = mean_vox["d_par"][sel]
    out = {k: p[k].astype(np.float32) for k in ("icvf", "odi", "isovf")}
    gtab = GradientTable(sim.bvals, sim.bvecs)
    for d in np.unique(d_par):
        grp = d_par == d
        signal = sim.signal(q["icvf"][grp], q["odi"][grp], q["isovf"][grp], mu[sel][grp],
                            d_par=float(d), delta_axial=q["delta_axial"][grp],
                            delta_radial=q["delta_radial"][grp],
                            delta_planar=q["delta_planar"][grp])
        raw = NoddiModel(gtab, d_par=float(d)).fit_voxels(signal, floor=0.0)
        fit = NoddiFit(raw, np.ones(raw.shape[0], bool))
        idx = sel[grp]
        out["icvf"][idx] = fit.icvf.ravel()
        out["odi"][idx] = fit.odi.ravel()
        out["isovf"][idx] = fit.isovf.ravel()
    return out


def _bounds(name: str) -> tuple[float, float]:
    from .microstructure import BOUNDS

    return BOUNDS[name]


def _plant(eff: PlantedEffect, reg: dict, stacked: dict, mean_vox: dict, mu: np.ndarray,
           truth_sim: NoddiSimulator, score: np.ndarray, design: np.ndarray,
           dti_bmax: float) -> dict:
    """Add one effect to ``stacked`` in place; return its amplitude and mechanism."""
    weight, inside = reg["weight"], reg["inside"]
    sel = np.flatnonzero(weight > 0)
    w, ins = weight[sel], inside[sel]
    rhat = standardised_residual_score(score, design)
    if eff.metric in ("icvf", "odi"):
        # purely through the NODDI parameter: the fitter reads it directly; the tensor metrics
        # follow by physics (secondary effects, measured on the truth)
        values, amplitude = plant_parameter_effect(stacked[eff.metric][:, sel], w, ins, score,
                                                   design, eff.r)
        stacked[eff.metric][:, sel] = values
    elif eff.metric in ("ad", "fa"):
        tensors = np.stack([
            _true_tensors(truth_sim, {k: v[s] for k, v in stacked.items()}, mean_vox, mu, sel,
                          dti_bmax) for s in range(stacked["icvf"].shape[0])])
        axial, radial, planar = tensor_effect(mu[sel], eff.metric)
        amplitude = solve_tensor_effect(tensors, excess_tensor(mu[sel], axial, radial, planar),
                                        w, ins, eff.metric, score, design, eff.r)
        step = amplitude * rhat[:, None] * w[None, :]
        stacked["delta_axial"][:, sel] += axial[None, :] * step
        stacked["delta_radial"][:, sel] += radial[None, :] * step
        stacked["delta_planar"][:, sel] += planar[None, :] * step
    else:
        raise ValueError(f"cannot plant an effect on {eff.metric!r}; "
                         f"use one of {sorted(MECHANISMS)}")
    return {"amplitude_per_sd": float(amplitude), "mechanism": MECHANISMS[eff.metric]}


def _truth_partial_r(truth: dict, regions: list[dict], score, design) -> list[dict]:
    """Partial r of every metric's true regional mean, for every planted region."""
    out = []
    for reg in regions:
        out.append({m: float(partial_r(truth[m][:, reg["inside"]].mean(axis=1), score, design))
                    for m in METRICS})
    return out


def _write_subject(root: Path, label: str, anatomy: Anatomy, p: dict, sim: NoddiSimulator,
                   settings: CohortSettings, rng: np.random.Generator) -> None:
    from .deformation import random_warp

    mask = anatomy.mask
    warp = random_warp(anatomy.image(anatomy.gm), rng,
                       max_displacement_mm=settings.max_displacement_mm,
                       rotation_deg=settings.rotation_deg,
                       translation_mm=settings.translation_mm)
    maps = [anatomy.gm, anatomy.wm, anatomy.csf, mask.astype(np.float32)]
    for name in PARAMETERS:
        grid = np.zeros(anatomy.shape, np.float32)
        grid[mask] = p[name]
        maps.append(grid)
    native = np.asarray(warp.apply(anatomy.image(np.stack(maps, axis=-1)), order=1).dataobj)
    gm, wm, csf, nmask = (native[..., k] for k in range(4))
    nmask = nmask >= 0.5
    box = _bbox(nmask, pad=1)
    crop = tuple(slice(a, b) for a, b in box)
    affine = anatomy.affine.copy()
    affine[:3, 3] = anatomy.affine[:3, :3] @ np.array([a for a, _ in box]) + affine[:3, 3]
    gm, wm, csf, nmask = gm[crop], wm[crop], csf[crop], nmask[crop]
    nat = {name: native[crop + (4 + k,)][nmask] for k, name in enumerate(PARAMETERS)}
    nat = clip_parameters(nat)
    mean_maps = mix_tissues(gm, wm, csf)
    mu = fibre_directions(gm, wm, csf, anatomy.voxel_size)[nmask]
    signal = sim.signal(nat["icvf"], nat["odi"], nat["isovf"], mu,
                        d_par=mean_maps["d_par"][nmask], delta_axial=nat["delta_axial"],
                        delta_radial=nat["delta_radial"], delta_planar=nat["delta_planar"])
    signal *= (S0_SCALE * mean_maps["s0"][nmask])[:, None]
    # noise inside the head (brain dilated by 2 voxels); zero beyond, as in a masked image
    head = ndimage.binary_dilation(nmask, iterations=2)
    values = np.zeros((int(head.sum()), sim.bvals.size), np.float32)
    values[nmask[head]] = signal
    values = add_rician_noise(values, S0_SCALE / settings.snr, rng)
    data = np.zeros(nmask.shape + (sim.bvals.size,), np.int16, order="F")
    data[head] = np.clip(np.rint(values), 0, 32767).astype(np.int16)
    writer.write_dwi(root, label, data, affine, sim.bvals, sim.bvecs,
                     writer.dwi_sidecar(settings.scheme, settings.snr))


def _bbox(mask: np.ndarray, pad: int) -> list[tuple[int, int]]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    return [(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]


def _write_ground_truth(root: Path, settings: CohortSettings, effects, regions, planted,
                        truth_r, anatomy: Anatomy, variability: Variability) -> Path:
    items, secondary = [], []
    for eff, reg, pl, tr in zip(effects, regions, planted, truth_r, strict=True):
        items.append({**eff.as_dict(), "region_label": f"{eff.code} ({eff.region})",
                      "mni_com_mm": [round(float(x), 2) for x in reg["centre"]],
                      "n_voxels": int(reg["inside"].sum()),
                      "truth_r": round(tr[eff.metric], 6), **pl})
        for metric, r in tr.items():
            if metric != eff.metric:
                secondary.append({"metric": metric, "region": eff.region, "code": eff.code,
                                  "hemisphere": eff.hemisphere,
                                  "label_ids": list(eff.label_ids),
                                  "mni_com_mm": [round(float(x), 2) for x in reg["centre"]],
                                  "truth_r": round(r, 4)})
    doc = {
        "description": "Effects planted by microvba.simulate.simulate_cohort. 'r' is the "
                       "planted partial correlation ('study_r' the study's value when the "
                       "effects were scaled by parameters.effect_scale) with resilience (covariates "
                       + ", ".join(COVARIATES) + "); 'truth_r' the same partial r of the "
                       "true regional mean in this sample. 'secondary' lists what the other "
                       "metrics do in the same regions (physics couples them).",
        "score": SCORE,
        "covariates": list(COVARIATES),
        "space": anatomy.space,
        "atlas": "Brainnetome BN-246 (Fan et al. 2016)",
        "parameters": asdict(settings),
        "variability": asdict(variability),
        "effects": items,
        "secondary": secondary,
        "truth_maps": "derivatives/truth",
    }
    return write_json(root / "code" / "ground_truth.json", doc)


def _write_truth_maps(root: Path, anatomy: Anatomy, truth: dict, regions: list[dict],
                      participants: pd.DataFrame) -> None:
    folder = root / "derivatives" / "truth"
    write_json(folder / "dataset_description.json", {
        "Name": "microvba simulation ground truth", "BIDSVersion": writer.BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "microvba", "Description": "simulate_cohort"}]})
    mask = anatomy.mask
    space = anatomy.space
    for metric, values in truth.items():
        grid = np.zeros(anatomy.shape + (values.shape[0],), np.float32)
        grid[mask] = values.T
        img = _template_image(anatomy, anatomy.to_template(grid))
        save_nifti(img, folder / derivatives.truth_map_name(space, metric))
    seg = np.zeros(anatomy.shape, np.int16)
    for k, reg in enumerate(regions, start=1):
        sel = np.zeros(int(mask.sum()), bool)
        sel[reg["inside"]] = True
        grid = np.zeros(anatomy.shape, bool)
        grid[mask] = sel
        seg[grid] = k
    save_nifti(_template_image(anatomy, anatomy.to_template(seg), np.int16),
               folder / derivatives.planted_seg_name(space))


def _template_image(anatomy: Anatomy, data: np.ndarray, dtype: type = np.float32):
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), anatomy.template_affine)
    img.header.set_xyzt_units("mm")
    return img


def _readme(settings: CohortSettings, effects) -> str:
    lines = [
        "# microvba simulated DSI cohort",
        "",
        f"{settings.n_subjects} simulated participants with a resilience score (CD-RISC-like), "
        "age, sex, education and depression severity (HAMD-like). DWI: NODDI forward model on "
        f"the {settings.scheme} scheme (bmax {settings.bmax:g} s/mm^2), Rician noise, b=0 SNR "
        f"{settings.snr:.0f} in grey matter, {settings.resolution:g} mm voxels; anatomy from the "
        "ICBM152 2009 template warped by a smooth random deformation and a random rigid pose.",
        "",
        "Planted effects (partial r with resilience; ground truth in code/ground_truth.json):",
    ]
    lines += [f"- {e.metric.upper()} in {e.region} {e.code} ({e.hemisphere}): r = {e.r:+.2f}"
              for e in effects]
    return "\n".join(lines)
