"""The result of a permutation analysis: named in-mask maps, null distributions, settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._provenance import make_sidecar, save_nifti, write_json
from .._validation import InputError

#: how each map family is defined (written into the JSON sidecar)
MAP_DOCS = {
    "tstat{k}": "t statistic; tstat1 tests the contrast c, tstat2 tests -c",
    "tfce_tstat{k}": "exact TFCE of tstat{k} (positive part; no step size)",
    "{stat}": "vox (t), tfce, clustere (cluster extent), clusterm (cluster mass)",
    "{stat}_corrp_tstat{k}": "1 - p, FWE-corrected by the maximum statistic over the "
                             "permutations (as FSL randomise: > 0.95 means p < 0.05)",
    "{stat}_logp_tstat{k}": "-log10 of the FWE-corrected p",
    "vox_p_tstat{k}": "1 - p, uncorrected (each voxel's own permutation distribution)",
    "vox_unclogp_tstat{k}": "-log10 of the uncorrected p",
    "vox_fdrp_tstat{k}": "1 - q, Benjamini-Hochberg FDR-adjusted voxel p",
    "vox_fdrlogp_tstat{k}": "-log10 of the FDR q",
    "{stat}_famcorrp_tstat{k}": "1 - p, FWE-corrected over the family of images and both "
                                "directions (max over the family, as PALM -corrcon -corrmod)",
    "{stat}_famlogp_tstat{k}": "-log10 of the family-wise corrected p",
    "tfcevox_famcorrp_tstat{k}": "1 - p, the smaller of the TFCE and voxel family-wise p "
                                 "when both statistics are corrected in one family (min-p): "
                                 "significant by either statistic",
    "clustere_*/clusterm_*": "cluster extent / mass (sum of t) at the cluster-forming "
                             "threshold; each cluster voxel carries its cluster's value, "
                             "0 outside clusters",
}


@dataclass
class RandomiseResult:
    """Maps of a permutation analysis.

    Attributes
    ----------
    maps : name -> (V,) float64 in-mask vector, randomise names (``tstat1``,
        ``tfce_corrp_tstat1``, ``vox_corrp_tstat2``, ``clustere_corrp_tstat1``, ...).
    null_max : name -> (n_perm,) null distribution of the maximum statistic
        (``tfce_tstat1``, ``vox_tstat1``, ``clustere_tstat1``, ``clusterm_tstat1``;
        ``*_family`` for the family-wise maximum); entry 0 is the unpermuted data.
    params : every setting of the analysis.
    clusters : ``tstat{k}`` -> :class:`microvba.stats.clusters.Clusters` at the
        cluster-forming threshold.
    """

    maps: dict[str, np.ndarray]
    null_max: dict[str, np.ndarray]
    params: dict[str, Any]
    clusters: dict[str, Any] = field(default_factory=dict)

    def methods(self) -> str:
        """A methods paragraph describing the analysis, with references."""
        p = self.params
        scheme = ("sign flipping of the residuals (one-sample design)" if p.get("method") ==
                  "sign_flip" else "Freedman-Lane permutation of the nuisance-model residuals")
        if p.get("exchangeability_blocks"):
            scheme += f" within {p['exchangeability_blocks']} exchangeability blocks"
        parts = [
            f"Voxel-wise inference used {p['n_perm']} permutations ({scheme}; Freedman & Lane "
            f"1983; Winkler et al. 2014) of a GLM with {p['n_subjects']} subjects and "
            f"{p['df']} residual degrees of freedom over {p['n_voxels']} voxels, testing "
            + ("both directions of the contrast" if p.get("two_sided", True)
               else "the contrast in its positive direction")
            + f", with microvba (seed {p['seed']})."
        ]
        if p.get("tfce"):
            parts.append(
                f"Threshold-free cluster enhancement (Smith & Nichols 2009; H={p['tfce_H']:g}, "
                f"E={p['tfce_E']:g}, {p['tfce_connectivity']}-connectivity) was computed "
                "exactly (the integral over heights evaluated in closed form, no step size).")
        if p.get("cluster_threshold") is not None:
            parts.append(
                f"Cluster extent and mass were formed at t > {p['cluster_threshold']:g} "
                f"({p['cluster_connectivity']}-connectivity).")
        parts.append("Family-wise error was controlled with the maximum statistic over "
                     "permutations (Nichols & Holmes 2002)"
                     + (f", across {len(p['family'])} image(s)"
                        + (" and both directions" if p.get("two_sided", True) else "")
                        + " (Winkler et al. 2016)" if len(p.get("family", [])) > 1 else "")
                     + "; voxel-wise FDR used Benjamini & Hochberg (1995).")
        return " ".join(parts)

    def to_images(self, mask: np.ndarray, affine: np.ndarray,
                  header: Any = None) -> dict[str, Any]:
        """Every map as a float32 ``Nifti1Image`` (0 outside the mask)."""
        import nibabel as nib

        mask = np.asarray(mask, dtype=bool)
        n_vox = int(mask.sum())
        images = {}
        for name, values in self.maps.items():
            if values.shape != (n_vox,):
                raise InputError(f"Map {name!r} has {values.shape[0]} voxels but the mask has "
                                 f"{n_vox}.", file="mask",
                                 fix="Pass the mask the analysis was run with.")
            vol = np.zeros(mask.shape, dtype=np.float32)
            vol[mask] = values
            img = nib.Nifti1Image(vol, np.asarray(affine, dtype=float), header=header)
            img.header.set_data_dtype(np.float32)
            images[name] = img
        return images

    def save(self, out_dir: str | Path, prefix: str, mask: np.ndarray, affine: np.ndarray,
             *, inputs: dict[str, str | Path] | None = None, header: Any = None
             ) -> dict[str, Path]:
        """Write ``{prefix}_{name}.nii.gz`` for every map and ``{prefix}_randomise.json``.

        All files are written atomically. Returns name -> path (the sidecar under
        ``"sidecar"``).
        """
        out_dir = Path(out_dir)
        paths: dict[str, Path] = {}
        for name, img in self.to_images(mask, affine, header).items():
            paths[name] = save_nifti(img, out_dir / f"{prefix}_{name}.nii.gz")
        sidecar = make_sidecar(
            self.params, inputs,
            Maps={name: p.name for name, p in paths.items()},
            MapDefinitions=MAP_DOCS,
            Methods=self.methods(),
            Convention="corrp and p maps hold 1 - p as FSL randomise; permutation 0 is the "
                       "unpermuted data, so p >= 1/n_perm",
            NullMaxima={k: {"n": int(v.size), "q95": float(np.quantile(v, 0.95))}
                        for k, v in self.null_max.items()},
        )
        paths["sidecar"] = write_json(out_dir / f"{prefix}_randomise.json", sidecar)
        return paths
