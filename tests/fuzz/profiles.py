"""Hypothesis settings for the fuzz targets.

- "ci" (the default in the test suite): derandomized, so a run is reproducible and a red test
  stays red; no example database; bounded so the four targets together stay well under a minute
  on two cores.
- "fuzz" (`make fuzz`): random, many examples, failures saved to the local example database
  (`.hypothesis/`, not committed) so a rerun replays them first.

Set AIOPOOL_FUZZ_PROFILE=fuzz to run the pytest targets with the long profile (50 times the
examples: lift pytest's per-test timeout too, `--timeout=0`).
The profiles are applied per test with `settings(parent=...)`, never loaded globally, so other
property tests in the suite keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ("CI", "FUZZ", "active", "scale")

# Each example dials a socket, runs a request and a follow-up, and closes a client: slow by
# Hypothesis' standards (milliseconds, or a linger of tens of ms when a response never ends).
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

CI = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=_SLOW_OK,
    print_blob=False,
)

FUZZ = settings(
    derandomize=False,
    deadline=None,
    max_examples=2_000,
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)


def scale() -> int:
    """How many times the per-test example counts to run (the "fuzz" profile: 50)."""
    return 50 if active() is FUZZ else 1


def active() -> settings:
    """The profile the pytest targets run with: "ci" unless AIOPOOL_FUZZ_PROFILE=fuzz."""
    return FUZZ if os.environ.get("AIOPOOL_FUZZ_PROFILE", "ci") == "fuzz" else CI
