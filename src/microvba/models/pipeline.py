"""Fit the tensor and NODDI to one DWI series and write BIDS-derivative maps.

One public function, :func:`fit_image`; the participant stage calls it once per subject and
``microvba fit`` once per image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _defaults
from .._logging import get_logger
from .._provenance import is_up_to_date, make_sidecar, save_nifti, write_json
from .._validation import InputError, check_choice
from ..io import derivatives
from ..io.bids import nifti_read_errors, nifti_read_fix
from ..io.derivatives import image_like, sidecar_path
from ..io.gradients import no_b0_problem, non_unit_problem, read_bvals, read_bvecs
from .dti import TensorModel
from .gradients import GradientTable
from .noddi import D_ISO, NoddiModel
from .registry import DEFAULT_MODELS, REGISTRY, model_of_map, model_options

log = get_logger(__name__)

MODELS = DEFAULT_MODELS  # fitted by default; every registry model can be asked for
TISSUE_D_PAR = _defaults.TISSUE_D_PAR


def map_filename(prefix: str, model: str, param: str, desc: str | None = None) -> str:
    """``{prefix}[_desc-{desc}]_model-{model}_param-{param}_dwimap.nii.gz``."""
    return derivatives.model_map_name(prefix, model, param, desc)


def mask_filename(prefix: str) -> str:
    return derivatives.brain_mask_name(prefix)


def b0_filename(prefix: str) -> str:
    """Mean b0 reference (a registration contrast)."""
    return derivatives.meanb0_name(prefix)


def planned_outputs(out_dir: str | Path, prefix: str, models: Sequence[str]
                    ) -> dict[str, Path]:
    """Every map :func:`fit_image` writes, keyed by parameter name."""
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if "tensor" in models:
        for p in ("fa", "md", "rd", "ad", "colorfa"):
            paths[p] = out / map_filename(prefix, "tensor", p)
    if "noddi" in models:
        for p in ("icvf", "odi", "isovf", "kappa", "nrmse", "direction"):
            paths[p] = out / map_filename(prefix, "noddi", p)
        for p in ("icvf", "odi"):
            paths[f"{p}_modulated"] = out / map_filename(prefix, "noddi", p, desc="modulated")
        # noise sd of the Rician floor and the fit status (0 outside, 1 fitted, 2 at a
        # bound, 3 no fit)
        paths["sigma"] = out / map_filename(prefix, "noddi", "sigma")
        paths["status"] = out / map_filename(prefix, "noddi", "status")
    for name in models:  # models fitted through the registry (gqi, mapmri, ...)
        spec = REGISTRY[name]
        if spec.fitter is not None:
            for p in spec.metrics + spec.extras:
                paths[p] = out / map_filename(prefix, name, p)
    paths["b0"] = out / b0_filename(prefix)
    paths["mask"] = out / mask_filename(prefix)
    return paths


def _check_models(models: Sequence[str]) -> tuple[str, ...]:
    models = tuple(models)
    if not models:
        raise InputError("no model requested", file="parameter models",
                         fix="Pass --model tensor, noddi or tensor,noddi.")
    for m in models:
        check_choice("model", m, list(REGISTRY))
    return models


def _load_dwi(dwi_path: Path, gtab: GradientTable):
    import nibabel as nib

    try:
        img = nib.load(str(dwi_path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"cannot read the DWI image ({exc})", file=dwi_path,
                         fix=nifti_read_fix(dwi_path)) from exc
    if len(img.shape) == 5 and img.shape[3] == 1:  # (x, y, z, 1, n): a time axis of one
        img = img.slicer[:, :, :, 0, :]
    if len(img.shape) != 4:
        raise InputError(f"the DWI image is {len(img.shape)}-D {img.shape}; a 4-D series is "
                         "needed", file=dwi_path, fix="Give the 4-D diffusion series.")
    if img.shape[3] != gtab.n_volumes:
        raise InputError(f"the image has {img.shape[3]} volumes but the gradient table has "
                         f"{gtab.n_volumes}", file=dwi_path,
                         fix="Use the .bval/.bvec files written with this DWI series.")
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except nifti_read_errors() as exc:
        raise InputError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})",
                         file=dwi_path,
                         fix="Copy or re-export the file again; its data ends before the "
                             "header says or does not decompress.") from exc
    return img, data


def _load_mask(mask_path: Path, dwi_img) -> np.ndarray:
    """The mask as a boolean array on the DWI grid (nonzero = inside), checked."""
    import nibabel as nib

    shape = tuple(dwi_img.shape[:3])
    try:
        mask_img = nib.load(str(mask_path))
        m = np.asanyarray(mask_img.dataobj)
    except nifti_read_errors() as exc:
        raise InputError(f"cannot read the mask ({type(exc).__name__}: {exc})",
                         file=mask_path, fix="Pass a readable 3-D NIfTI mask.") from exc
    if m.ndim == 4 and m.shape[3] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} differs from the DWI grid {shape}",
                         file=mask_path, fix="Give a mask in the DWI's voxel grid.")
    if not np.allclose(mask_img.affine, dwi_img.affine, atol=1e-3):
        raise InputError("the mask has the DWI's shape but another affine (voxel-to-world "
                         "transform), so it is in another space or position",
                         file=mask_path,
                         fix="Use a mask computed on this DWI series (e.g. from its mean b0), "
                             "or resample it onto the DWI grid.")
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    mask = m > 0
    if not mask.any():
        raise InputError("the mask is empty (no voxel > 0)", file=mask_path,
                         fix="Pass a mask with the brain voxels set to 1, or leave out --mask "
                             "to compute one.")
    values = np.unique(m[mask])
    if values.size > 1 or values[0] != 1:
        log.warning("%s: the mask is not binary (values %g to %g); every voxel > 0 is "
                    "fitted", mask_path, values.min(), values.max())
    return mask


def _nonfinite_voxels(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-D boolean maps of the voxels with a NaN or infinite value in any volume, and in
    every volume (background written as NaN by a masking tool)."""
    bad = np.zeros(data.shape[:3], bool)
    empty = np.ones(data.shape[:3], bool)
    for v in range(data.shape[3]):  # one volume at a time: no full-size temporary
        finite = np.isfinite(data[..., v])
        bad |= ~finite
        empty &= ~finite
    return bad, empty


def _check_finite(data: np.ndarray, mask: np.ndarray, dwi_path: Path, given: bool) -> None:
    """InputError when a voxel of the mask holds NaN or infinite values; those outside the
    mask are set to 0 in ``data`` (so that denoising patches never spread them inside)."""
    bad, empty = _nonfinite_voxels(data)
    if not given and (empty & mask).any():
        # the automatic mask's dilation reaches a background stored as NaN: not brain
        log.warning("%s: %d voxel(s) of the automatic brain mask are NaN or infinite in "
                    "every volume (background); left out of the mask", dwi_path,
                    int((empty & mask).sum()))
        mask &= ~empty
    inside = bad & mask
    if inside.any():
        first = tuple(int(i) for i in np.argwhere(inside)[0])
        where = "the given mask" if given else "the brain mask"
        raise InputError(f"{int(inside.sum())} voxel(s) inside {where} hold NaN or infinite "
                         f"values (first at voxel {first})", file=dwi_path,
                         fix="Replace non-finite values by 0 (e.g. fslmaths in -nan out), or "
                             "exclude those voxels with --mask.")
    if bad.any():
        log.warning("%s: %d voxel(s) with NaN or infinite values outside the mask are "
                    "ignored (set to 0)", dwi_path, int(bad.sum()))
        for v in range(data.shape[3]):  # in place, on our copy: no NaN reaches a filter
            np.nan_to_num(data[..., v], copy=False, nan=0.0, posinf=0.0, neginf=0.0)


#: a series whose mean b=0 signal is not positive in more than this fraction of the mask
#: voxels is refused before fitting (every model divides by it)
MAX_NONPOSITIVE_B0_FRACTION = 0.5


def _check_signal(data: np.ndarray, mask: np.ndarray, gtab: GradientTable, dwi_path: Path,
                  bval_path: str | Path, prefix: str, b0: bool = True) -> None:
    r"""Refuse, before any fit, signal no model can use.

    * A volume that is zero in every voxel of the image: a dropped or
      unreconstructed volume (an interrupted scan, a volume zeroed by eddy's outlier
      replacement gone wrong, a padded series). Its :math:`\log S` is undefined and the
      tensor fit, which clips it to a tiny positive signal, reads it as complete attenuation
      along that direction (FA of the crop ``msmt_dwi`` rises from 0.12 to 0.61 with one
      such volume): :class:`InputError`.
    * A diffusion-weighted volume whose whole-image mean is :math:`\le 0` while the b=0
      volumes' mean is positive (inverted), likewise
      (:func:`~microvba.io.nifti_checks.signal_volume_problems`, which the BIDS App's
      up-front validation applies to the streamed scan of each series).
    * With ``b0`` (models without NODDI, whose fit makes the same check per voxel), a mean
      b=0 signal :math:`\bar S_0 \le 0` in more than
      :data:`MAX_NONPOSITIVE_B0_FRACTION` of the mask voxels (empty or inverted b=0
      volumes, a negative ``scl_slope``): every model normalises by :math:`\bar S_0`, so
      the maps would be meaningless (the tensor would still write them):
      :class:`FitFailedError`, a failed subject (exit 1) as when NODDI fails there.
    """
    # whole-image figures, not the mask's: a small mask in CSF may hold no positive value at
    # a high b on real (denoised, eddy-corrected) data (see signal_volume_problems)
    from ..io.nifti_checks import signal_volume_problems

    n_vol = data.shape[-1]
    mean, vmin, vmax = np.full(n_vol, np.nan), np.full(n_vol, np.nan), np.full(n_vol, np.nan)
    for v in range(n_vol):  # one volume at a time (finite: _check_finite ran before)
        vol = data[..., v]
        mean[v], vmin[v], vmax[v] = vol.mean(dtype=np.float64), vol.min(), vol.max()
    found = signal_volume_problems(mean, vmin, vmax, np.asarray(gtab.bvals, float),
                                   np.asarray(gtab.b0s_mask, bool), Path(bval_path).name)
    if found:
        raise InputError("; ".join(m for m, _ in found), file=dwi_path, fix=found[-1][1])
    if not b0:
        return
    b0_volumes = np.flatnonzero(gtab.b0s_mask)
    mean_b0 = np.zeros(int(mask.sum()))
    for v in b0_volumes:  # one volume at a time: no (voxels x volumes) copy of a DSI series
        mean_b0 += data[..., v][mask]
    n_inside = mean_b0.size
    bad = int(np.sum(~(mean_b0 > 0)))  # the sum's sign is the mean's
    if bad > MAX_NONPOSITIVE_B0_FRACTION * n_inside:
        raise FitFailedError(
            f"{prefix}: the mean b=0 signal of {dwi_path} is not positive in {bad} of "
            f"{n_inside} mask voxels ({100.0 * bad / n_inside:.0f}% > "
            f"{100 * MAX_NONPOSITIVE_B0_FRACTION:.0f}%): empty or inverted b=0 volumes, or a "
            "negative scaling (scl_slope). No map was written; check the image's b=0 volumes "
            "and scaling, and that the b-values mark the right volumes as b=0.")


def _denoised(mppca, data: np.ndarray, mask: np.ndarray, dwi_path: Path) -> np.ndarray:
    """MP-PCA of ``data`` in ``mask``; InputError naming ``--denoise`` when it gives no
    usable signal: on a mask of a few voxels (1 or 18 voxels of the ``msmt`` crop) DIPY's
    ``mppca`` returns NaN there or fails with "SVD did not converge" (exit 1 before), since
    its noise estimate needs patches of mostly masked voxels."""
    n = int(mask.sum())
    problem = None
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = mppca(data, mask=mask)
    except np.linalg.LinAlgError as exc:
        problem = f"failed ({exc})"
    else:
        bad = int(np.count_nonzero(~np.isfinite(out[mask]).all(axis=-1)))
        if bad:
            problem = f"gave NaN or infinite signal in {bad} of the {n} mask voxels"
    if problem is not None:
        raise InputError(f"--denoise: MP-PCA denoising {problem}; the mask has only {n} "
                         "voxel(s), too few for its patch-wise noise estimate",
                         file=dwi_path,
                         fix="Leave out --denoise, or pass a mask that covers the brain "
                             "(at least a few hundred voxels).")
    return out


def _parameters(models, d_par, d_iso, tissue, dti_bmax, dti_method, denoise, mask_path,
                gtab, noddi_options=None, options: dict | None = None) -> dict:
    params = {"models": list(models), "d_par": d_par, "d_iso": d_iso, "tissue": tissue,
              "dti_bmax": dti_bmax, "dti_method": dti_method, "denoise": bool(denoise),
              "mask": "given" if mask_path else "median_otsu(mean b0)",
              "scheme": gtab.summary()}
    if noddi_options:  # only non-default NODDI options: earlier sidecars stay up to date
        params["noddi_options"] = dict(noddi_options)
    if options:  # only registry models with options (gqi, mapmri): older sidecars match
        params["model_options"] = options
    return params


def fit_image(dwi_path: str | Path, bval_path: str | Path, bvec_path: str | Path,
              out_dir: str | Path, prefix: str, mask_path: str | Path | None = None,
              models: Sequence[str] = MODELS, d_par: float | None = None,
              tissue: str = _defaults.TISSUE,
              d_iso: float = D_ISO, dti_bmax: float = 1750.0, dti_method: str = "wls",
              denoise: bool = False, force: bool = False,
              sources: Sequence[str | Path] | None = None, noddi_s0: str = "auto",
              noddi_noise: str = "auto", noddi_compat: str | None = None,
              options: dict[str, dict] | None = None) -> dict[str, Path]:
    """Fit the requested models to one DWI series and write the maps.

    Parameters
    ----------
    dwi_path, bval_path, bvec_path
        The 4-D series and its FSL gradient files.
    out_dir, prefix
        Output folder and file-name prefix (e.g. ``sub-01_space-orig``).
    mask_path
        Brain mask; default: DIPY ``median_otsu`` on the mean b0 (written too).
    models
        Names in :data:`microvba.models.registry.REGISTRY`: ``"tensor"``, ``"noddi"``,
        ``"gqi"``, ``"mapmri"``.
    d_par, tissue
        NODDI intrinsic diffusivity; ``d_par`` overrides the ``tissue`` preset
        (``wm`` = 1.7e-3, ``gm`` = 1.1e-3 mm²/s).
    d_iso, dti_bmax, dti_method
        NODDI isotropic diffusivity; tensor b-value limit and fit method.
    denoise
        MP-PCA denoising (DIPY) before fitting.
    force
        Refit even when the outputs are up to date.
    noddi_s0, noddi_noise, noddi_compat
        NODDI S0 handling (``auto``, ``fixed`` at the mean b0, ``fit``), noise-floor estimator
        (``auto``, ``b0``, ``pairs``, ``residual``, ``none``) and a compatibility preset
        (``toolbox``: the NODDI MATLAB toolbox's choices); see
        :class:`~microvba.models.noddi.NoddiModel`.
    sources
        The raw files the maps derive from, recorded as ``Sources`` in every sidecar (BIDS
        derivatives); default the DWI, bval and bvec given (a caller that fits a combination
        of several series passes the original files).
    options
        Per-model options of registry models, e.g. ``{"gqi": {"sampling_length": 1.25},
        "mapmri": {"laplacian": "GCV"}}`` (defaults from the registry; recorded).

    Returns
    -------
    dict
        Parameter name -> written path (``fa``, ..., ``isovf``, extras such as ``kappa``,
        ``nrmse``, ``direction``, ``colorfa``, ``icvf_modulated``; ``b0`` (mean b0 reference)
        and ``mask``).
    """
    models = _check_models(models)
    tissue = check_choice("tissue", tissue, list(TISSUE_D_PAR))
    d_par = float(TISSUE_D_PAR[tissue] if d_par is None else d_par)
    dwi_path, out_dir = Path(dwi_path), Path(out_dir)
    bvals, bvecs = read_bvals(bval_path), read_bvecs(bvec_path)
    gtab = GradientTable(bvals, bvecs, source=str(bvec_path))
    found = non_unit_problem(gtab.bvals, bvecs, gtab.b0_threshold)
    if found is not None:  # never normalised silently: a wrong file or b-value scaling
        raise InputError(found[0], file=bvec_path, fix=found[1])
    found = no_b0_problem(gtab.bvals, gtab.b0_threshold)
    if found is not None:
        raise InputError(found[0], file=bval_path, fix=found[1])
    inputs = {"dwi": dwi_path, "bval": Path(bval_path), "bvec": Path(bvec_path)}
    sources = [str(p) for p in (sources if sources is not None else inputs.values())]
    if mask_path is not None:
        inputs["mask"] = Path(mask_path)
    noddi_options = {k: v for k, v in (("s0", noddi_s0), ("noise", noddi_noise),
                                       ("compat", noddi_compat))
                     if v not in ("auto", None)}
    options = model_options(models, options)
    params = _parameters(models, d_par, d_iso, tissue, dti_bmax, dti_method, denoise,
                         mask_path, gtab, noddi_options, options)
    outputs = planned_outputs(out_dir, prefix, models)
    first = next(p for k, p in outputs.items() if k not in ("mask", "b0"))
    if not force and is_up_to_date(list(outputs.values()), sidecar_path(first), params,
                                   inputs):
        log.info("%s: outputs up to date, skipping (use --force to refit)", prefix)
        return outputs
    # build the models first: scheme errors surface before any heavy work
    tensor = TensorModel(gtab, fit_method=dti_method, bmax=dti_bmax) if "tensor" in models \
        else None
    noddi = NoddiModel(gtab, d_par=d_par, d_iso=d_iso, dti_bmax=dti_bmax, s0=noddi_s0,
                       noise=noddi_noise, compat=noddi_compat) if "noddi" in models else None
    fitters = {m: REGISTRY[m].load_fitter()(gtab, **options.get(m, {}))
               for m in models if REGISTRY[m].fitter is not None}
    log.info("%s: %s", prefix, gtab.describe())
    img, data = _load_dwi(dwi_path, gtab)
    mask = _load_mask(Path(mask_path), img) if mask_path else _auto_mask(data, gtab, dwi_path)
    _check_finite(data, mask, dwi_path, given=mask_path is not None)
    # NODDI's own check (after its fit) covers the b=0 case with the same threshold
    _check_signal(data, mask, gtab, dwi_path, bval_path, prefix, b0="noddi" not in models)
    log.info("%s: %d voxels in the mask", prefix, int(mask.sum()))
    if denoise:
        from .mask import denoise as mppca

        t0 = time.perf_counter()
        data = _denoised(mppca, data, mask, dwi_path)
        log.info("%s: MP-PCA denoising in %.1f s", prefix, time.perf_counter() - t0)
    from .mask import mean_b0

    maps: dict[str, np.ndarray] = {"b0": mean_b0(data, gtab)}
    extra: dict[str, dict] = {m: {} for m in REGISTRY}
    if tensor is not None:
        t0 = time.perf_counter()
        tf = tensor.fit(data, mask)
        maps.update(fa=tf.fa, md=tf.md, rd=tf.rd, ad=tf.ad, colorfa=tf.color_fa)
        extra["tensor"] = {"Volumes": int(tensor.volumes.size)}
        log.info("%s: tensor (%s, %d volumes with b <= %g) in %.1f s", prefix, dti_method,
                 tensor.volumes.size, dti_bmax, time.perf_counter() - t0)
        del tf
    if noddi is not None:
        t0 = time.perf_counter()
        nf = noddi.fit(data, mask, progress_desc=f"NODDI {prefix}")
        maps.update(icvf=nf.icvf, odi=nf.odi, isovf=nf.isovf, kappa=nf.kappa,
                    nrmse=nf.nrmse, direction=nf.direction, icvf_modulated=nf.icvf_modulated,
                    odi_modulated=nf.odi_modulated, sigma=nf.sigma, status=nf.status)
        sig = nf.sigma[mask & np.isfinite(nf.sigma)]
        extra["noddi"] = {"VoxelsAtBound": nf.n_bound, "VoxelsFailed": nf.n_failed,
                          "VoxelsFitted": int(np.sum(nf.status == 1)),
                          "NoiseSigmaMethod": nf.noise_method,
                          "NoiseSigmaMedian": float(np.median(sig)) if sig.size else None,
                          "NoddiSettings": noddi.parameters()}
        log.info("%s: NODDI (d_par=%g, d_iso=%g) in %.1f s; %d voxels at a bound "
                 "(ICVF or ISOVF >= 0.99), %d failed", prefix, d_par, d_iso,
                 time.perf_counter() - t0, nf.n_bound, nf.n_failed)
        del nf
    for name, fitter in fitters.items():
        t0 = time.perf_counter()
        fitted, extra[name] = fitter.fit_maps(data, mask)
        maps.update(fitted)
        log.info("%s: %s in %.1f s", prefix, REGISTRY[name].label, time.perf_counter() - t0)
        del fitted
    del data
    check_failed_fraction(extra, int(mask.sum()), dwi_path, prefix)
    return _write_maps(maps, mask, outputs, img, params, inputs, extra, sources)


#: a subject whose NODDI fit fails in more than this fraction of its mask voxels is a failed
#: subject (no map is written; the participant stage exits 1 naming it)
MAX_FAILED_FRACTION = 0.5


class FitFailedError(RuntimeError):
    """The fit failed in most of the mask: the subject's maps would be meaningless."""


def check_failed_fraction(extra: dict, n_mask: int, dwi_path: Path, prefix: str) -> None:
    """Raise :class:`FitFailedError` when NODDI failed in most of the mask.

    A voxel fails when its mean b=0 signal is not positive or a measurement is not finite
    (:attr:`~microvba.models.noddi.NoddiFit.n_failed`); failing in more than
    :data:`MAX_FAILED_FRACTION` of the mask means the image, not the tissue, is wrong.
    """
    n_failed = int(extra.get("noddi", {}).get("VoxelsFailed", 0))
    if n_mask and n_failed > MAX_FAILED_FRACTION * n_mask:
        raise FitFailedError(
            f"{prefix}: the NODDI fit failed in {n_failed} of {n_mask} mask voxels "
            f"({100.0 * n_failed / n_mask:.0f}% > {100 * MAX_FAILED_FRACTION:.0f}%): the mean "
            f"b=0 signal of {dwi_path} is not positive there (inverted or empty b=0 volumes, "
            "a negative scl_slope). No map was written; check the image's b=0 volumes and "
            "scaling (and the mask).")


def _auto_mask(data: np.ndarray, gtab: GradientTable, dwi_path: Path) -> np.ndarray:
    from .mask import brain_mask

    mask = brain_mask(data, gtab)
    if not mask.any():
        raise InputError("the automatic brain mask (median_otsu on the mean b0) is empty",
                         file=dwi_path,
                         fix="Check that the b=0 volumes hold signal (a series divided by "
                             "its b=0, constant 1 there, leaves nothing to threshold) and "
                             "cover more than a few voxels, or give a brain mask (microvba fit "
                             "--mask).")
    return mask


def _model_of(key: str, path: Path) -> str:
    """The model a map belongs to: the ``model-`` entity of its planned name, which must
    agree with the registry (a map no model declares is an error, never labelled 'noddi')."""
    found = derivatives.model_of_name(path.name)
    if found is None:
        raise KeyError(f"map {key!r} ({path.name}) has no model- entity")
    declared = model_of_map(key)  # KeyError for a map no model declares
    if declared != found:
        raise KeyError(f"map {key!r} is written as model-{found} but the registry "
                       f"declares it for {declared!r}")
    return declared


def _write_maps(maps: dict[str, np.ndarray], mask: np.ndarray, outputs: dict[str, Path],
                img, params: dict, inputs: dict, extra: dict,
                sources: list[str]) -> dict[str, Path]:
    def save(arr: np.ndarray, path: Path, model: str | None, dtype=np.float32) -> None:
        out = image_like(np.asarray(arr, dtype=dtype), img)
        side = make_sidecar(params, inputs, Sources=sources, Model=model or "none",
                            Scheme=params["scheme"], **extra.get(model or "", {}))
        # sidecar first: a map that exists always has its sidecar, and the mask NIfTI is
        # the very last file, so a run killed before it is recomputed on resume
        write_json(sidecar_path(path), side)
        save_nifti(out, path)

    written: dict[str, Path] = {}
    # write the mask last: the up-to-date check keys on the first map's sidecar
    for key, arr in maps.items():
        model = None if key == "b0" else _model_of(key, outputs[key])
        if model != "noddi":
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        # NODDI maps keep NaN inside the mask where a voxel has no fit (see the status map)
        dtype = np.uint8 if key == "status" else np.float32
        save(np.where(mask[..., None], arr, 0) if arr.ndim == 4 else np.where(mask, arr, 0),
             outputs[key], model, dtype=dtype)
        written[key] = outputs[key]
    save(mask, outputs["mask"], None, dtype=np.uint8)
    written["mask"] = outputs["mask"]
    return written
