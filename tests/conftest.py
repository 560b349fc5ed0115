"""Shared pytest configuration: hypothesis profiles and the ``slow`` marker.

Hypothesis profiles
-------------------
- ``default``: modest example counts, no deadline (2 shared cores, timings vary) -- keeps the whole
  suite well under 10 minutes.
- ``ci``: the same as ``default`` (hypothesis loads a profile named ``ci`` by itself when it detects
  a CI environment, so it must not be heavier than ``default``).
- ``thorough``: at least 2000 examples per property, for a long run before a release.

Select one with the environment variable ``FASTCONV_HYPOTHESIS_PROFILE=thorough`` or with
hypothesis' own pytest option ``--hypothesis-profile=thorough`` (the option wins).

Slow tests
----------
Tests marked ``@pytest.mark.slow`` are deselected by default (``addopts`` in pyproject.toml);
run them with ``pytest -m slow`` or ``pytest -m ''``.
"""
import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is a test extra
    settings = None

if settings is not None:
    _common = dict(
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
        print_blob=True,
    )
    settings.register_profile("default", max_examples=40, **_common)
    settings.register_profile("ci", max_examples=40, **_common)
    settings.register_profile("thorough", max_examples=2000, **_common)
    settings.load_profile(os.environ.get("FASTCONV_HYPOTHESIS_PROFILE", "default"))

