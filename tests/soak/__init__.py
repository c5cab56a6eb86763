"""The soak: hundreds of thousands of requests through the pool, under faults, then checks.

``make soak`` (``python -m tests.soak``) drives ~300,000 requests, one ``aiopool.Client`` per
phase, over HTTP/1.1 and HTTP/2 against nginx and the fault server, with random task
cancellations, short read timeouts on slow routes, servers closing idle sockets or answering
them with a 408, resets mid-body, truncated bodies, abandoned streams, GOAWAYs, and nginx
reloaded under load. After each phase it checks that the pool settled, that every body was its
request's, that descriptors came back to their baseline, and it records memory; over the run,
that memory stayed flat after the warm-up. Any failure not expected from the fault a request
injected fails the run. ``tests/test_soak.py`` runs the same code with small numbers in CI.
"""

from ._runner import SoakConfig, SoakReport, run_soak

__all__ = ["SoakConfig", "SoakReport", "run_soak"]
