"""Medians, aiopool's ratios and goals, and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

from scenarios import (
    CLIENT_SPECS,
    FASTEST,
    OURS,
    SCENARIO_BY_ID,
    Goal,
    Metric,
    Scenario,
    metrics_of,
)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(scenario: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One scenario: per client the medians over its good runs; ratios; goals.

    A goal anchored in another scenario reads n/a here; `resolve_cross_goals` fills it in once
    every scenario of the run is summarized.
    """
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
    if scenario.mode != "memory":
        for ours, peer in _ratio_pairs(list(clients)):
            entry = _ratio(clients, ours, clients, peer, primary)
            cpu = _ratio(clients, ours, clients, peer, scenario.cpu_metric)["value"]
            ratios[f"{ours}/{peer}"] = {**entry, "cpu": cpu, "goal": None, "passed": None}
    goal_rows = []
    for goal in scenario.goals:
        anchors = {} if goal.anchor_scenario else clients  # filled in by resolve_cross_goals
        row = _goal_row(scenario, goal, clients, anchors)
        if row["pair"] in ratios:  # the goal's verdict also goes on its ratio line
            ratios[row["pair"]].update(goal=row["goal"], cmp=row["cmp"], passed=row["passed"])
        goal_rows.append(row)
    return {
        "description": scenario.description,
        "mode": scenario.mode,
        "metric": primary.key,
        "unit": primary.unit,
        "cpu_metric": scenario.cpu_metric.key,
        "cpu_unit": scenario.cpu_metric.unit,
        "concurrency": scenario.concurrency,
        "tasks": scenario.tasks or None,
        "tls": scenario.tls,
        "clients": clients,
        "ratios": ratios,
        "goals": goal_rows,
    }


def resolve_cross_goals(summaries: dict[str, Any]) -> None:
    """Evaluate the goals whose anchor was measured in another scenario of this run.

    The anchor's median comes from that scenario's summary; when it did not run the goal stays
    n/a and its row says why.
    """
    for sid, summary in summaries.items():
        scenario = SCENARIO_BY_ID[sid]
        for index, goal in enumerate(scenario.goals):
            if goal.anchor_scenario is None:
                continue
            other = summaries.get(goal.anchor_scenario)
            anchors = other["clients"] if other is not None else {}
            row = _goal_row(scenario, goal, summary["clients"], anchors)
            if other is None:
                row["note"] = f"{goal.anchor_scenario} did not run"
            summary["goals"][index] = row


def _ratio_pairs(clients: list[str]) -> list[tuple[str, str]]:
    """(ours, peer): each of OURS against every other client, and every aiopool variant
    against the fastest peers (FASTEST), whose ratio the HTTP/2 issue tracks everywhere."""
    pairs = [(o, p) for o in OURS if o in clients for p in clients if p not in OURS]
    for ours in clients:
        if ours in OURS or CLIENT_SPECS[ours].library != "aiopool":
            continue
        pairs.extend((ours, peer) for peer in FASTEST if peer in clients)
    return pairs


def _goal_row(
    scenario: Scenario, goal: Goal, clients: dict[str, Any], anchors: dict[str, Any]
) -> dict[str, Any]:
    metric = goal.metric or scenario.metric
    value = _ratio(clients, goal.ours, anchors, goal.anchor, metric)["value"]
    if value is None:
        passed = None
    else:
        passed = value >= goal.ratio if metric.higher_is_better else value <= goal.ratio
    return {
        "scenario": scenario.id,
        "pair": goal.pair,
        "metric": metric.key,
        "unit": metric.unit,
        "value": value,
        "goal": goal.ratio,
        "cmp": ">=" if metric.higher_is_better else "<=",
        "passed": passed,
    }


def _ratio(
    clients: dict[str, Any], ours: str, anchors: dict[str, Any], peer: str, metric: Metric
) -> dict[str, Any]:
    a = clients.get(ours, {}).get("median", {}).get(metric.key)
    b = anchors.get(peer, {}).get("median", {}).get(metric.key)
    value = round(a / b, 3) if a and b else None
    return {"value": value}


def _num(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _times(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def _verdict(entry: dict[str, Any]) -> str:
    if entry.get("goal") is None:
        return ""
    mark = {True: "PASS", False: "FAIL", None: "n/a"}[entry["passed"]]
    note = f" ({entry['note']})" if entry.get("note") else ""
    return f"goal {entry.get('cmp', '>=')} {entry['goal']:.1f}x  {mark}{note}"


def print_scenario(sid: str, summary: dict[str, Any], scenario: Scenario, header: str) -> None:
    print(f"\n{sid}: {summary['description']}  [{header}]")
    if scenario.mode == "memory":
        _print_memory(summary, scenario)
        return
    unit = summary["unit"]
    digits = 1 if unit == "MB/s" else 0
    cpu = scenario.cpu_metric
    print(
        f"  {'client':<14} {'version':<8} {'impl':<13} {'proto':<8} {'conns':>5} "
        f"{'median ' + unit:>13} {'min - max':>17} {cpu.unit:>13} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for client, c in summary["clients"].items():
        med = c["median"]
        span = f"{_num(c['min'], digits)} - {_num(c['max'], digits)}"
        p50 = "-" if scenario.mode == "gather" else _num(med.get("p50_ms"), 2)
        p99 = "-" if scenario.mode == "gather" else _num(med.get("p99_ms"), 2)
        errors = c["errors"] + c["failed_runs"]
        conns = _num(c["connections_opened"]) if c["connections_opened"] else "-"
        value = _num(med.get(summary["metric"]), digits)
        cpu_value = _num(med.get(cpu.key), 1)
        print(
            f"  {client:<14} {c['version'] or '-':<8} {c['implementation'] or '-':<13} "
            f"{c['http_version'] or '-':<8} {conns:>5} {value:>13} "
            f"{span:>17} {cpu_value:>13} {p50:>7} {p99:>7} {errors:>6}"
        )
    if summary["ratios"]:
        print(
            f"  ratios (median {unit}, > 1 means aiopool is faster; "
            f"CPU: median {cpu.unit}, < 1 means aiopool uses less):"
        )
        for pair, entry in summary["ratios"].items():
            cpu_ratio = f"CPU {_times(entry.get('cpu'))}"
            line = f"{pair:<30} {_times(entry['value']):>7}  {cpu_ratio:<10}  {_verdict(entry)}"
            print(f"    {line}".rstrip())
    others = [g for g in summary["goals"] if g["pair"] not in summary["ratios"]]
    if others:
        print("  goals (not on a ratio line above):")
        for row in others:
            print(f"    {_goal_line(row)}")


def _goal_line(row: dict[str, Any]) -> str:
    return f"{row['pair']:<50} {_times(row['value']):>7}   {_verdict(row)}"


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
    print("\nGoals (aiopool variant / anchor, ratio of medians; CPU: lower is better):")
    for row in rows:
        print(f"  {row['scenario']:<15} {_goal_line(row)}")
