"""``python -m tests.soak [--requests N] [--seconds S] ...``: start the servers, soak, report.

Exits 0 when every check passed, 1 when one failed, 2 when the servers could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import ssl
import sys
import warnings
from collections.abc import Callable

import trustme

from tests.rig.fault_server import FaultServer
from tests.rig.nginx import Nginx, NginxError

from ._runner import SoakConfig, run_soak


def _parse(argv: list[str] | None) -> tuple[SoakConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument(
        "--requests", type=int, default=300_000, help="requests over all phases (300,000)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="also stop each phase at its share of this many seconds (no limit)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="requests in flight per phase (64)"
    )
    parser.add_argument(
        "--cancel-rate",
        type=float,
        default=0.02,
        help="fraction of requests cancelled at a random moment (0.02)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (random)")
    parser.add_argument(
        "--uvloop", action="store_true", help="run the client on uvloop's event loop"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or not 0 <= args.cancel_rate <= 1:
        parser.error("--requests and --concurrency must be positive, --cancel-rate in [0, 1]")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    config = SoakConfig(
        requests=args.requests,
        seconds=args.seconds,
        concurrency=args.concurrency,
        cancel_rate=args.cancel_rate,
        seed=seed,
    )
    return config, args.uvloop


def main(argv: list[str] | None = None) -> int:
    config, use_uvloop = _parse(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    # As the test suite does: a warning (a ResourceWarning from a leaked socket above all) is
    # an error, and an error in a finaliser is recorded by the soak as a failure.
    warnings.simplefilter("error")
    ca = trustme.CA()
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    print(
        f"soak: {config.requests:,} requests, concurrency {config.concurrency}, "
        f"cancel rate {config.cancel_rate}, seed {config.seed}"
        + (", uvloop" if use_uvloop else "")
        + (f", at most {config.seconds:g} s" if config.seconds else ""),
        flush=True,
    )
    try:
        with Nginx(ca) as nginx, FaultServer() as fault_server:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                report = runner.run(run_soak(config, nginx, fault_server, verify))
            server_errors = list(fault_server.errors)
    except NginxError as exc:
        print(f"soak: cannot start nginx: {exc}", file=sys.stderr)
        return 2
    for line in report.lines(phases=False):  # (each phase's line was printed as it ended)
        print(line)
    if server_errors:
        print(f"FAILED: the fault server itself failed: {server_errors[:3]!r}")
        return 1
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
