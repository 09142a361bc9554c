#!/usr/bin/env python3
"""Scale and cost on paper for the Knoq turn workflow (poll loop on Step Functions).

Each agent turn is one Step Functions execution whose loop is Wait -> Poll (Lambda) -> Choice.
This script turns that shape, a handful of parameters and the published quotas and prices
into per-turn-minute usage, cost, and the number of CONCURRENT turns one account can run in
one region before each quota binds.

    python3 infra/scale/simulate.py              # plain-text tables
    python3 infra/scale/simulate.py --markdown   # the same tables as Markdown (README, "Scale and cost")

Stdlib only, deterministic. Every quota and price below is a named constant with its source;
The README section "Scale and cost" lists the pages and the date they were looked up. Quotas are per account per
region and most are adjustable, so treat each ceiling as "the default", not "the maximum".
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace


# --------------------------------------------------------------------------------------------
# Prices, us-east-1, USD. Free tiers are ignored (they vanish at any real scale).
# --------------------------------------------------------------------------------------------

# Step Functions Standard: $0.025 per 1,000 state transitions ("$25 per million").
# Source: AWS Compute Blog, "Building cost-effective AWS Step Functions workflows";
# AWS Step Functions pricing page (https://aws.amazon.com/step-functions/pricing/).
PRICE_SFN_STANDARD_PER_TRANSITION = 0.025 / 1000

# Step Functions Express: $1.00 per million requests (same AWS blog) plus duration, billed
# per 100 ms and in 64 MB memory chunks (Step Functions pricing page). Duration price of the
# first tier, $0.00001667 per GB-second: NOT confirmed from AWS page text (the price table is
# rendered client-side); taken from a third-party summary. Marked as an assumption.
PRICE_SFN_EXPRESS_PER_REQUEST = 1.00 / 1_000_000
PRICE_SFN_EXPRESS_PER_GB_S = 0.00001667
EXPRESS_MEMORY_CHUNK_MB = 64
EXPRESS_DURATION_STEP_S = 0.1

# Lambda: $0.20 per million requests ("How AWS Pricing Works" whitepaper, Lambda section).
# arm64 duration $0.0000133334 per GB-second, first tier: AWS Lambda pricing page renders the
# table client-side; figure confirmed only via third-party copies. Marked as an assumption.
PRICE_LAMBDA_PER_REQUEST = 0.20 / 1_000_000
PRICE_LAMBDA_ARM_PER_GB_S = 0.0000133334

# DynamoDB on-demand, Standard table class: $0.125 per million read request units and $0.625
# per million write request units (after the November 2024 on-demand price reduction). The
# unit definitions (strongly consistent read <= 4 KB = 1 RRU; transactional write <= 1 KB =
# 2 WRU) are from the "How AWS Pricing Works" whitepaper, DynamoDB section; the two prices
# were confirmed only via third-party copies of the pricing page. Marked as an assumption.
PRICE_DDB_PER_RRU = 0.125 / 1_000_000
PRICE_DDB_PER_WRU = 0.625 / 1_000_000


@dataclass(frozen=True)
class Prices:
    """Unit prices; defaults are the us-east-1 constants above."""

    sfn_standard_per_transition: float = PRICE_SFN_STANDARD_PER_TRANSITION
    sfn_express_per_request: float = PRICE_SFN_EXPRESS_PER_REQUEST
    sfn_express_per_gb_s: float = PRICE_SFN_EXPRESS_PER_GB_S
    lambda_per_request: float = PRICE_LAMBDA_PER_REQUEST
    lambda_per_gb_s: float = PRICE_LAMBDA_ARM_PER_GB_S
    ddb_per_rru: float = PRICE_DDB_PER_RRU
    ddb_per_wru: float = PRICE_DDB_PER_WRU


# --------------------------------------------------------------------------------------------
# Quotas (defaults; per account, per region; soft unless noted).
# --------------------------------------------------------------------------------------------

# Step Functions, Standard workflows, token buckets. Source: AWS Step Functions Developer
# Guide, "Step Functions service quotas" (service-quotas.html; the figures are those of the
# guide's published source, awsdocs/aws-step-functions-developer-guide, limits-overview.md).
#   StateTransition: us-east-1 / us-west-2 / eu-west-1 bucket 5,000, refill 1,500 per second;
#                    all other regions bucket 800, refill 500 per second. Express: unlimited.
#   StartExecution:  us-east-1 / us-west-2 / eu-west-1 bucket 1,300, refill 300 per second;
#                    all other regions bucket 800, refill 150 per second.
#                    Express: bucket 6,000, refill 6,000 per second in every region.
#   Open executions: 1,000,000 per account per region (does not apply to Express).
# The live page also says new accounts start with reduced state-transition quotas.
SFN_TRANSITION_REFILL_LARGE = 1500.0
SFN_TRANSITION_REFILL_OTHER = 500.0
SFN_START_REFILL_LARGE = 300.0
SFN_START_REFILL_OTHER = 150.0
SFN_EXPRESS_START_REFILL = 6000.0
SFN_OPEN_EXECUTIONS = 1_000_000
SFN_EXPRESS_MAX_DURATION_S = 300  # hard quota: 5 minutes per Express execution

# Lambda. Source: AWS Lambda Developer Guide, "Lambda quotas": concurrent executions 1,000
# per region (adjustable; new accounts start lower); invocation requests per region =
# 10 x the concurrent-executions quota (synchronous, all sources).
LAMBDA_CONCURRENCY = 1000
LAMBDA_INVOKE_RPS_PER_CONCURRENCY = 10

# DynamoDB. Source: Amazon DynamoDB Developer Guide, "Quotas in Amazon DynamoDB" and
# "DynamoDB maximum throughput for on-demand tables": on-demand tables are bounded by the
# table-level quota of 40,000 read request units and 40,000 write request units per second
# (the account-level quota applies to provisioned tables only). Per partition: 3,000 RCU and
# 1,000 WCU per second ("Understanding DynamoDB warm throughput in different scenarios";
# AWS re:Post knowledge center, "dynamodb-spiky-workloads-short-intervals").
DDB_TABLE_RRU_PER_S = 40_000
DDB_TABLE_WRU_PER_S = 40_000
DDB_PARTITION_RCU_PER_S = 3000
DDB_PARTITION_WCU_PER_S = 1000


@dataclass(frozen=True)
class Quotas:
    """The quotas of one region."""

    region: str
    sfn_transition_refill: float
    sfn_start_refill: float
    sfn_express_start_refill: float = SFN_EXPRESS_START_REFILL
    sfn_open_executions: int = SFN_OPEN_EXECUTIONS
    lambda_concurrency: int = LAMBDA_CONCURRENCY
    lambda_invoke_rps_per_concurrency: int = LAMBDA_INVOKE_RPS_PER_CONCURRENCY
    ddb_table_rru: float = DDB_TABLE_RRU_PER_S
    ddb_table_wru: float = DDB_TABLE_WRU_PER_S
    ddb_partition_rcu: float = DDB_PARTITION_RCU_PER_S
    ddb_partition_wcu: float = DDB_PARTITION_WCU_PER_S


US_EAST_1 = Quotas("us-east-1", SFN_TRANSITION_REFILL_LARGE, SFN_START_REFILL_LARGE)
OTHER_REGION = Quotas("other region", SFN_TRANSITION_REFILL_OTHER, SFN_START_REFILL_OTHER)

# --------------------------------------------------------------------------------------------
# The workload.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """One turn, as the workflow and the Lambdas run it. Every field is an assumption to tweak."""

    turn_seconds: float = 60.0  # wall time the poll loop runs for one turn
    transitions_per_cycle: int = 3  # Wait, Poll (Task), Choice
    transitions_start_end: int = 2  # counted once per execution
    events_per_turn: int = 7  # cycles that emit an event (TransactWriteItems of 2 items)
    checker_memory_mb: int = 128
    checker_billed_s: float = 0.015  # billed duration of one checker invocation
    rru_per_poll: float = 1.0  # strongly consistent GetItem of the session item, < 4 KB
    wru_per_transact_item: float = 2.0  # transactional write of an item <= 1 KB
    # What starts a turn (worst case: a create-session request):
    api_invokes_per_turn: int = 1
    api_memory_mb: int = 256  # template.yaml Globals MemorySize
    api_billed_s: float = 0.05  # assumption
    start_session_items: int = 1  # the new session item  } one transaction at create
    start_event_items: int = 1  # its opening user_message } (2 WRU per item)
    ratelimit_items_per_turn: int = 2  # minute and hour counters, one transaction
    express_memory_mb: int = EXPRESS_MEMORY_CHUNK_MB  # billed memory of an Express execution
    batch_size: int = 1  # sessions polled by one poll cycle / one checker invocation


INTERVALS = (1, 2, 5)

# --------------------------------------------------------------------------------------------
# Usage.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Usage of one turn running for one minute (a "turn-minute")."""

    transitions: float
    poll_invocations: float  # checker invocations
    lambda_invocations: float  # checker + API invocations
    lambda_gb_s: float
    rru: float
    wru: float
    wru_sessions: float
    wru_events: float
    wru_ratelimits: float
    starts: float  # StartExecution calls
    express_gb_s: float  # billed duration x memory if the loop runs as Express


def cycles_per_minute(interval_s: float) -> float:
    """Poll cycles in one minute of a turn (Lambda latency ignored: a slight overestimate)."""
    return 60.0 / interval_s


def turns_per_turn_minute(p: Params) -> float:
    """Turn starts per turn-minute: the share of per-turn costs one minute carries."""
    return 60.0 / p.turn_seconds


def express_billed_seconds(p: Params) -> float:
    """Express bills the whole execution (waits included), rounded up to 100 ms."""
    steps = math.ceil(round(p.turn_seconds / EXPRESS_DURATION_STEP_S, 9))
    return steps * EXPRESS_DURATION_STEP_S


def express_billed_gb(p: Params) -> float:
    """Express memory is billed in 64 MB chunks."""
    chunks = max(1, math.ceil(p.express_memory_mb / EXPRESS_MEMORY_CHUNK_MB))
    return chunks * EXPRESS_MEMORY_CHUNK_MB / 1024


def usage_per_turn_minute(p: Params, interval_s: float) -> Usage:
    """Usage of one turn-minute at one poll interval."""
    cycles = cycles_per_minute(interval_s)
    turns = turns_per_turn_minute(p)
    poll_invokes = cycles / p.batch_size
    events = p.events_per_turn * turns
    wru_sessions = (events + p.start_session_items * turns) * p.wru_per_transact_item
    wru_events = (events + p.start_event_items * turns) * p.wru_per_transact_item
    wru_ratelimits = p.ratelimit_items_per_turn * p.wru_per_transact_item * turns
    return Usage(
        transitions=p.transitions_per_cycle * cycles / p.batch_size
        + p.transitions_start_end * turns,
        poll_invocations=poll_invokes,
        lambda_invocations=poll_invokes + p.api_invokes_per_turn * turns,
        lambda_gb_s=poll_invokes * p.checker_billed_s * p.checker_memory_mb / 1024
        + p.api_invokes_per_turn * turns * p.api_billed_s * p.api_memory_mb / 1024,
        rru=cycles * p.rru_per_poll,
        wru=wru_sessions + wru_events + wru_ratelimits,
        wru_sessions=wru_sessions,
        wru_events=wru_events,
        wru_ratelimits=wru_ratelimits,
        starts=turns,
        express_gb_s=turns * express_billed_seconds(p) * express_billed_gb(p),
    )


# --------------------------------------------------------------------------------------------
# Cost.
# --------------------------------------------------------------------------------------------


def cost_common(u: Usage, pr: Prices) -> dict[str, float]:
    """Lambda and DynamoDB cost of one turn-minute (the same under Standard and Express)."""
    return {
        "lambda": u.lambda_invocations * pr.lambda_per_request + u.lambda_gb_s * pr.lambda_per_gb_s,
        "dynamodb": u.rru * pr.ddb_per_rru + u.wru * pr.ddb_per_wru,
    }


def cost_standard(u: Usage, pr: Prices) -> dict[str, float]:
    """Cost breakdown of one turn-minute with a Standard workflow."""
    parts = {"step_functions": u.transitions * pr.sfn_standard_per_transition, **cost_common(u, pr)}
    parts["total"] = sum(parts.values())
    return parts


def cost_express(u: Usage, pr: Prices) -> dict[str, float]:
    """Cost breakdown of one turn-minute with the poll loop as an Express workflow."""
    sfn = u.starts * pr.sfn_express_per_request + u.express_gb_s * pr.sfn_express_per_gb_s
    parts = {"step_functions": sfn, **cost_common(u, pr)}
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------------
# Ceilings on concurrent turns.
# --------------------------------------------------------------------------------------------

# Which design lever lifts each ceiling.
LEVERS = {
    "SFN state transitions": "Express poll loop; adaptive interval; batch sessions per cycle; raise quota",
    "SFN StartExecution": "raise quota; Express (6,000/s refill); one execution per session, not per turn",
    "SFN open executions": "raise quota; Express (not counted)",
    "Lambda invoke rate": "batch sessions per invocation; longer interval; raise concurrency quota",
    "Lambda concurrency": "raise quota; batching; shorter billed duration",
    "DDB sessions reads": "raise table quota; eventually consistent reads (0.5 RRU); longer interval",
    "DDB sessions writes": "raise table quota; fewer event writes per turn",
    "DDB events writes": "raise table quota; fewer event writes per turn",
    "DDB rate-limit writes": "raise table quota",
}


def rates_from_usage(p: Params, u: Usage) -> dict[str, float]:
    """What one concurrent turn consumes per second, quota by quota."""
    api_invocations = u.lambda_invocations - u.poll_invocations
    return {
        "SFN state transitions": u.transitions / 60,
        "SFN StartExecution": u.starts / 60,
        "SFN open executions": 1.0,
        "Lambda invoke rate": u.lambda_invocations / 60,
        # Concurrency needed = invocations per second x duration.
        "Lambda concurrency": (u.poll_invocations * p.checker_billed_s + api_invocations * p.api_billed_s) / 60,
        "DDB sessions reads": u.rru / 60,
        "DDB sessions writes": u.wru_sessions / 60,
        "DDB events writes": u.wru_events / 60,
        "DDB rate-limit writes": u.wru_ratelimits / 60,
    }


def per_turn_rates(p: Params, interval_s: float) -> dict[str, float]:
    """Per-second consumption of one concurrent turn at one poll interval."""
    return rates_from_usage(p, usage_per_turn_minute(p, interval_s))


def quota_limits(q: Quotas, workflow: str) -> dict[str, float]:
    """Quota values, keyed like per_turn_rates; math.inf where a quota does not apply."""
    express = workflow == "express"
    return {
        "SFN state transitions": math.inf if express else q.sfn_transition_refill,
        "SFN StartExecution": q.sfn_express_start_refill if express else q.sfn_start_refill,
        "SFN open executions": math.inf if express else q.sfn_open_executions,
        "Lambda invoke rate": q.lambda_concurrency * q.lambda_invoke_rps_per_concurrency,
        "Lambda concurrency": q.lambda_concurrency,
        "DDB sessions reads": q.ddb_table_rru,
        "DDB sessions writes": q.ddb_table_wru,
        "DDB events writes": q.ddb_table_wru,
        "DDB rate-limit writes": q.ddb_table_wru,
    }


def ceilings_from_usage(p: Params, q: Quotas, u: Usage, workflow: str = "standard") -> dict[str, float]:
    """Concurrent turns each quota allows: quota / what one concurrent turn uses."""
    rates = rates_from_usage(p, u)
    limits = quota_limits(q, workflow)
    return {name: (limits[name] / rate if rate > 0 else math.inf) for name, rate in rates.items()}


def ceilings(p: Params, q: Quotas, interval_s: float, workflow: str = "standard") -> dict[str, float]:
    """Concurrent-turn ceilings at one poll interval."""
    return ceilings_from_usage(p, q, usage_per_turn_minute(p, interval_s), workflow)


def binding(ceils: dict[str, float]) -> tuple[str, float]:
    """The quota that binds first: the smallest ceiling."""
    name = min(ceils, key=lambda k: ceils[k])
    return name, ceils[name]


def next_binding(ceils: dict[str, float]) -> tuple[str, float]:
    """The quota that binds once the first one is lifted."""
    first, _ = binding(ceils)
    return binding({k: v for k, v in ceils.items() if k != first})


# --------------------------------------------------------------------------------------------
# Hot keys: one session item, one rate-limit counter item.
# --------------------------------------------------------------------------------------------


def hot_session(p: Params, q: Quotas, interval_s: float) -> dict[str, float]:
    """Read and write rate on ONE session item while its turn polls, vs the partition limits."""
    reads = p.rru_per_poll / interval_s
    writes = p.events_per_turn * p.wru_per_transact_item / p.turn_seconds
    return {
        "rcu_per_s": reads,
        "wcu_per_s": writes,
        "read_headroom": q.ddb_partition_rcu / reads,
        "write_headroom": q.ddb_partition_wcu / writes,
    }


# The limits in template.yaml / shared/src/rate_limit.rs.
CANCEL_PER_MINUTE = 30  # one counter: plain UpdateItem (1 WRU)
CREATE_PER_MINUTE = 10  # two counters in one transaction (2 WRU per item)
CREATE_PER_HOUR = 20


def rate_limit_counters(q: Quotas) -> list[tuple[str, float, float, float]]:
    """(counter, admitted WRU/s at the limit, headroom vs partition WCU, attempts/s to throttle).

    Attempts/s assumes a refused (condition-failed) update still consumes its write units.
    """
    rows = []
    for name, admitted_per_s, wru_per_request in (
        ("cancel, 30/min", CANCEL_PER_MINUTE / 60, 1.0),
        ("create, 10/min", CREATE_PER_MINUTE / 60, 2.0),
        ("create, 20/hour", CREATE_PER_HOUR / 3600, 2.0),
    ):
        admitted_wru = admitted_per_s * wru_per_request
        rows.append(
            (name, admitted_wru, q.ddb_partition_wcu / admitted_wru, q.ddb_partition_wcu / wru_per_request)
        )
    return rows


# --------------------------------------------------------------------------------------------
# Levers, quantified.
# --------------------------------------------------------------------------------------------


def blended_usage(p: Params, fast_s: float, slow_s: float, fast_fraction: float) -> Usage:
    """Adaptive polling: fast_fraction of the turn polled every fast_s, the rest every slow_s."""
    fast, slow = usage_per_turn_minute(p, fast_s), usage_per_turn_minute(p, slow_s)
    return Usage(
        **{
            f: fast_fraction * getattr(fast, f) + (1 - fast_fraction) * getattr(slow, f)
            for f in Usage.__dataclass_fields__
        }
    )


# --------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------


def fmt_int(x: float) -> str:
    return "n/a" if math.isinf(x) else f"{math.floor(x):,}"


def fmt_num(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def fmt_usd(x: float) -> str:
    return f"${x:.6f}"


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def section(title: str, body: str, markdown: bool) -> str:
    return (f"#### {title}\n\n{body}\n" if markdown else f"{title}\n{body}\n")


def report(p: Params = Params(), pr: Prices = Prices(), markdown: bool = False) -> str:
    cols = [f"{i} s" for i in INTERVALS]
    usages = [usage_per_turn_minute(p, i) for i in INTERVALS]
    parts = []

    std = [cost_standard(u, pr) for u in usages]
    exp = [cost_express(u, pr) for u in usages]
    bold = (lambda t: f"**{t}**") if markdown else (lambda t: t)
    rows = [
        ["State transitions (Standard)"] + [fmt_num(u.transitions, 0) for u in usages],
        ["Lambda invocations"] + [fmt_num(u.lambda_invocations, 1) for u in usages],
        ["Lambda GB-seconds"] + [fmt_num(u.lambda_gb_s, 4) for u in usages],
        ["DynamoDB RRU"] + [fmt_num(u.rru, 0) for u in usages],
        ["DynamoDB WRU"] + [fmt_num(u.wru, 0) for u in usages],
        ["Standard: Step Functions $"] + [fmt_usd(c["step_functions"]) for c in std],
        ["Lambda $ (same for both)"] + [fmt_usd(c["lambda"]) for c in std],
        ["DynamoDB $ (same for both)"] + [fmt_usd(c["dynamodb"]) for c in std],
        [bold("Standard total $")] + [bold(fmt_usd(c["total"])) for c in std],
        ["Express: Step Functions $"] + [fmt_usd(c["step_functions"]) for c in exp],
        [bold("Express total $")] + [bold(fmt_usd(c["total"])) for c in exp],
        ["Standard / Express"] + [f"{s['total'] / e['total']:.1f}x" for s, e in zip(std, exp)],
    ]
    parts.append(
        section("Usage and cost per turn-minute (us-east-1 prices, USD)", render(["per turn-minute"] + cols, rows, markdown), markdown)
    )

    reference = {i: ceilings(p, US_EAST_1, i) for i in INTERVALS}
    for q in (US_EAST_1, OTHER_REGION):
        per = {i: ceilings(p, q, i) for i in INTERVALS}
        rows = []
        for name in per[INTERVALS[0]]:
            if q is not US_EAST_1 and all(per[i][name] == reference[i][name] for i in INTERVALS):
                continue  # same as us-east-1: listed once
            cells = []
            for i in INTERVALS:
                v = fmt_int(per[i][name])
                if binding(per[i])[0] == name and markdown:
                    v = f"**{v}**"
                elif binding(per[i])[0] == name:
                    v = f"{v} <"
                cells.append(v)
            rows.append([name] + cells + [LEVERS[name]])
        rows.append(["Binds first"] + [f"{binding(per[i])[0]} ({fmt_int(binding(per[i])[1])})" for i in INTERVALS] + [""])
        rows.append(["Binds next"] + [f"{next_binding(per[i])[0]} ({fmt_int(next_binding(per[i])[1])})" for i in INTERVALS] + [""])
        parts.append(
            section(
                f"Concurrent-turn ceilings, Standard workflow, {q.region}"
                + ("" if q is US_EAST_1 else " (rows that differ from us-east-1)"),
                render(["quota"] + cols + ["lever"], rows, markdown),
                markdown,
            )
        )

    # Express has no region-dependent quota in this model: both regions give the same ceilings.
    per = {i: ceilings(p, US_EAST_1, i, "express") for i in INTERVALS}
    assert per == {i: ceilings(p, OTHER_REGION, i, "express") for i in INTERVALS}
    rows = [
        ["binds first"] + [f"{binding(per[i])[0]} ({fmt_int(binding(per[i])[1])})" for i in INTERVALS],
        ["binds next"] + [f"{next_binding(per[i])[0]} ({fmt_int(next_binding(per[i])[1])})" for i in INTERVALS],
    ]
    parts.append(
        section("Binding quota with the poll loop as Express (any region)", render(["Express"] + cols, rows, markdown), markdown)
    )

    rows = []
    for i in INTERVALS:
        h = hot_session(p, US_EAST_1, i)
        rows.append([f"session item, reads at {i} s", f"{fmt_num(h['rcu_per_s'], 2)} RCU/s", f"{h['read_headroom']:,.0f}x"])
    h = hot_session(p, US_EAST_1, INTERVALS[0])
    rows.append(["session item, event writes", f"{fmt_num(h['wcu_per_s'], 3)} WCU/s", f"{h['write_headroom']:,.0f}x"])
    for name, wru, head, _attempts in rate_limit_counters(US_EAST_1):
        rows.append([f"rate-limit counter, {name}", f"{fmt_num(wru, 3)} WCU/s", f"{head:,.0f}x"])
    parts.append(
        section(
            "One hot item vs the per-partition limits (3,000 RCU/s, 1,000 WCU/s)",
            render(["item", "load (counters at their limit)", "headroom"], rows, markdown),
            markdown,
        )
    )

    # Levers quantified at the 1 s interval, us-east-1.
    base = ceilings(p, US_EAST_1, 1)
    adaptive = blended_usage(p, 1, 5, 0.25)
    adaptive_ceil = ceilings_from_usage(p, US_EAST_1, adaptive)
    batched = replace(p, batch_size=25)
    batched_ceil = ceilings(batched, US_EAST_1, 1)
    express_ceil = ceilings(p, US_EAST_1, 1, "express")
    raised = {k: v * (2 if k == "SFN state transitions" else 1) for k, v in base.items()}
    rows = []
    for label, ceil, cost in (
        ("none (Standard, 1 s)", base, cost_standard(usages[0], pr)["total"]),
        ("Express poll loop", express_ceil, cost_express(usages[0], pr)["total"]),
        ("adaptive: 25% of turn at 1 s, 75% at 5 s", adaptive_ceil, cost_standard(adaptive, pr)["total"]),
        ("batch 25 sessions per cycle (BatchGetItem)", batched_ceil, cost_standard(usage_per_turn_minute(batched, 1), pr)["total"]),
        ("2x StateTransition quota", raised, cost_standard(usages[0], pr)["total"]),
    ):
        name, value = binding(ceil)
        rows.append([label, f"{name} ({fmt_int(value)})", fmt_usd(cost)])
    parts.append(
        section(
            "Levers at 1 s, us-east-1",
            render(["lever", "binds first (concurrent turns)", "cost per turn-minute"], rows, markdown),
            markdown,
        )
    )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)
    print(report(markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
