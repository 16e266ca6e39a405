"""The model registry: which maps each microstructure model writes, its options, its sidecar
block and its citations. A new model is one module plus one :class:`ModelSpec` entry here.

Everything that names or lists maps consults this table: ``microvba fit --model`` and the
participant stage's ``--models`` (choices and per-model options), the BIDS-derivatives names
(``_model-<name>_param-<param>_dwimap``), the sidecars, which maps are normalised to MNI,
the group stage's ``--metrics`` and the report's methods paragraph. This module imports no
model code: each entry's ``fitter`` is imported when a fit is run.

A model with a ``fitter`` is fitted by :func:`microvba.models.pipeline.fit_image` through
the :class:`Fitter` protocol; the tensor and NODDI keep their own branch there (their
entries declare their maps and citations).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..io import derivatives as _derivatives


@dataclass(frozen=True)
class ModelOption:
    """One per-model option: ``--<model>-<name>`` on the command line, ``name`` in the
    fitter's keyword arguments and in ``model_options[<model>]``."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str

    def cli_flag(self, model: str) -> str:
        return f"--{model}-{self.name.replace('_', '-')}"

    def dest(self, model: str) -> str:
        return f"{model}_{self.name}"


@dataclass(frozen=True)
class ModelSpec:
    """What one model writes and how it is described.

    Attributes
    ----------
    name
        BIDS ``model-`` entity and ``--model`` choice.
    label
        Display name (``"MAP-MRI"``).
    metrics
        Scalar maps a group analysis can use, in report order (normalised to MNI).
    extras
        Other maps written in native space only (colour FA, direction, residuals, ...).
    desc_maps
        ``key -> desc`` of maps written with a ``desc-`` entity (``icvf_modulated``).
    metric_names
        Display names of the metrics (``{"rtop": "RTOP"}``).
    citations
        In-text citation -> full reference, for the methods paragraph.
    description
        Clause of the methods paragraph (``"MAP-MRI propagator scalars"``).
    options
        Per-model options (``--gqi-sampling-length``).
    fitter
        ``"module:Class"`` implementing :class:`Fitter`, or None (fitted by its own branch
        of the pipeline).
    multishell
        Needs a DSI grid or several shells (checked for every subject before any work).
    """

    name: str
    label: str
    metrics: tuple[str, ...]
    extras: tuple[str, ...] = ()
    desc_maps: Mapping[str, str] = field(default_factory=dict)
    metric_names: Mapping[str, str] = field(default_factory=dict)
    citations: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    options: tuple[ModelOption, ...] = ()
    fitter: str | None = None
    multishell: bool = False

    @property
    def maps(self) -> tuple[str, ...]:
        """Every map key this model writes."""
        return self.metrics + self.extras + tuple(self.desc_maps)

    def load_fitter(self) -> type:
        module, _, cls = str(self.fitter).partition(":")
        return getattr(importlib.import_module(module), cls)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


class Fitter(Protocol):
    """What a registry model's ``fitter`` class provides.

    ``Fitter(gtab, **options)`` raises ``InputError`` for a scheme the model cannot fit
    (before any image is read); ``fit_maps(data, mask)`` returns the maps (keys among the
    spec's ``maps``) and the sidecar block of the run.
    """

    def __init__(self, gtab: Any, **options: Any) -> None: ...

    def fit_maps(self, data: np.ndarray, mask: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...


def _weighting(text: str) -> str | float:
    """``GCV`` or a non-negative number."""
    import argparse

    if text.strip().upper() == "GCV":
        return "GCV"
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither GCV nor a number") from exc
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; pass GCV or a weight >= 0")
    return value


def _converted(text: str, kind: type[int] | type[float]) -> int | float:
    """``kind(text)``, or the argparse error that names what was expected."""
    import argparse

    try:
        return kind(text)
    except ValueError as exc:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from exc


def _positive_float(text: str) -> float:
    import argparse

    value = _converted(text, float)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


#: highest MAP-MRI radial order accepted (252 basis functions; Ozarslan et al. 2013 and DIPY
#: use 6 to 8); the basis grows as N^3 / 6, so --mapmri-radial-order 1000 would not finish
MAX_RADIAL_ORDER = 12


def _even_order(text: str) -> int:
    import argparse

    value = _converted(text, int)
    if value < 2 or value % 2 or value > MAX_RADIAL_ORDER:
        raise argparse.ArgumentTypeError(f"{text}: the radial order must be even, >= 2 and "
                                         f"<= {MAX_RADIAL_ORDER} (6 is the default)")
    return value


_DOI = "doi:"
REGISTRY: dict[str, ModelSpec] = {
    "tensor": ModelSpec(
        name="tensor", label="DTI", metrics=("fa", "md", "rd", "ad"), extras=("colorfa",),
        metric_names={"fa": "FA", "md": "MD", "rd": "RD", "ad": "AD"},
        description="diffusion-tensor metrics",
        citations={"Basser et al., 1994": (
            "Basser PJ, Mattiello J, LeBihan D. MR diffusion tensor spectroscopy and imaging. "
            f"Biophys J. 1994;66(1):259-267. {_DOI}10.1016/S0006-3495(94)80775-1")}),
    "noddi": ModelSpec(
        name="noddi", label="NODDI", metrics=("icvf", "odi", "isovf"),
        extras=("kappa", "nrmse", "direction", "sigma", "status"),
        desc_maps={"icvf_modulated": "modulated", "odi_modulated": "modulated"},
        metric_names={"icvf": "ICVF", "odi": "ODI", "isovf": "ISOVF"},
        description="NODDI metrics", multishell=True,
        citations={"Zhang et al., 2012": (
            "Zhang H, Schneider T, Wheeler-Kingshott CA, Alexander DC. NODDI: practical in "
            "vivo neurite orientation dispersion and density imaging of the human brain. "
            f"NeuroImage. 2012;61(4):1000-1016. {_DOI}10.1016/j.neuroimage.2012.03.072")}),
    "gqi": ModelSpec(
        name="gqi", label="GQI", metrics=("qa", "gfa", "iso"),
        metric_names={"qa": "QA", "gfa": "GFA", "iso": "ISO"},
        description="generalised q-sampling metrics",
        citations={
            "Yeh et al., 2010": (
                "Yeh FC, Wedeen VJ, Tseng WYI. Generalized q-sampling imaging. IEEE Trans Med "
                f"Imaging. 2010;29(9):1626-1635. {_DOI}10.1109/TMI.2010.2045126"),
            "Yeh et al., 2013": (
                "Yeh FC, Verstynen TD, Wang Y, Fernández-Miranda JC, Tseng WYI. Deterministic "
                "diffusion fiber tracking improved by quantitative anisotropy. PLoS One. "
                f"2013;8(11):e80713. {_DOI}10.1371/journal.pone.0080713")},
        options=(ModelOption("sampling_length", 1.25,
                             "GQI diffusion sampling length (DSI Studio's default 1.25)",
                             _positive_float),),
        fitter="microvba.models.gqi:GqiFitter", multishell=True),
    "mapmri": ModelSpec(
        name="mapmri", label="MAP-MRI", metrics=("rtop", "rtap", "rtpp", "msd", "ng"),
        extras=("lambda",),
        metric_names={"rtop": "RTOP", "rtap": "RTAP", "rtpp": "RTPP", "msd": "MSD",
                      "ng": "NG"},
        description="MAP-MRI propagator scalars",
        citations={
            "Özarslan et al., 2013": (
                "Özarslan E, Koay CG, Shepherd TM, et al. Mean apparent propagator (MAP) MRI: "
                "a novel diffusion imaging method for mapping tissue microstructure. "
                f"NeuroImage. 2013;78:16-32. {_DOI}10.1016/j.neuroimage.2013.04.016"),
            "Fick et al., 2016": (
                "Fick RHJ, Wassermann D, Caruyer E, Deriche R. MAPL: tissue microstructure "
                "estimation using Laplacian-regularized MAP-MRI and its application to HCP "
                f"data. NeuroImage. 2016;134:365-385. {_DOI}10.1016/j.neuroimage.2016.03.046")},
        options=(
            ModelOption("radial_order", 6, "MAP-MRI radial order (even)", _even_order),
            ModelOption("laplacian", "GCV", "MAP-MRI Laplacian weight: GCV (generalised "
                        "cross-validation per voxel) or a fixed number such as 0.2",
                        _weighting),
            ModelOption("bval_threshold", 2000.0, "MAP-MRI scale tensor fitted on volumes "
                        "with b < this (s/mm^2)", _positive_float),
        ),
        fitter="microvba.models.mapmri:MapmriFitter", multishell=True),
}
#: the study's models, fitted when none are named
DEFAULT_MODELS: tuple[str, ...] = ("tensor", "noddi")
for _spec in REGISTRY.values():  # BIDS names of every model's maps (io.derivatives)
    _derivatives.register_model_params(_spec.name, _spec.metrics)


def model_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> ModelSpec:
    """The entry of ``name``; ``InputError`` naming the choices otherwise."""
    from .._validation import InputError

    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}", file="parameter models",
                         fix=f"Choose among {', '.join(REGISTRY)}.") from None


def all_metrics() -> tuple[str, ...]:
    """Every group-analysable metric, in registry (report) order."""
    return tuple(m for spec in REGISTRY.values() for m in spec.metrics)


def metric_model() -> dict[str, str]:
    """metric or map key -> the model that writes it."""
    return {k: spec.name for spec in REGISTRY.values() for k in spec.maps}


def model_of_map(key: str) -> str:
    """The model that writes map ``key``; ``KeyError`` for a map no model declares (never
    guessed: a new map must be added to its model's entry)."""
    found = metric_model().get(key)
    if found is None:
        raise KeyError(f"map {key!r} is declared by no model of the registry "
                       f"({', '.join(REGISTRY)}); add it to its ModelSpec")
    return found


def metric_label(metric: str) -> str:
    """Display name of a metric (``"rtop"`` -> ``"RTOP"``)."""
    for spec in REGISTRY.values():
        if metric in spec.metric_names:
            return spec.metric_names[metric]
    return metric.upper()


def model_options(models: Mapping[str, Any] | Any, given: Mapping[str, Any] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Per-model options of the models that have any: defaults updated by ``given``
    (``{"gqi": {"sampling_length": 1.1}}``); unknown names raise ``InputError``."""
    from .._validation import InputError

    given = dict(given or {})
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        spec = get(name)
        if not spec.options:
            continue
        opts = spec.defaults()
        extra = dict(given.get(name) or {})
        unknown = sorted(set(extra) - set(opts))
        if unknown:
            raise InputError(f"unknown {name} option(s) {unknown}", file="parameter "
                             "model_options", fix=f"Use some of {sorted(opts)}.")
        opts.update({k: v for k, v in extra.items() if v is not None})
        out[name] = opts
    return out


def add_cli_options(parser) -> None:
    """Add ``--<model>-<option>`` for every registry option to an argparse parser/group."""
    for spec in REGISTRY.values():
        for opt in spec.options:
            parser.add_argument(opt.cli_flag(spec.name), dest=opt.dest(spec.name),
                                type=opt.parse, default=None,
                                help=f"{opt.help} (default {opt.default})")


def options_from_args(args) -> dict[str, dict[str, Any]]:
    """``{model: {option: value}}`` of the registry options given on the command line."""
    out: dict[str, dict[str, Any]] = {}
    for spec in REGISTRY.values():
        for opt in spec.options:
            value = getattr(args, opt.dest(spec.name), None)
            if value is not None:
                out.setdefault(spec.name, {})[opt.name] = value
    return out
