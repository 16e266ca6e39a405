"""Tissue probabilities and the synthetic T1-like contrast from DWI-derived maps."""

from __future__ import annotations

import numpy as np
import pytest
from _registration_sim import maps_from_tissue

from microvba._validation import InputError
from microvba.registration.contrast import (
    brain_mask_from_maps,
    synthetic_t1,
    template_tissue_fractions,
    tissue_probabilities,
)
from microvba.registration.qc import dice


@pytest.fixture(scope="module")
def template_maps(template4):
    tissues = [np.asarray(getattr(template4, t).dataobj) for t in ("gm", "wm", "csf")]
    return maps_from_tissue(*tissues, np.random.default_rng(0))


def test_probabilities_recover_template_tissues(template_maps, template4):
    gm_t = np.asarray(template4.gm.dataobj) >= 0.5
    for fractions in (None, template_tissue_fractions(template4)):
        p = tissue_probabilities(template_maps, fractions)
        np.testing.assert_allclose((p["gm"] + p["wm"] + p["csf"])[template_maps["mask"] > 0],
                                   1.0, atol=1e-5)
        assert dice(p["gm"] >= 0.5, gm_t) > 0.75
        assert dice(p["wm"] >= 0.5, np.asarray(template4.wm.dataobj) >= 0.5) > 0.75


def test_rank_model_is_scale_invariant(template_maps, template4):
    """FA biased upward by noise (as at low SNR) or MD in other units change nothing."""
    fr = template_tissue_fractions(template4)
    base = tissue_probabilities({k: template_maps[k] for k in ("fa", "md", "mask")}, fr)
    biased = dict(template_maps)
    biased["fa"] = 0.15 + 0.8 * template_maps["fa"]
    biased["md"] = template_maps["md"] * 1e3  # um^2/ms
    other = tissue_probabilities({k: biased[k] for k in ("fa", "md", "mask")}, fr)
    for t in ("gm", "wm", "csf"):
        np.testing.assert_allclose(other[t], base[t], atol=1e-3)  # float32 ties
    # the fixed-threshold model reads um^2/ms MD correctly too
    a = tissue_probabilities({k: template_maps[k] for k in ("fa", "md")})
    b = tissue_probabilities({"fa": template_maps["fa"], "md": biased["md"]})
    np.testing.assert_allclose(a["csf"], b["csf"], atol=1e-6)


def test_synthetic_t1_resembles_template(template_maps, template4):
    syn = synthetic_t1(template_maps, template4)
    brain = np.asarray(template4.brain_mask.dataobj) > 0
    r = np.corrcoef(syn[brain], np.asarray(template4.t1.dataobj)[brain])[0, 1]
    assert r > 0.85
    assert np.all(syn[template_maps["mask"] == 0] == 0)


def test_mask_fallbacks(template_maps):
    assert np.array_equal(brain_mask_from_maps({"md": template_maps["md"]}),
                          template_maps["md"] > 0)
    with pytest.raises(InputError, match="no map to derive a brain mask"):
        brain_mask_from_maps({"odi": template_maps["fa"]})
    with pytest.raises(InputError, match="synthetic contrast needs"):
        tissue_probabilities({"md": template_maps["md"]})
