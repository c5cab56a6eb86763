"""Medians, aiopool's ratios and goals, and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

from scenarios import OURS, Metric, Scenario, metrics_of


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(scenario: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One scenario: per client the medians over its good runs; ratios; goals."""
    primary = scenario.metric
    clients: dict[str, Any] = {}
    for client, results in runs.items():
        good = [r for r in results if "error" not in r]
        keys = sorted({k for r in good for k in r.get("values", {})})
        medians = {k: _median([r["values"][k] for r in good if k in r["values"]]) for k in keys}
        main = [r["values"][primary.key] for r in good if primary.key in r["values"]]
        clients[client] = {
            "version": good[0].get("version") if good else None,
            "implementation": good[0].get("implementation") if good else None,
            "http_version": good[0].get("http_version") if good else None,
            "connections_opened": _median(
                [r["connections_opened"] for r in good if r.get("connections_opened")]
            ),
            "median": medians,
            "min": min(main) if main else None,
            "max": max(main) if main else None,
            "errors": sum(r.get("errors", 0) for r in good),
            "failed_runs": len(results) - len(good),
            "runs": results,
        }
    ratios: dict[str, Any] = {}
    goals = {g.pair: g for g in scenario.goals}
    if scenario.mode != "memory":
        for ours in (c for c in OURS if c in clients):
            for peer in (c for c in clients if c not in OURS):
                ratios[f"{ours}/{peer}"] = _ratio(clients, ours, peer, primary)
    goal_rows = []
    for goal in scenario.goals:
        entry = ratios.get(goal.pair) or _ratio(clients, goal.ours, goal.anchor, primary)
        value = entry["value"]
        entry.update(goal=goal.at_least, passed=None if value is None else value >= goal.at_least)
        ratios[goal.pair] = entry
        goal_rows.append({"scenario": scenario.id, "pair": goal.pair, **entry})
    for pair, entry in ratios.items():
        entry.setdefault("goal", goals[pair].at_least if pair in goals else None)
        entry.setdefault("passed", None)
    return {
        "description": scenario.description,
        "mode": scenario.mode,
        "metric": primary.key,
        "unit": primary.unit,
        "concurrency": scenario.concurrency,
        "tasks": scenario.tasks or None,
        "tls": scenario.tls,
        "clients": clients,
        "ratios": ratios,
        "goals": goal_rows,
    }


def _ratio(clients: dict[str, Any], ours: str, peer: str, metric: Metric) -> dict[str, Any]:
    a = clients.get(ours, {}).get("median", {}).get(metric.key)
    b = clients.get(peer, {}).get("median", {}).get(metric.key)
    value = round(a / b, 3) if a and b else None
    return {"value": value}


def _num(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _verdict(entry: dict[str, Any]) -> str:
    if entry.get("goal") is None:
        return ""
    mark = {True: "PASS", False: "FAIL", None: "n/a"}[entry["passed"]]
    return f"goal >= {entry['goal']:.1f}x  {mark}"


def print_scenario(sid: str, summary: dict[str, Any], scenario: Scenario, header: str) -> None:
    print(f"\n{sid}: {summary['description']}  [{header}]")
    if scenario.mode == "memory":
        _print_memory(summary, scenario)
        return
    unit = summary["unit"]
    digits = 1 if unit == "MB/s" else 0
    print(
        f"  {'client':<12} {'version':<8} {'parser':<13} {'proto':<8} {'conns':>5} "
        f"{'median ' + unit:>13} {'min - max':>17} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for client, c in summary["clients"].items():
        med = c["median"]
        span = f"{_num(c['min'], digits)} - {_num(c['max'], digits)}"
        p50 = "-" if scenario.mode == "gather" else _num(med.get("p50_ms"), 2)
        p99 = "-" if scenario.mode == "gather" else _num(med.get("p99_ms"), 2)
        errors = c["errors"] + c["failed_runs"]
        conns = _num(c["connections_opened"]) if c["connections_opened"] else "-"
        value = _num(med.get(summary["metric"]), digits)
        print(
            f"  {client:<12} {c['version'] or '-':<8} {c['implementation'] or '-':<13} "
            f"{c['http_version'] or '-':<8} {conns:>5} {value:>13} "
            f"{span:>17} {p50:>7} {p99:>7} {errors:>6}"
        )
    if summary["ratios"]:
        print(f"  ratios (median {unit}; > 1 means aiopool is faster):")
        for pair, entry in summary["ratios"].items():
            value = "n/a" if entry["value"] is None else f"{entry['value']:.2f}x"
            print(f"    {pair:<24} {value:>7}   {_verdict(entry)}".rstrip())


def _print_memory(summary: dict[str, Any], scenario: Scenario) -> None:
    metrics = metrics_of(scenario)
    print(f"  {'client':<12} {'version':<8} {'parser':<13} " + " ".join(
        f"{m.unit:>18}" for m in metrics
    ))  # fmt: skip
    for client, c in summary["clients"].items():
        cells = " ".join(f"{_num(c['median'].get(m.key)):>18}" for m in metrics)
        print(f"  {client:<12} {c['version'] or '-':<8} {c['implementation'] or '-':<13} {cells}")
    bare = [c["median"].get("bare_task_bytes") for c in summary["clients"].values()]
    bare_known = [b for b in bare if b is not None]
    if bare_known:
        print(
            f"  (net = per waiting task minus a bare task blocked on an Event, "
            f"~{statistics.median(bare_known):,.0f} B; medians, lower is better)"
        )


def print_goals(summaries: dict[str, Any]) -> None:
    rows = [row for s in summaries.values() for row in s["goals"]]
    if not rows:
        return
    print("\nGoals (aiopool variant / anchor, ratio of medians):")
    for row in rows:
        value = "n/a" if row["value"] is None else f"{row['value']:.2f}x"
        print(f"  {row['scenario']:<14} {row['pair']:<24} {value:>7}   {_verdict(row)}")
