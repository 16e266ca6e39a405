"""Brain mask (median_otsu) and MP-PCA denoising wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.models.gradients import GradientTable
from microvba.models.mask import brain_mask, denoise


def _phantom(rng):
    gtab = GradientTable(np.r_[0.0, 0.0, np.full(10, 1000.0)],
                         np.r_[np.zeros((2, 3)), rng.normal(size=(10, 3))])
    data = rng.normal(5.0, 1.0, (20, 20, 8, 12)).clip(0)
    yy, xx = np.mgrid[:20, :20]
    inside = (yy - 10) ** 2 + (xx - 10) ** 2 < 36
    data[inside] += 200.0
    return gtab, data, inside


def test_brain_mask_finds_the_object(rng):
    gtab, data, inside = _phantom(rng)
    mask = brain_mask(data, gtab, median_radius=1, numpass=1)
    assert mask.dtype == bool
    agree = np.mean(mask[:, :, 4] == inside)
    assert agree > 0.9


def test_brain_mask_needs_b0(rng):
    gtab = GradientTable(np.full(6, 1000.0), rng.normal(size=(6, 3)))
    with pytest.raises(InputError, match="no b0 volume"):
        brain_mask(np.ones((4, 4, 4, 6)), gtab)


def test_denoise_reduces_noise(rng):
    clean = np.tile(np.linspace(100, 50, 12), (12, 12, 12, 1)).astype(np.float32)
    noisy = clean + rng.normal(0, 5, clean.shape).astype(np.float32)
    out = denoise(noisy)
    assert out.shape == noisy.shape
    assert np.std(out - clean) < 0.7 * np.std(noisy - clean)
