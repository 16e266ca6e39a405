r"""Generalised q-sampling imaging (GQI; Yeh et al. 2010): GFA, QA and ISO, batched.

The spin distribution function (SDF, DSI Studio's "ODF") in direction :math:`\hat u` is a
linear transform of the signal (Yeh et al. 2010, eq. 9; DIPY's ``method="standard"``):

.. math::

    \psi(\hat u) = \sum_i S_i\,\mathrm{sinc}\!\left(\sqrt{6 D b_i}\,
        \langle \hat g_i, \hat u\rangle\, L_\Delta\right),\qquad 6D = 0.01506\ \mathrm{mm^2/s},

with the diffusion sampling length :math:`L_\Delta` (DSI Studio's default 1.25), evaluated on
the vertices of a sphere. From :math:`\psi`:

* GFA (Tuch 2004): :math:`\sqrt{n\sum(\psi-\bar\psi)^2 / ((n-1)\sum\psi^2)}`
  (:func:`dipy.reconst.odf.gfa`);
* QA of the first peak (Yeh et al. 2010, eq. 12): :math:`\psi(\hat a_1) - \min\psi`, with
  :math:`\hat a_1` the largest peak (the global maximum of :math:`\psi`), divided by the
  largest peak value in the mask: the normalised QA of DSI Studio and of DIPY's
  :func:`dipy.direction.peaks_from_model` (``qa /= global_max``), comparable across subjects;
* ISO: :math:`\min\psi` (the isotropic part), with the same normalisation.

DIPY fits voxel by voxel (``peaks_from_model``, a Python loop); the SDF is one matrix
product, so this module computes it for blocks of voxels and takes the maximum and minimum
over the vertices: equal to DIPY's QA and GFA (tests/models/test_gqi.py).

References
----------
Yeh F.-C., Wedeen V.J., Tseng W.-Y.I. (2010). Generalized q-sampling imaging. IEEE Trans Med
Imaging 29:1626-1635.
Yeh F.-C. et al. (2013). Deterministic diffusion fiber tracking improved by quantitative
anisotropy. PLoS One 8:e80713 (QA); Yeh F.-C. et al. (2016). Connectometry. NeuroImage
125:162-171.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import InputError
from .gradients import GradientTable, check_data
from .mapmri import check_multishell

#: DSI Studio's default diffusion sampling length
SAMPLING_LENGTH = 1.25
#: sphere the SDF is sampled on (bundled with DIPY: no download)
SPHERE = "repulsion724"
GQI_PARAMS = ("gfa", "qa", "iso")
_CHUNK = 8192


@dataclass(frozen=True)
class GqiFit:
    """GQI maps on the image grid (zero outside the mask)."""

    gfa: np.ndarray
    qa: np.ndarray
    iso: np.ndarray
    qa_raw: np.ndarray
    normalisation: float
    mask: np.ndarray


class GqiModel:
    r"""GQI (standard method of Yeh et al. 2010) with DIPY's kernel, over blocks of voxels.

    Parameters
    ----------
    gtab
        :class:`~microvba.models.gradients.GradientTable` of a DSI grid or a multi-shell
        scheme (one shell is refused: GQI samples q-space along the radius).
    sampling_length
        Diffusion sampling length :math:`L_\Delta` (DSI Studio's default 1.25).
    sphere
        Name of a DIPY sphere bundled with the package.
    """

    def __init__(self, gtab: GradientTable, sampling_length: float = SAMPLING_LENGTH,
                 sphere: str = SPHERE) -> None:
        from dipy.data import get_sphere
        from dipy.reconst.gqi import GeneralizedQSamplingModel

        check_multishell(gtab, "GQI", "Fit the tensor (--model tensor) instead, or acquire a "
                         "DSI grid or several shells.")
        sampling_length = float(sampling_length)
        if not 0.1 <= sampling_length <= 3.0:
            raise InputError(f"diffusion sampling length {sampling_length} is outside "
                             "[0.1, 3]", file="parameter gqi_sampling_length",
                             fix="Use DSI Studio's 1.25 (1.0-1.5 are usual).")
        self.gtab = gtab
        self.sampling_length = sampling_length
        self.sphere_name = sphere
        self.sphere = get_sphere(name=sphere)
        self._dipy = GeneralizedQSamplingModel(gtab.to_dipy(), method="standard",
                                               sampling_length=sampling_length)
        # DIPY's kernel (GeneralizedQSamplingFit.odf, method "standard")
        self.kernel = np.real(np.sinc(np.dot(self._dipy.b_vector, self.sphere.vertices.T)
                                      * sampling_length / np.pi))

    def parameters(self) -> dict:
        """Every setting, for the sidecar."""
        return {"Implementation": "dipy.reconst.gqi.GeneralizedQSamplingModel kernel, "
                                  "batched SDF",
                "Method": "standard (Yeh et al. 2010)",
                "DiffusionSamplingLength": self.sampling_length,
                "Sphere": self.sphere_name, "SphereVertices": int(len(self.sphere.vertices)),
                "QA": "first (largest) peak: max(SDF) - min(SDF)",
                "QANormalisation": "divided by the largest SDF peak in the mask "
                                   "(DSI Studio normalised QA; dipy peaks_from_model)",
                "ISO": "min(SDF), same normalisation", "GFA": "dipy.reconst.odf.gfa"}

    def sdf_stats(self, signals: np.ndarray) -> np.ndarray:
        """(n, 3) ``gfa, max SDF, min SDF`` of (n, n_volumes) signals."""
        from dipy.reconst.odf import gfa

        signals = np.asarray(signals)
        out = np.empty((signals.shape[0], 3))
        for s in range(0, signals.shape[0], _CHUNK):
            odf = np.asarray(signals[s:s + _CHUNK], dtype=np.float64) @ self.kernel
            out[s:s + _CHUNK, 0] = gfa(odf)
            out[s:s + _CHUNK, 1] = odf.max(axis=1)
            out[s:s + _CHUNK, 2] = odf.min(axis=1)
        return out

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None) -> GqiFit:
        """GFA, normalised QA and ISO of every voxel of ``data`` inside ``mask``."""
        data, mask = check_data(self.gtab, data, mask)
        spatial = data.shape[:-1]
        idx = np.flatnonzero(mask.ravel())
        flat = data.reshape(-1, data.shape[-1])
        stats = np.empty((idx.size, 3))
        for s in range(0, idx.size, _CHUNK):
            stats[s:s + _CHUNK] = self.sdf_stats(flat[idx[s:s + _CHUNK]])
        # DIPY's peaks_from_model: global_max over voxels of the first peak (= max SDF)
        norm = float(stats[:, 1].max()) if idx.size else 1.0
        if not np.isfinite(norm) or norm <= 0:
            norm = 1.0
        maps = np.zeros((4,) + spatial)
        flat_maps = maps.reshape(4, -1)
        flat_maps[0, idx] = stats[:, 0]
        flat_maps[1, idx] = (stats[:, 1] - stats[:, 2]) / norm
        flat_maps[2, idx] = stats[:, 2] / norm
        flat_maps[3, idx] = stats[:, 1] - stats[:, 2]
        return GqiFit(gfa=maps[0], qa=maps[1], iso=maps[2], qa_raw=maps[3],
                      normalisation=norm, mask=mask)


class GqiFitter:
    """Registry adapter (:class:`microvba.models.registry.Fitter`): GFA, QA and ISO maps."""

    def __init__(self, gtab: GradientTable, sampling_length: float = SAMPLING_LENGTH) -> None:
        self.model = GqiModel(gtab, sampling_length=sampling_length)

    def fit_maps(self, data: np.ndarray, mask: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict]:
        f = self.model.fit(data, mask)
        return ({"qa": f.qa, "gfa": f.gfa, "iso": f.iso},
                {"GqiSettings": self.model.parameters(),
                 "QANormalisationValue": f.normalisation})
