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
    "tfce_tstat{k}": "exact TFCE of tstat{k} (positive part)",
    "{stat}_corrp_tstat{k}": "1 - p, FWE-corrected by the maximum statistic over the "
                             "permutations (as FSL randomise: > 0.95 means p < 0.05)",
    "{stat}_logp_tstat{k}": "-log10 of the FWE-corrected p",
    "{stat}_p_tstat{k}": "1 - p, uncorrected (voxel-wise permutation p)",
    "{stat}_unclogp_tstat{k}": "-log10 of the uncorrected p",
    "vox_fdrp_tstat{k}": "1 - q, Benjamini-Hochberg FDR-adjusted voxel p",
    "vox_fdrlogp_tstat{k}": "-log10 of the FDR q",
    "{stat}_famcorrp_tstat{k}": "1 - p, FWE-corrected over the family of images and both "
                                "directions (max over the family, as PALM -corrcon -corrmod)",
    "{stat}_famlogp_tstat{k}": "-log10 of the family-wise corrected p",
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
            Convention="corrp and p maps hold 1 - p as FSL randomise; permutation 0 is the "
                       "unpermuted data, so p >= 1/n_perm",
            NullMaxima={k: {"n": int(v.size), "q95": float(np.quantile(v, 0.95))}
                        for k, v in self.null_max.items()},
        )
        paths["sidecar"] = write_json(out_dir / f"{prefix}_randomise.json", sidecar)
        return paths
