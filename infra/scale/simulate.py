#!/usr/bin/env python3
"""Scale and cost on paper for the Knoq turn workflow (token poll loop and worker Lambda).

Each agent turn is one Step Functions execution: `StartWorker` starts the turn's worker Lambda
(an asynchronous invoke; the worker plays the turn against the model provider and writes its
events), then each cycle enters `Poll`, a `lambda:invoke.waitForTaskToken` task that times out
after the poll interval, and its `States.Timeout` Catch goes back to `Poll` through the `Pass`
state `NextPoll` (two state transitions a cycle: moto's interpreter takes a Catch naming its own
state for no Catch; on AWS a Catch straight back into `Poll` would make it one, a lever below).
The Poll whose token is answered goes to the `Choice` instead of `NextPoll`. The previous
loop, Wait -> Poll (Lambda) -> Choice (three transitions a cycle), is kept as a parameter: it
is the comparison, and the only shape an Express workflow can run.

This script turns those shapes, a handful of parameters and the published quotas and prices
into per-turn-minute usage, cost, and the number of CONCURRENT turns one account can run in
one region before each quota binds.

    python3 infra/scale/simulate.py              # plain-text tables
    python3 infra/scale/simulate.py --markdown   # the same tables as Markdown (docs/scale.md)

Stdlib only, deterministic. Every quota and price below is a named constant with its source;
docs/scale.md lists the pages and the date they were looked up (2026-11-25). Quotas are per
account per region and most are adjustable, so treat each ceiling as "the default", not "the
maximum".
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
# API calls such as SendTaskSuccess are not billed; the transitions they cause are.
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
# Lambda bills wall-clock duration: a worker waiting on the model provider is billed.
PRICE_LAMBDA_PER_REQUEST = 0.20 / 1_000_000
PRICE_LAMBDA_ARM_PER_GB_S = 0.0000133334

# DynamoDB on-demand, Standard table class: $0.125 per million read request units and $0.625
# per million write request units (after the November 2024 on-demand price reduction). The
# unit definitions (strongly consistent read <= 4 KB = 1 RRU; write <= 1 KB = 1 WRU;
# transactional write <= 1 KB = 2 WRU) are from the "How AWS Pricing Works" whitepaper,
# DynamoDB section; the two prices were confirmed only via third-party copies of the pricing
# page. Marked as an assumption.
PRICE_DDB_PER_RRU = 0.125 / 1_000_000
PRICE_DDB_PER_WRU = 0.625 / 1_000_000
DDB_WRITE_UNIT_BYTES = 1024  # one WRU writes up to 1 KB (an update: the larger of before/after)
DDB_READ_UNIT_BYTES = 4096  # one RRU reads up to 4 KB strongly consistently
DDB_TRANSACTION_FACTOR = 2  # a transactional read or write costs twice the units


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

# Step Functions, token buckets. Source: AWS Step Functions Developer Guide, "Step Functions
# service quotas" (service-quotas.html; the figures are those of the guide's published source,
# awsdocs/aws-step-functions-developer-guide, limits-overview.md).
#   StateTransition: us-east-1 / us-west-2 / eu-west-1 bucket 5,000, refill 1,500 per second;
#                    all other regions bucket 800, refill 500 per second. Express: unlimited.
#   StartExecution:  us-east-1 / us-west-2 / eu-west-1 bucket 1,300, refill 300 per second;
#                    all other regions bucket 800, refill 150 per second.
#                    Express: bucket 6,000, refill 6,000 per second in every region.
#   SendTaskSuccess: us-east-1 / us-west-2 / eu-west-1 bucket 3,000, refill 500 per second;
#                    all other regions bucket 1,500, refill 300 per second ("Other quotas").
#   Open executions: 1,000,000 per account per region (does not apply to Express).
# The live page also says new accounts start with reduced state-transition quotas.
# Express workflows do not support the callback (.waitForTaskToken) pattern ("Standard vs.
# Express Workflows", concepts-standard-vs-express.md), so an Express loop keeps Wait+Task+Choice.
SFN_TRANSITION_REFILL_LARGE = 1500.0
SFN_TRANSITION_REFILL_OTHER = 500.0
SFN_START_REFILL_LARGE = 300.0
SFN_START_REFILL_OTHER = 150.0
SFN_EXPRESS_START_REFILL = 6000.0
SFN_SEND_TASK_SUCCESS_REFILL_LARGE = 500.0
SFN_SEND_TASK_SUCCESS_REFILL_OTHER = 300.0
SFN_SEND_TASK_SUCCESS_BUCKET_LARGE = 3000  # burst: how many cancels/turn ends at once
SFN_SEND_TASK_SUCCESS_BUCKET_OTHER = 1500
SFN_OPEN_EXECUTIONS = 1_000_000
SFN_EXPRESS_MAX_DURATION_S = 300  # hard quota: 5 minutes per Express execution

# Lambda. Source: AWS Lambda Developer Guide, "Lambda quotas": concurrent executions 1,000
# per region (adjustable; new accounts start lower); invocation requests per region =
# 10 x the concurrent-executions quota. The worker holds one unit of concurrency for its turn.
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
    sfn_send_task_success_refill: float
    sfn_express_start_refill: float = SFN_EXPRESS_START_REFILL
    sfn_open_executions: int = SFN_OPEN_EXECUTIONS
    lambda_concurrency: int = LAMBDA_CONCURRENCY
    lambda_invoke_rps_per_concurrency: int = LAMBDA_INVOKE_RPS_PER_CONCURRENCY
    ddb_table_rru: float = DDB_TABLE_RRU_PER_S
    ddb_table_wru: float = DDB_TABLE_WRU_PER_S
    ddb_partition_rcu: float = DDB_PARTITION_RCU_PER_S
    ddb_partition_wcu: float = DDB_PARTITION_WCU_PER_S


US_EAST_1 = Quotas(
    "us-east-1", SFN_TRANSITION_REFILL_LARGE, SFN_START_REFILL_LARGE, SFN_SEND_TASK_SUCCESS_REFILL_LARGE
)
OTHER_REGION = Quotas(
    "other region", SFN_TRANSITION_REFILL_OTHER, SFN_START_REFILL_OTHER, SFN_SEND_TASK_SUCCESS_REFILL_OTHER
)

# --------------------------------------------------------------------------------------------
# The workload.
# --------------------------------------------------------------------------------------------

TOKEN_LOOP = "token"  # Poll = lambda:invoke.waitForTaskToken, timeout = interval (today)
WAIT_LOOP = "wait"  # Wait -> Poll (Task) -> Choice (before; the only shape Express can run)


@dataclass(frozen=True)
class Params:
    """One turn, as the workflow and the Lambdas run it. Every field is an assumption to tweak."""

    turn_seconds: float = 60.0  # estimate: wall time of one turn (the loop and the worker run it)
    poll_loop: str = TOKEN_LOOP
    # State transitions (infra/workflow/turn.asl.json).
    transitions_per_token_cycle: int = 2  # Poll, then NextPoll (Pass): its States.Timeout Catch cannot name Poll itself in moto
    transitions_per_poll: int = 1  # entering Poll; the rest of a cycle is its timeout route (NextPoll)
    transitions_per_wait_cycle: int = 3  # Wait, Poll (Task), Choice
    transitions_start_end: int = 2  # counted once per execution
    transitions_start_worker: int = 1  # StartWorker, once per turn
    transitions_per_answer: int = 1  # token loop: the Choice after a token is answered (in place of NextPoll)
    # Cancels. A cancel answers the stored token (SendTaskSuccess) to wake the run: the Choice,
    # Poll again, and that poll's checker ends the run (its SendTaskSuccess is the turn's own).
    # The cancel copies the token onto the session item (cancel_saw_poll_token) until the
    # termination removes both copies: see session_item_bytes_after_cancel.
    cancelled_share: float = 0.0  # estimate: share of turns cancelled (1.0 = worst case)
    cancel_counter_wru: float = 1.0  # the cancel rate-limit counter, a plain UpdateItem
    # Checker (one invocation per cycle; it stores the token and returns).
    checker_memory_mb: int = 256  # template.yaml Globals MemorySize
    checker_billed_s: float = 0.015  # estimate: billed duration of one checker invocation
    # Worker (one per turn, asynchronous invoke by StartWorker, 256 MB arm64).
    worker_memory_mb: int = 256  # template.yaml Globals MemorySize
    worker_share_of_turn: float = 1.0  # the worker runs for the whole turn
    stream_share: float = 1.0  # estimate: share of the worker's time text streams (worst case)
    flush_every_s: float = 2.0  # agent/worker.rs FLUSH_EVERY: one event write per 2 s of text
    heartbeat_share_of_interval: float = 0.5  # lambda.rs: lease renewed every poll / 2
    worker_claim_finish_writes: int = 2  # claim_turn + finish_turn (turn_worker.rs)
    model_calls_per_turn: int = 2  # estimate; each adds its token usage (one UpdateItem)
    worker_history_rru_per_turn: float = 4.0  # estimate: ~16 KB of transcript, consistent Query
    # Item sizes (estimates; see session_item_bytes_in_run for how they add up).
    session_item_bytes: int = 700  # ~650 B counted from the attributes (36-char ids, ASCII title)
    task_token_bytes: int = 680  # real tokens in public samples: 664-684 characters
    token_attribute_bytes: int = len("poll_token")
    token_item: str = "session"  # where the checker stores the token: "session" or "own" item
    token_item_key_bytes: int = len("id") + 36 + 5  # own item: key "<session id>#poll"
    cancel_stamp_bytes: int = len("cancelled_at") + 24 + len("cancel_saw_run_until") + 8  # time, epoch ms
    cancel_token_copy_attribute_bytes: int = len("cancel_saw_poll_token")
    event_item_bytes: int = 700  # estimate: ~2 s of streamed text (~120 tokens) + keys
    # What starts a turn (worst case: a create-session request):
    api_invokes_per_turn: int = 1
    api_memory_mb: int = 256  # template.yaml Globals MemorySize
    api_billed_s: float = 0.05  # assumption
    start_session_items: int = 1  # the new session item  } one transaction at create
    start_event_items: int = 1  # its opening user_message } (2 WRU per item <= 1 KB)
    ratelimit_items_per_turn: int = 2  # minute and hour counters, one transaction
    express_memory_mb: int = EXPRESS_MEMORY_CHUNK_MB  # billed memory of an Express execution
    batch_size: int = 1  # sessions polled by one poll cycle / one checker invocation


INTERVALS = (1, 2, 5)


def previous_loop(p: Params) -> Params:
    """The same workload on the previous Wait+Task+Choice loop (also the Express shape)."""
    return replace(p, poll_loop=WAIT_LOOP)


def catch_into_poll(p: Params) -> Params:
    """The token loop with Poll's States.Timeout Catch straight back into Poll, no NextPoll.

    Valid on AWS, not in moto (it takes a Catch naming its own state for no Catch), so not
    what ships: a lever to try on a deployed stack.
    """
    return replace(p, transitions_per_token_cycle=p.transitions_per_poll)


# --------------------------------------------------------------------------------------------
# Item sizes and request units.
# --------------------------------------------------------------------------------------------


def write_units(item_bytes: float) -> int:
    """WRU of one plain write of an item (1 KB steps)."""
    return max(1, math.ceil(item_bytes / DDB_WRITE_UNIT_BYTES))


def read_units(item_bytes: float) -> int:
    """RRU of one strongly consistent read of an item (4 KB steps)."""
    return max(1, math.ceil(item_bytes / DDB_READ_UNIT_BYTES))


def token_on_session(p: Params) -> bool:
    """Whether the session item carries the poll token while a turn runs."""
    return p.poll_loop == TOKEN_LOOP and p.token_item == "session"


def session_item_bytes_in_run(p: Params) -> int:
    """The session item while its turn runs: with the poll token when it is stored there.

    The token alone (~680 B) takes a 0.6-1 KB item past 1 KB, so every write of the session
    item during a turn (checker, worker, cancel) costs 2 WRU instead of 1.
    """
    extra = p.token_attribute_bytes + p.task_token_bytes if token_on_session(p) else 0
    return p.session_item_bytes + extra


def session_item_bytes_after_cancel(p: Params) -> int:
    """The session item from a cancel's stamp until the run's termination removes the run.

    The stamp adds cancelled_at and cancel_saw_run_until and, when the token is on the session
    item, a second copy of it (cancel_saw_poll_token, ~700 B): ~2.1 KB, 3 WRU a write. Three
    writes see it: the stamp itself (an update is sized by the larger of the item before and
    after it), the woken poll's checker noting its token, and the termination transaction.
    """
    copy = p.cancel_token_copy_attribute_bytes + p.task_token_bytes if token_on_session(p) else 0
    return session_item_bytes_in_run(p) + p.cancel_stamp_bytes + copy


def token_item_bytes(p: Params) -> int:
    """The poll token's own item, when it is not kept on the session item."""
    return p.token_item_key_bytes + p.token_attribute_bytes + p.task_token_bytes


# --------------------------------------------------------------------------------------------
# Usage.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Usage of one turn running for one minute (a "turn-minute")."""

    transitions: float  # Standard state transitions
    send_task_success: float  # SendTaskSuccess calls (token loop only)
    poll_invocations: float  # checker invocations
    api_invocations: float
    worker_invocations: float
    lambda_invocations: float  # all three
    lambda_gb_s: float
    worker_gb_s: float
    lambda_concurrency: float  # concurrent executions one running turn holds on average
    rru_sessions: float
    rru_events: float
    wru_session_item: float
    wru_token_item: float
    wru_events: float
    wru_ratelimits: float
    starts: float  # StartExecution calls
    express_gb_s: float  # billed duration x memory if the loop runs as Express

    @property
    def rru(self) -> float:
        return self.rru_sessions + self.rru_events

    @property
    def wru_sessions(self) -> float:
        return self.wru_session_item + self.wru_token_item

    @property
    def wru(self) -> float:
        return self.wru_sessions + self.wru_events + self.wru_ratelimits


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


def worker_seconds(p: Params) -> float:
    """How long one turn's worker runs (and is billed, and holds concurrency)."""
    return p.turn_seconds * p.worker_share_of_turn


def worker_events_per_turn(p: Params) -> float:
    """Event writes of one turn: one every flush_every_s while text streams."""
    return worker_seconds(p) * p.stream_share / p.flush_every_s


def heartbeats_per_turn(p: Params, interval_s: float) -> float:
    """Lease renewals of one turn's worker.

    The heartbeat fires every heartbeat period H (half the poll interval) after the worker's
    last write; an event write renews the lease too and restarts the period. While text
    streams, an event is flushed at the first token after 2 s, so a heartbeat due exactly at
    2 s still fires: floor(2 s / H) heartbeats per flush. At 1 and 2 s that is still one
    renewal every H; at 5 s (H = 2.5 s) the flushes replace them all.
    """
    period = interval_s * p.heartbeat_share_of_interval
    silent = worker_seconds(p) * (1 - p.stream_share)
    per_flush = math.floor(round(p.flush_every_s / period, 9))
    return silent / period + worker_events_per_turn(p) * per_flush


def usage_per_turn_minute(p: Params, interval_s: float) -> Usage:
    """Usage of one turn-minute at one poll interval."""
    token = p.poll_loop == TOKEN_LOOP
    cycles = cycles_per_minute(interval_s)
    turns = turns_per_turn_minute(p)
    cancels = p.cancelled_share * turns

    # State transitions and token answers. A timed-out Poll goes on through its timeout route
    # (NextPoll); the Poll whose token is answered goes to the Choice instead. So the Poll that
    # ends the turn costs Poll + Choice, and a cancel's wake-up adds the Choice and one more Poll
    # (answered in turn: no NextPoll).
    if token:
        timeout_route = p.transitions_per_token_cycle - p.transitions_per_poll
        transitions = (
            p.transitions_per_token_cycle * cycles / p.batch_size
            + (p.transitions_start_end + p.transitions_start_worker + p.transitions_per_answer - timeout_route)
            * turns
            + (p.transitions_per_answer + p.transitions_per_poll) * cancels
        )
        send_task_success = turns + cancels
        extra_polls = cancels  # the poll a cancel's wake-up causes
    else:
        transitions = (
            p.transitions_per_wait_cycle * cycles / p.batch_size
            + (p.transitions_start_end + p.transitions_start_worker) * turns
        )
        send_task_success = 0.0
        extra_polls = 0.0

    # Lambda.
    polls = cycles + extra_polls  # per session
    poll_invocations = cycles / p.batch_size + extra_polls
    api_invocations = p.api_invokes_per_turn * turns + cancels
    worker_s = worker_seconds(p)
    checker_gb_s = poll_invocations * p.checker_billed_s * p.checker_memory_mb / 1024
    api_gb_s = api_invocations * p.api_billed_s * p.api_memory_mb / 1024
    worker_gb_s = turns * worker_s * p.worker_memory_mb / 1024
    busy_seconds = poll_invocations * p.checker_billed_s + api_invocations * p.api_billed_s + turns * worker_s

    # DynamoDB: the session item (and the token's own item, if any).
    txn = DDB_TRANSACTION_FACTOR
    run_item = session_item_bytes_in_run(p)
    session_write = write_units(run_item)
    cancelled_write = write_units(session_item_bytes_after_cancel(p))  # both copies of the token
    event_write = write_units(p.event_item_bytes)
    session_read = read_units(p.session_item_bytes)
    rru_sessions = 0.0
    wru_token_item = 0.0
    poll_session_writes = 0.0
    if token and token_on_session(p):
        poll_session_writes = cycles  # UpdateItem SET poll_token, ReturnValues ALL_NEW
    elif token:
        wru_token_item = (cycles / p.batch_size + extra_polls) * write_units(token_item_bytes(p))
        rru_sessions += polls * session_read  # then a consistent read (BatchGetItem) of each
        rru_sessions += cancels * read_units(token_item_bytes(p))  # a cancel reads the token
    else:
        rru_sessions += polls * session_read  # consistent GetItem
    events = worker_events_per_turn(p) * turns
    worker_plain_writes = (
        heartbeats_per_turn(p, interval_s) + p.worker_claim_finish_writes + p.model_calls_per_turn
    ) * turns
    woken_poll_writes = extra_polls if token_on_session(p) else 0.0  # the woken poll notes its token
    wru_session_item = (
        p.start_session_items * turns * txn * write_units(p.session_item_bytes)  # create
        + poll_session_writes * session_write  # the checker notes its token
        + worker_plain_writes * session_write  # claim, lease renewals, finish, token usage
        + events * txn * session_write  # the session update in each event's transaction
        + (turns - cancels) * txn * session_write  # the checker's status_idle transaction
        + cancels * cancelled_write  # the cancel's stamp (sized by the item after it)
        + woken_poll_writes * cancelled_write  # the woken poll, on the item with both copies
        + cancels * txn * cancelled_write  # the status_terminated transaction (removes both)
    )
    wru_events = (p.start_event_items * turns + events + turns) * txn * event_write
    wru_ratelimits = p.ratelimit_items_per_turn * txn * turns + cancels * p.cancel_counter_wru

    return Usage(
        transitions=transitions,
        send_task_success=send_task_success,
        poll_invocations=poll_invocations,
        api_invocations=api_invocations,
        worker_invocations=turns,
        lambda_invocations=poll_invocations + api_invocations + turns,
        lambda_gb_s=checker_gb_s + api_gb_s + worker_gb_s,
        worker_gb_s=worker_gb_s,
        lambda_concurrency=busy_seconds / 60,
        rru_sessions=rru_sessions,
        rru_events=p.worker_history_rru_per_turn * turns,
        wru_session_item=wru_session_item,
        wru_token_item=wru_token_item,
        wru_events=wru_events,
        wru_ratelimits=wru_ratelimits,
        starts=turns,
        express_gb_s=turns * express_billed_seconds(p) * express_billed_gb(p),
    )


# --------------------------------------------------------------------------------------------
# Cost.
# --------------------------------------------------------------------------------------------


def cost_common(u: Usage, pr: Prices) -> dict[str, float]:
    """Lambda and DynamoDB cost of one turn-minute."""
    return {
        "lambda": u.lambda_invocations * pr.lambda_per_request + u.lambda_gb_s * pr.lambda_per_gb_s,
        "dynamodb": u.rru * pr.ddb_per_rru + u.wru * pr.ddb_per_wru,
    }


def worker_cost(u: Usage, pr: Prices) -> float:
    """The workers' share of the Lambda cost (their invocations and GB-seconds)."""
    return u.worker_invocations * pr.lambda_per_request + u.worker_gb_s * pr.lambda_per_gb_s


def cost_standard(u: Usage, pr: Prices) -> dict[str, float]:
    """Cost breakdown of one turn-minute with a Standard workflow."""
    parts = {"step_functions": u.transitions * pr.sfn_standard_per_transition, **cost_common(u, pr)}
    parts["total"] = sum(parts.values())
    return parts


def cost_express(u: Usage, pr: Prices) -> dict[str, float]:
    """Cost breakdown of one turn-minute with the loop as an Express workflow.

    Pass the usage of the Wait+Task+Choice loop: Express cannot run the token loop.
    """
    sfn = u.starts * pr.sfn_express_per_request + u.express_gb_s * pr.sfn_express_per_gb_s
    parts = {"step_functions": sfn, **cost_common(u, pr)}
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------------
# Ceilings on concurrent turns.
# --------------------------------------------------------------------------------------------

# Which design lever lifts each ceiling.
LEVERS = {
    "Lambda concurrency": "raise quota (workers hold one each); worker off Lambda (one process, many turns)",
    "SFN state transitions": "raise quota; longer or adaptive interval; Catch straight back into Poll (AWS, not moto); batch sessions per cycle",
    "SFN StartExecution": "raise quota; Express (6,000/s refill); one execution per session, not per turn",
    "SFN SendTaskSuccess": "raise quota; a throttled answer only delays the run to its next poll",
    "SFN open executions": "raise quota; Express (not counted)",
    "Lambda invoke rate": "longer interval; batch sessions per invocation; raise concurrency quota",
    "DDB sessions reads": "raise table quota; eventually consistent reads (0.5 RRU)",
    "DDB sessions writes": "raise table quota; poll token in its own item; longer interval",
    "DDB events reads": "raise table quota; read only the new part of the transcript",
    "DDB events writes": "raise table quota; flush text less often",
    "DDB rate-limit writes": "raise table quota",
}


def rates_from_usage(u: Usage) -> dict[str, float]:
    """What one concurrent turn consumes per second, quota by quota."""
    return {
        "Lambda concurrency": u.lambda_concurrency,
        "SFN state transitions": u.transitions / 60,
        "SFN StartExecution": u.starts / 60,
        "SFN SendTaskSuccess": u.send_task_success / 60,
        "SFN open executions": 1.0,
        "Lambda invoke rate": u.lambda_invocations / 60,
        "DDB sessions reads": u.rru_sessions / 60,
        "DDB sessions writes": u.wru_sessions / 60,
        "DDB events reads": u.rru_events / 60,
        "DDB events writes": u.wru_events / 60,
        "DDB rate-limit writes": u.wru_ratelimits / 60,
    }


def per_turn_rates(p: Params, interval_s: float) -> dict[str, float]:
    """Per-second consumption of one concurrent turn at one poll interval."""
    return rates_from_usage(usage_per_turn_minute(p, interval_s))


def quota_limits(q: Quotas, workflow: str) -> dict[str, float]:
    """Quota values, keyed like per_turn_rates; math.inf where a quota does not apply."""
    express = workflow == "express"
    return {
        "Lambda concurrency": q.lambda_concurrency,
        "SFN state transitions": math.inf if express else q.sfn_transition_refill,
        "SFN StartExecution": q.sfn_express_start_refill if express else q.sfn_start_refill,
        "SFN SendTaskSuccess": q.sfn_send_task_success_refill,
        "SFN open executions": math.inf if express else q.sfn_open_executions,
        "Lambda invoke rate": q.lambda_concurrency * q.lambda_invoke_rps_per_concurrency,
        "DDB sessions reads": q.ddb_table_rru,
        "DDB sessions writes": q.ddb_table_wru,
        "DDB events reads": q.ddb_table_rru,
        "DDB events writes": q.ddb_table_wru,
        "DDB rate-limit writes": q.ddb_table_wru,
    }


def check_shape(p: Params, workflow: str) -> None:
    """Express state machines cannot run .waitForTaskToken tasks (AWS rejects them)."""
    if workflow == "express" and p.poll_loop == TOKEN_LOOP:
        raise ValueError("Express workflows do not support .waitForTaskToken: use previous_loop(p)")


def ceilings_from_usage(q: Quotas, u: Usage, workflow: str = "standard") -> dict[str, float]:
    """Concurrent turns each quota allows: quota / what one concurrent turn uses."""
    rates = rates_from_usage(u)
    limits = quota_limits(q, workflow)
    return {name: (limits[name] / rate if rate > 0 else math.inf) for name, rate in rates.items()}


def ceilings(p: Params, q: Quotas, interval_s: float, workflow: str = "standard") -> dict[str, float]:
    """Concurrent-turn ceilings at one poll interval."""
    check_shape(p, workflow)
    return ceilings_from_usage(q, usage_per_turn_minute(p, interval_s), workflow)


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
    """Read and write rate on ONE session item while its turn runs, vs the partition limits.

    Averaged over the turn-minute (creation and the turn's end included).
    """
    u = usage_per_turn_minute(p, interval_s)
    reads = u.rru_sessions / 60
    writes = u.wru_session_item / 60
    return {
        "rcu_per_s": reads,
        "wcu_per_s": writes,
        "read_headroom": q.ddb_partition_rcu / reads if reads else math.inf,
        "write_headroom": q.ddb_partition_wcu / writes,
    }


# The limits in template.yaml / shared/src/rate_limit.rs.
CANCEL_PER_MINUTE = 30  # one counter: plain UpdateItem (1 WRU)
CREATE_PER_MINUTE = 10  # two counters in one transaction (2 WRU per item)
CREATE_PER_HOUR = 20
MESSAGES_PER_MINUTE = 60  # one counter: plain UpdateItem (1 WRU)
READS_PER_MINUTE = 300  # transcript and list together: one counter, plain UpdateItem (1 WRU)


def rate_limit_counters(q: Quotas) -> list[tuple[str, float, float, float]]:
    """(counter, admitted WRU/s at the limit, headroom vs partition WCU, attempts/s to throttle).

    Attempts/s assumes a refused (condition-failed) update still consumes its write units.
    """
    rows = []
    for name, admitted_per_s, wru_per_request in (
        ("cancel, 30/min", CANCEL_PER_MINUTE / 60, 1.0),
        ("create, 10/min", CREATE_PER_MINUTE / 60, 2.0),
        ("create, 20/hour", CREATE_PER_HOUR / 3600, 2.0),
        ("message, 60/min", MESSAGES_PER_MINUTE / 60, 1.0),
        ("reads (transcript + list), 300/min", READS_PER_MINUTE / 60, 1.0),
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


RAISED_CONCURRENCY = 10_000  # an example raise of the Lambda concurrency quota


def levers(p: Params, pr: Prices, interval_s: float = 1) -> list[tuple[str, dict[str, float], float]]:
    """(lever, ceilings in us-east-1, Standard-or-Express cost per turn-minute) at one interval."""
    q = US_EAST_1
    u = usage_per_turn_minute(p, interval_s)
    old = previous_loop(p)
    raised = replace(q, lambda_concurrency=RAISED_CONCURRENCY)
    raised2 = replace(raised, sfn_transition_refill=2 * q.sfn_transition_refill)
    adaptive = blended_usage(p, 1, 5, 0.25)
    own = replace(p, token_item="own")
    batched = replace(p, token_item="own", batch_size=25)
    small_worker = replace(p, worker_memory_mb=128)
    self_catch = catch_into_poll(p)
    std = lambda params: cost_standard(usage_per_turn_minute(params, interval_s), pr)["total"]  # noqa: E731
    return [
        ("none: token loop, Standard", ceilings(p, q, interval_s), std(p)),
        ("previous loop: Wait+Task+Choice, Standard", ceilings(old, q, interval_s), std(old)),
        (
            "Express loop (Wait+Task+Choice, no instant wake-up)",
            ceilings(old, q, interval_s, "express"),
            cost_express(usage_per_turn_minute(old, interval_s), pr)["total"],
        ),
        (f"Lambda concurrency raised to {RAISED_CONCURRENCY:,}", ceilings(p, raised, interval_s), std(p)),
        (
            f"{RAISED_CONCURRENCY:,} concurrency and 2x StateTransition",
            ceilings(p, raised2, interval_s),
            std(p),
        ),
        ("Catch straight back into Poll (1 transition a cycle; AWS, not moto)", ceilings(self_catch, q, interval_s), std(self_catch)),
        ("adaptive: 25% of turn at 1 s, 75% at 5 s", ceilings_from_usage(q, adaptive), cost_standard(adaptive, pr)["total"]),
        ("poll token in its own item", ceilings(own, q, interval_s), std(own)),
        ("batch 25 sessions per cycle (one token per batch)", ceilings(batched, q, interval_s), std(batched)),
        ("worker at 128 MB", ceilings(small_worker, q, interval_s), std(small_worker)),
    ]


# --------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------


def fmt_int(x: float) -> str:
    return "n/a" if math.isinf(x) else f"{math.floor(x):,}"


def fmt_num(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def fmt_usd(x: float) -> str:
    return f"${x:.6f}"


def fmt_bind(b: tuple[str, float]) -> str:
    return f"{b[0]} ({fmt_int(b[1])})"


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def section(title: str, body: str, markdown: bool) -> str:
    return f"### {title}\n\n{body}\n" if markdown else f"{title}\n{body}\n"


def report(p: Params = Params(), pr: Prices = Prices(), markdown: bool = False) -> str:
    cols = [f"{i} s" for i in INTERVALS]
    old = previous_loop(p)
    usages = [usage_per_turn_minute(p, i) for i in INTERVALS]
    old_usages = [usage_per_turn_minute(old, i) for i in INTERVALS]
    parts = []
    bold = (lambda t: f"**{t}**") if markdown else (lambda t: t)

    # What the model counts per turn and per item, before any per-minute figure.
    turn = turns_per_turn_minute(p)
    rows = [
        ["poll cycles"] + [fmt_num(cycles_per_minute(i) * p.turn_seconds / 60, 0) for i in INTERVALS],
        ["state transitions, token loop"] + [fmt_num(u.transitions / turn, 0) for u in usages],
        ["state transitions, previous loop"] + [fmt_num(u.transitions / turn, 0) for u in old_usages],
        ["event writes by the worker (estimate)"] + [fmt_num(worker_events_per_turn(p), 0) for _ in INTERVALS],
        ["lease renewals by the worker"] + [fmt_num(heartbeats_per_turn(p, i), 0) for i in INTERVALS],
        ["worker seconds (billed, one concurrency unit)"] + [fmt_num(worker_seconds(p), 0) for _ in INTERVALS],
    ]
    parts.append(
        section(
            f"One {p.turn_seconds:.0f} s turn (estimate), token loop unless named",
            render(["per turn"] + cols, rows, markdown),
            markdown,
        )
    )
    run_bytes = session_item_bytes_in_run(p)
    cancel_bytes = session_item_bytes_after_cancel(p)
    rows = [
        ["session item, no token (create; previous loop; Express)", f"{p.session_item_bytes:,}",
         str(write_units(p.session_item_bytes)), str(DDB_TRANSACTION_FACTOR * write_units(p.session_item_bytes))],
        ["session item with the poll token (token loop, during a turn)", f"{run_bytes:,}",
         str(write_units(run_bytes)), str(DDB_TRANSACTION_FACTOR * write_units(run_bytes))],
        ["session item after a cancel, both copies of the token (until the termination)", f"{cancel_bytes:,}",
         str(write_units(cancel_bytes)), str(DDB_TRANSACTION_FACTOR * write_units(cancel_bytes))],
        ["event item (about 2 s of streamed text)", f"{p.event_item_bytes:,}",
         str(write_units(p.event_item_bytes)), str(DDB_TRANSACTION_FACTOR * write_units(p.event_item_bytes))],
        ["poll token in its own item (lever)", f"{token_item_bytes(p):,}",
         str(write_units(token_item_bytes(p))), str(DDB_TRANSACTION_FACTOR * write_units(token_item_bytes(p)))],
    ]
    parts.append(
        section(
            "Item sizes (estimates) and write units",
            render(["item", "bytes", "WRU per write", "WRU in a transaction"], rows, markdown),
            markdown,
        )
    )

    std = [cost_standard(u, pr) for u in usages]
    exp = [cost_express(u, pr) for u in old_usages]
    rows = [
        ["State transitions (Standard)"] + [fmt_num(u.transitions, 0) for u in usages],
        ["SendTaskSuccess calls"] + [fmt_num(u.send_task_success, 1) for u in usages],
        ["Lambda invocations"] + [fmt_num(u.lambda_invocations, 1) for u in usages],
        ["Lambda GB-seconds"] + [fmt_num(u.lambda_gb_s, 3) for u in usages],
        ["of which the worker"] + [fmt_num(u.worker_gb_s, 3) for u in usages],
        ["DynamoDB RRU"] + [fmt_num(u.rru, 0) for u in usages],
        ["DynamoDB WRU"] + [fmt_num(u.wru, 0) for u in usages],
        ["Step Functions $"] + [fmt_usd(c["step_functions"]) for c in std],
        ["Lambda $"] + [fmt_usd(c["lambda"]) for c in std],
        ["of which the worker $"] + [fmt_usd(worker_cost(u, pr)) for u in usages],
        ["DynamoDB $"] + [fmt_usd(c["dynamodb"]) for c in std],
        [bold("Standard total $")] + [bold(fmt_usd(c["total"])) for c in std],
        ["Step Functions share of Standard"] + [f"{c['step_functions'] / c['total']:.0%}" for c in std],
        ["Express (Wait+Task+Choice): Step Functions $"] + [fmt_usd(c["step_functions"]) for c in exp],
        ["Express: Lambda + DynamoDB $"] + [fmt_usd(c["lambda"] + c["dynamodb"]) for c in exp],
        [bold("Express total $")] + [bold(fmt_usd(c["total"])) for c in exp],
        ["Standard / Express"] + [f"{s['total'] / e['total']:.1f}x" for s, e in zip(std, exp)],
    ]
    parts.append(
        section(
            "Usage and cost per turn-minute, token loop (us-east-1 prices, USD)",
            render(["per turn-minute"] + cols, rows, markdown),
            markdown,
        )
    )

    old_std = [cost_standard(u, pr) for u in old_usages]
    new_bind = [binding(ceilings(p, US_EAST_1, i)) for i in INTERVALS]
    old_bind = [binding(ceilings(old, US_EAST_1, i)) for i in INTERVALS]
    self_catch = catch_into_poll(p)
    self_usages = [usage_per_turn_minute(self_catch, i) for i in INTERVALS]
    self_std = [cost_standard(u, pr) for u in self_usages]
    rows = [
        ["transitions per cycle, previous / token / Catch into Poll"]
        + [f"{p.transitions_per_wait_cycle} / {p.transitions_per_token_cycle} / {self_catch.transitions_per_token_cycle}"
           for _ in INTERVALS],
        ["transitions per turn-minute, previous loop"] + [fmt_num(u.transitions, 0) for u in old_usages],
        ["transitions per turn-minute, token loop"] + [fmt_num(u.transitions, 0) for u in usages],
        ["transitions per turn-minute, Catch into Poll"] + [fmt_num(u.transitions, 0) for u in self_usages],
        ["Standard total $, previous loop"] + [fmt_usd(c["total"]) for c in old_std],
        ["Standard total $, token loop"] + [fmt_usd(c["total"]) for c in std],
        ["Standard total $, Catch into Poll"] + [fmt_usd(c["total"]) for c in self_std],
        ["token loop cost / previous loop cost"] + [f"{n['total'] / o['total']:.0%}" for n, o in zip(std, old_std)],
        ["Catch into Poll cost / previous loop cost"]
        + [f"{n['total'] / o['total']:.0%}" for n, o in zip(self_std, old_std)],
        ["transition ceiling, previous loop"]
        + [fmt_int(ceilings(old, US_EAST_1, i)["SFN state transitions"]) for i in INTERVALS],
        ["transition ceiling, token loop"] + [fmt_int(ceilings(p, US_EAST_1, i)["SFN state transitions"]) for i in INTERVALS],
        ["transition ceiling, Catch into Poll"]
        + [fmt_int(ceilings(self_catch, US_EAST_1, i)["SFN state transitions"]) for i in INTERVALS],
        ["binds first, previous loop"] + [fmt_bind(b) for b in old_bind],
        ["binds first, token loop"] + [fmt_bind(b) for b in new_bind],
        ["binds first, Catch into Poll"] + [fmt_bind(binding(ceilings(self_catch, US_EAST_1, i))) for i in INTERVALS],
    ]
    parts.append(
        section(
            "Previous loop (Wait+Task+Choice) vs token loop as shipped (Poll, NextPoll) vs its Catch "
            "straight into Poll (AWS only), Standard, us-east-1, same worker",
            render(["Standard"] + cols, rows, markdown),
            markdown,
        )
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
                if binding(per[i])[0] == name:
                    v = f"**{v}**" if markdown else f"{v} <"
                cells.append(v)
            rows.append([name] + cells + [LEVERS[name]])
        rows.append(["Binds first"] + [fmt_bind(binding(per[i])) for i in INTERVALS] + [""])
        rows.append(["Binds next"] + [fmt_bind(next_binding(per[i])) for i in INTERVALS] + [""])
        parts.append(
            section(
                f"Concurrent-turn ceilings, token loop, Standard workflow, {q.region}"
                + ("" if q is US_EAST_1 else " (rows that differ from us-east-1)"),
                render(["quota"] + cols + ["lever"], rows, markdown),
                markdown,
            )
        )

    # Express has no region-dependent quota in this model: both regions give the same ceilings.
    per = {i: ceilings(old, US_EAST_1, i, "express") for i in INTERVALS}
    assert per == {i: ceilings(old, OTHER_REGION, i, "express") for i in INTERVALS}
    rows = [
        ["binds first"] + [fmt_bind(binding(per[i])) for i in INTERVALS],
        ["binds next"] + [fmt_bind(next_binding(per[i])) for i in INTERVALS],
    ]
    parts.append(
        section(
            "Binding quota with the loop as Express (Wait+Task+Choice; any region)",
            render(["Express"] + cols, rows, markdown),
            markdown,
        )
    )

    cancelled = replace(p, cancelled_share=1.0)
    c_usages = [usage_per_turn_minute(cancelled, i) for i in INTERVALS]
    rows = [
        ["state transitions, none / every turn cancelled"]
        + [f"{fmt_num(a.transitions, 0)} / {fmt_num(b.transitions, 0)}" for a, b in zip(usages, c_usages)],
        ["SendTaskSuccess calls, none / every turn cancelled"]
        + [f"{fmt_num(a.send_task_success, 0)} / {fmt_num(b.send_task_success, 0)}" for a, b in zip(usages, c_usages)],
        ["Standard total $, every turn cancelled"]
        + [fmt_usd(cost_standard(u, pr)["total"]) for u in c_usages],
    ]
    for q in (US_EAST_1, OTHER_REGION):
        rows.append(
            [f"SendTaskSuccess ceiling, every turn cancelled, {q.region}"]
            + [fmt_int(ceilings(cancelled, q, i)["SFN SendTaskSuccess"]) for i in INTERVALS]
        )
    rows.append(
        ["binds first, every turn cancelled, us-east-1"]
        + [fmt_bind(binding(ceilings(cancelled, US_EAST_1, i))) for i in INTERVALS]
    )
    parts.append(
        section(
            "What cancels add, token loop (per turn-minute; a cancel at the end of a 60 s turn)",
            render(["cancels"] + cols, rows, markdown),
            markdown,
        )
    )

    rows = []
    for i in INTERVALS:
        h = hot_session(p, US_EAST_1, i)
        rows.append([f"session item, writes at {i} s (token loop)", f"{fmt_num(h['wcu_per_s'], 2)} WCU/s", f"{h['write_headroom']:,.0f}x"])
    for i in INTERVALS:
        h = hot_session(old, US_EAST_1, i)
        rows.append([f"session item, reads at {i} s (Wait+Task+Choice)", f"{fmt_num(h['rcu_per_s'], 2)} RCU/s", f"{h['read_headroom']:,.0f}x"])
    for name, wru, head, _attempts in rate_limit_counters(US_EAST_1):
        rows.append([f"rate-limit counter, {name}", f"{fmt_num(wru, 3)} WCU/s", f"{head:,.0f}x"])
    parts.append(
        section(
            "One hot item vs the per-partition limits (3,000 RCU/s, 1,000 WCU/s)",
            render(["item", "load (counters at their limit)", "headroom"], rows, markdown),
            markdown,
        )
    )

    rows = [[label, fmt_bind(binding(ceil)), fmt_usd(cost)] for label, ceil, cost in levers(p, pr, 1)]
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
