import numpy as np
import pytest

from microvba.simulate.effects import DEMO_EFFECT_SCALE, STUDY_EFFECTS, scale_effects


def test_scale_one_keeps_the_study_r():
    same = scale_effects(STUDY_EFFECTS, 1.0)
    assert [e.r for e in same] == pytest.approx([e.r for e in STUDY_EFFECTS], abs=1e-12)
    assert [e.study_r for e in same] == [e.r for e in STUDY_EFFECTS]


def test_scale_multiplies_fisher_z_and_keeps_sign_order_and_study_r():
    scaled = scale_effects(STUDY_EFFECTS, DEMO_EFFECT_SCALE)
    for e, s in zip(STUDY_EFFECTS, scaled, strict=True):
        assert np.arctanh(s.r) == pytest.approx(DEMO_EFFECT_SCALE * np.arctanh(e.r))
        assert np.sign(s.r) == np.sign(e.r) and abs(s.r) < 1
        assert s.study_r == e.r and (s.metric, s.label_ids) == (e.metric, e.label_ids)
    # t grows as artanh(r) sqrt(n): scale s is the study's r in s^2 times the subjects
    order = np.argsort([abs(e.r) for e in STUDY_EFFECTS])
    assert list(np.argsort([abs(e.r) for e in scaled])) == list(order)
    # rescaling a scaled set still records the study's value
    assert scale_effects(scaled, 0.5)[0].study_r == STUDY_EFFECTS[0].r


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_scale_must_be_positive(bad):
    with pytest.raises(ValueError):
        scale_effects(STUDY_EFFECTS, bad)


def test_max_effect_scale_keeps_every_r_reachable():
    from microvba.simulate.effects import MAX_PLANTED_R, max_effect_scale

    top = max_effect_scale()
    assert DEMO_EFFECT_SCALE <= top
    assert max(abs(e.r) for e in scale_effects(STUDY_EFFECTS, top)) == pytest.approx(
        MAX_PLANTED_R)
