"""The long fuzz campaign: `python -m tests.fuzz --minutes 5` (what `make fuzz` runs).

Runs every target in turn: h11, httptools, h2, native; "parsers-agree" (the two HTTP/1.1
parsers side by side) and "engines-agree" (h2 against native, the differential check of
`differential.EnginesAgree`: same outcome class, same socket decision; its count is the
differential-fuzz case count). Each runs its well-formed, mutated and random strategies in
rounds of a few hundred examples under the "fuzz" profile (random seeds; failures saved to the
local example database and replayed first next time), until the time or the example budget is
spent. A failure is shrunk and printed by Hypothesis, counted, and the campaign goes on. The
closing line reports the cases run (shrinking included) and the failures per target; the exit
status is 1 if any.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from . import http2, http11, profiles
from .differential import EnginesAgree
from .harness import ParsersAgree, Target

# Per round and target: examples of each strategy (mutated cases find the most).
_ROUND = {"valid": 60, "mutated": 240, "random": 60}
_STRATEGIES: dict[str, dict[str, Callable[[], st.SearchStrategy[Any]]]] = {
    "http11": {
        "valid": http11.valid_cases,
        "mutated": http11.mutated_cases,
        "random": http11.random_cases,
    },
    "http2": {
        "valid": http2.valid_cases,
        "mutated": http2.mutated_cases,
        "random": http2.random_cases,
    },
}
TARGET_NAMES = ("h11", "httptools", "h2", "native", "parsers-agree", "engines-agree")
AnyTarget = Target | ParsersAgree | EnginesAgree


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="stop starting rounds after this (3)"
    )
    parser.add_argument(
        "--examples", type=int, default=None, help="stop a target after this many cases"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGET_NAMES),
        help=f"comma-separated, from {', '.join(TARGET_NAMES)}",
    )
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGET_NAMES)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    return args


def _make(name: str) -> AnyTarget:
    if name == "parsers-agree":
        return ParsersAgree()
    if name == "engines-agree":
        return EnginesAgree()
    return Target(name)


def _round(target: AnyTarget, strategy: str) -> bool:
    """Run one round of `strategy` on `target`; False if Hypothesis found a failure."""
    cases = _STRATEGIES[target.protocol][strategy]()
    if isinstance(target, ParsersAgree) and strategy == "valid":
        return True  # well-formed cases are checked exactly per parser already

    def run(case: Any) -> None:
        target.run(case)

    # A name per target and strategy: the example database keys failures by it.
    run.__name__ = run.__qualname__ = f"fuzz_{target.name}_{strategy}".replace("-", "_")
    test = settings(profiles.FUZZ, max_examples=_ROUND[strategy])(given(case=cases)(run))
    try:
        test()
    except Exception:
        print(f"\nfuzz: FAILURE in {target.name} ({strategy}):", file=sys.stderr)
        traceback.print_exc()
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    deadline = time.monotonic() + args.minutes * 60
    targets = [_make(name) for name in args.targets]
    failures = dict.fromkeys(args.targets, 0)
    entered: list[AnyTarget] = []
    try:
        for target in targets:
            target.__enter__()
            entered.append(target)
        rounds = 0
        while time.monotonic() < deadline:
            active = [t for t in targets if args.examples is None or t.cases < args.examples]
            if not active:
                break
            for target in active:
                for strategy in _ROUND:
                    if time.monotonic() >= deadline:
                        break
                    if not _round(target, strategy):
                        failures[target.name] += 1
            rounds += 1
            done = ", ".join(f"{t.name} {t.cases:,}" for t in targets)
            print(f"fuzz: round {rounds}: {done}", flush=True)
    finally:
        for target in reversed(entered):
            target.__exit__(None, None, None)
    total = sum(t.cases for t in targets)
    per = ", ".join(f"{t.name} {t.cases:,}" for t in targets)
    failed = sum(failures.values())
    detail = "" if not failed else " (" + ", ".join(f"{k} {v}" for k, v in failures.items()) + ")"
    print(f"fuzz: {total:,} cases ({per}), {failed} failures{detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
