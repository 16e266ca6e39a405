"""Fixtures of the registration tests."""

from __future__ import annotations

import pytest

from microvba.registration.template import Template, load_template


@pytest.fixture(scope="session")
def template4() -> Template:
    return load_template(4.0)
