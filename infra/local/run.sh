#!/usr/bin/env bash
# Runs the local stack for `make dev`, `make test` and `make bench`.
#
#   infra/local/run.sh dev     emulator on :4566 + every function under `cargo lambda watch`
#                              on :9000 with the real API paths; foreground, Ctrl-C stops all
#   infra/local/run.sh test    emulator + functions on test ports, then every test
#                              (`run.sh test -E 'test(/^agent::/)'`: only the nextest selection)
#   infra/local/run.sh bench   emulator on the test port, then the benchmarks
#   infra/local/run.sh bench-workflow
#                              emulator + functions on test ports, then the turn workflow's
#                              cancel-latency benchmark
#   infra/local/run.sh chaos   emulator (with fault injection) + functions on test ports, then the
#                              randomized whole-system test infra/chaos/chaos.py with SEED,
#                              SESSIONS, CLIENTS (and FAULT_RATES) from the environment; further
#                              arguments go to chaos.py
#
# With AWS_ENDPOINT_URL set (LocalStack, say), test and the benchmarks start no emulator: they
# create the template's tables, state machine and API key secret there under a per-run prefix
# and run against it. test and bench-workflow also deploy the functions the state machine
# invokes (checker, worker) into that emulator, which runs them in its own containers
# (stack.py provision --deploy-functions); the routes stay under `cargo lambda watch`. The
# tests that plant DynamoDB faults need the project's own emulator: test leaves them out there
# and says so.
#
# Everything listens on 127.0.0.1 only (the provider emulator on KNOQ_PROVIDER_HOST when set,
# for an external emulator's containers that cannot reach the host's loopback). Ports can be
# moved with KNOQ_EMULATOR_PORT and KNOQ_API_PORT (test and bench default to 4599 and 9099, so
# they run beside `make dev`).
#
# The read limit (GET /transcript and GET /sessions together, per user): `make dev` keeps the
# template's 300 a minute, as production; `make test` raises it to 100000, since its tests
# poll transcripts every 25-100 ms (tests/tests/routes/rate_limit.rs checks the limit with its own low
# one). KNOQ_READS_LIMIT_PER_MINUTE sets it in any mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${1:?usage: run.sh dev|test|bench|bench-workflow|chaos}
shift
# `run.sh test <nextest arguments>` runs only the tests they select (and skips the contract
# test and the fuzzing), on the same freshly started stack.
SELECTED_TESTS=("$@")
PY=$ROOT/.venv/bin/python
export PATH="$ROOT/.venv/bin:$PATH"
mkdir -p .local

case "$MODE" in
  dev) EMU_PORT=${KNOQ_EMULATOR_PORT:-4566}; API_PORT=${KNOQ_API_PORT:-9000}
       PROVIDER_PORT=${KNOQ_PROVIDER_PORT:-4567} ;;
  test|bench|bench-workflow|chaos) EMU_PORT=${KNOQ_EMULATOR_PORT:-4599}; API_PORT=${KNOQ_API_PORT:-9099}
       PROVIDER_PORT=${KNOQ_PROVIDER_PORT:-4598} ;;
  *) echo "usage: run.sh dev|test|bench|bench-workflow|chaos" >&2; exit 2 ;;
esac
ENV_FILE=${KNOQ_ENV_FILE:-.local/$MODE.env}
# bench-workflow raises it too: each batch follows four live turns of one user with waiting
# reads, about eight answers a second while their text streams.
if [ "$MODE" = test ] || [ "$MODE" = chaos ] || [ "$MODE" = bench-workflow ]; then
  READS_LIMIT=${KNOQ_READS_LIMIT_PER_MINUTE:-100000}
else READS_LIMIT=${KNOQ_READS_LIMIT_PER_MINUTE:-}; fi
# Template parameters stack.py sets for this run, over its LOCAL_PARAMETERS.
STACK_PARAMETERS=()
[ -z "$READS_LIMIT" ] || STACK_PARAMETERS+=(--parameter "ReadsLimitPerMinute=$READS_LIMIT")
# `make chaos` runs the production poll interval (2 s; the other local modes poll every 1 s
# for quicker tests): 60 sessions polling every second kept the emulator's one Python core busy
# with polls alone, and every API answer waited behind them.
if [ "$MODE" = chaos ]; then STACK_PARAMETERS+=(--parameter "PollIntervalSeconds=${KNOQ_POLL_INTERVAL_SECONDS:-2}")
elif [ -n "${KNOQ_POLL_INTERVAL_SECONDS:-}" ]; then STACK_PARAMETERS+=(--parameter "PollIntervalSeconds=$KNOQ_POLL_INTERVAL_SECONDS"); fi
# The stop watch: every worker reads its session every StopWatchMilliseconds while it waits on
# the model (100 by default, as deployed). The test and chaos stacks run dozens of turns at once
# on the emulator's one Python thread, where ten reads a second per turn were enough to slow
# every other request past the tests' bounds: they read every 250 ms (KNOQ_STOP_WATCH_MS).
if [ "$MODE" = test ] || [ "$MODE" = chaos ]; then
  STACK_PARAMETERS+=(--parameter "StopWatchMilliseconds=${KNOQ_STOP_WATCH_MS:-250}")
elif [ -n "${KNOQ_STOP_WATCH_MS:-}" ]; then
  STACK_PARAMETERS+=(--parameter "StopWatchMilliseconds=$KNOQ_STOP_WATCH_MS")
fi
ORIGIN=${KNOQ_ALLOWED_ORIGIN:-http://127.0.0.1:$API_PORT}
PIDS=()

# Stopping, whatever stops it (Ctrl-C, SIGTERM from a process manager or an editor, a closed
# terminal, make forwarding its own SIGTERM to this script): every service runs in a session
# of its own (start), and cleanup ends every process of those sessions (stop_services), the
# functions that `cargo lambda watch` runs in process groups of their own included. A signal
# arriving while cleanup runs is ignored rather than allowed to cut it short (make sends
# SIGTERM a second time). If this script is killed outright (SIGKILL), no cleanup can run:
# the services get SIGTERM from the kernel when it dies (start).
cleanup() {
  trap '' INT TERM HUP
  trap - EXIT
  stop_services
  rm -f "$ENV_FILE"
}
trap cleanup EXIT
# Ctrl-C is how `make dev` is meant to stop: a clean exit, so make prints no error line for it.
trap 'if [ "$MODE" = dev ]; then exit 0; else exit 130; fi' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The live processes of the services' sessions (zombies hold nothing); none is no error.
service_processes() {
  [ ${#PIDS[@]} -gt 0 ] || return 0
  { ps -o pid=,stat= -s "$(IFS=,; echo "${PIDS[*]}")" 2>/dev/null || true; } |
    awk '$2 !~ /^Z/ { print $1 }'
}

# Waits up to $1 quarter-seconds for the services' processes to end; false if some remain.
services_end_within() {
  local _
  for _ in $(seq 1 "$1"); do
    [ -n "$(service_processes)" ] || return 0
    sleep 0.25
  done
  [ -z "$(service_processes)" ]
}

# SIGTERM to each service's process group first, so that `cargo lambda watch` ends its
# function instances itself; after 5 s SIGTERM to whatever of their sessions is left; after
# 5 s more, SIGKILL.
stop_services() {
  local pid left
  # A service forked just as the signal came can be missing from PIDS (the trap ran between
  # its `&` and `PIDS+=`): every child of this script is a service, so each is added too.
  # (The list holds the `ps` of the substitution itself, gone by then: its kill fails quietly.)
  PIDS+=($(ps -o pid= --ppid $$ 2>/dev/null || true))
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  services_end_within 20 && return 0
  left=$(service_processes)
  [ -z "$left" ] || kill -TERM $left 2>/dev/null || true
  services_end_within 20 && return 0
  left=$(service_processes)
  echo "run.sh: stopping what is left by force: $left" >&2
  [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
EXTERNAL_ENDPOINT=""
if [ "$MODE" != dev ] && [ -n "${AWS_ENDPOINT_URL:-}" ]; then EXTERNAL_ENDPOINT=$AWS_ENDPOINT_URL; fi
# The model provider: in dev, the one ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY name when both
# are set; otherwise (and always in test and the benchmarks) the bundled provider emulator.
if [ "$MODE" = dev ] && [ -n "${ANTHROPIC_BASE_URL:-}" ] && [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  export KNOQ_PROVIDER_URL=$ANTHROPIC_BASE_URL KNOQ_PROVIDER_API_KEY=$ANTHROPIC_API_KEY
  PROVIDER_EMULATOR=""
else
  PROVIDER_HOST=${KNOQ_PROVIDER_HOST:-127.0.0.1}
  export KNOQ_PROVIDER_URL="http://$PROVIDER_HOST:$PROVIDER_PORT"
  KNOQ_PROVIDER_API_KEY="local-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  export KNOQ_PROVIDER_API_KEY
  PROVIDER_EMULATOR=yes
fi
PORTS=("$API_PORT"); [ -n "$EXTERNAL_ENDPOINT" ] || PORTS+=("$EMU_PORT")
[ -z "$PROVIDER_EMULATOR" ] || PORTS+=("$PROVIDER_PORT")
for port in "${PORTS[@]}"; do
  port_free "$port" || { echo "run.sh: port $port on 127.0.0.1 is already in use" >&2; exit 1; }
done

# Each service runs in a session of its own (its id is the service's pid), so that cleanup
# finds all of its processes. Where util-linux's setpriv is present, the service also gets
# SIGTERM from the kernel when this script dies, however it dies.
# Under `make dev`, what the services print goes to SERVICE_LOG instead of the terminal.
SERVICE_LOG=""
if command -v setpriv >/dev/null 2>&1; then
  start() {
    if [ -n "$SERVICE_LOG" ]; then setsid setpriv --pdeathsig TERM "$@" >>"$SERVICE_LOG" 2>&1 &
    else setsid setpriv --pdeathsig TERM "$@" & fi
    PIDS+=("$!")
  }
else
  start() {
    if [ -n "$SERVICE_LOG" ]; then setsid "$@" >>"$SERVICE_LOG" 2>&1 &
    else setsid "$@" & fi
    PIDS+=("$!")
  }
fi

start_emulator() {
  rm -f "$ENV_FILE"
  if [ -n "$EXTERNAL_ENDPOINT" ]; then
    # That emulator's Step Functions invokes only the functions it hosts: where runs are
    # needed, the invoked functions are built for this machine and deployed into it.
    local deploy=()
    [ "$MODE" = bench ] || deploy=(--deploy-functions)
    "$PY" infra/local/stack.py provision --endpoint "$EXTERNAL_ENDPOINT" \
      --prefix "knoq-$MODE-$(date +%s)-" --env-file "$ENV_FILE" --allowed-origin "$ORIGIN" \
      "${deploy[@]}" "${STACK_PARAMETERS[@]}" "$@"
    return 0
  fi
  # The state machine's Lambda invokes go to `cargo lambda watch`, which serves the
  # Lambda Invoke API on the API port.
  AWS_ENDPOINT_URL_LAMBDA="http://127.0.0.1:$API_PORT" \
    start "$PY" infra/local/stack.py serve --port "$EMU_PORT" --env-file "$ENV_FILE" \
    --allowed-origin "$ORIGIN" "${STACK_PARAMETERS[@]}" "$@"
  for _ in $(seq 1 120); do
    [ -s "$ENV_FILE" ] && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "run.sh: the emulator exited" >&2; exit 1; }
    sleep 0.5
  done
  echo "run.sh: the emulator did not start within 60 s" >&2; exit 1
}

# The bundled provider emulator (infra/local/provider_emulator.py). Each word of its default
# answer takes KNOQ_PROVIDER_WORD_DELAY_MS (200 in dev: a turn lasts over 8 s; tests make it
# short and ask for slow answers where they need them).
start_provider() {
  [ -n "$PROVIDER_EMULATOR" ] || return 0
  start "$PY" infra/local/provider_emulator.py --host "$PROVIDER_HOST" \
    --port "$PROVIDER_PORT" --api-key "$KNOQ_PROVIDER_API_KEY" "$@"
  for _ in $(seq 1 60); do
    curl -s -o /dev/null "$KNOQ_PROVIDER_URL/_emulator/requests" && return 0
    sleep 0.5
  done
  echo "run.sh: the provider emulator did not start" >&2; exit 1
}

# Every running turn calls the checker once per poll interval and holds one worker for the
# whole turn, so both get several instances.
start_functions() {
  start cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$API_PORT" \
    --env-file "$ENV_FILE" --disable-cors --concurrency "${KNOQ_FUNCTION_CONCURRENCY:-8}" \
    --timeout 900 "$@"
}

# A function under `cargo lambda watch` starts on its first request; wait until each route
# answers with its own JSON (401 without a cookie) rather than an emulator error.
wait_for_routes() {
  local deadline=$((SECONDS + 300)) route status
  for route in "POST /api/managed-agents/cancel" "POST /api/managed-agents/session" \
    "GET /api/managed-agents/transcript" "POST /api/managed-agents/message" \
    "GET /api/managed-agents/sessions" "DELETE /api/managed-agents/session"; do
    while :; do
      status=$(curl -s -o /dev/null -w '%{http_code}' -X "${route% *}" \
        "http://127.0.0.1:$API_PORT${route#* }" || true)
      [ "$status" = 401 ] && break
      [ $SECONDS -lt $deadline ] || { echo "run.sh: $route not ready (last status $status)" >&2; exit 1; }
      sleep 1
    done
  done
}

load_env() { set -a; . "$ROOT/$ENV_FILE"; set +a; }

# Schemathesis against the running stack with openapi.yaml (infra/fuzz/schemathesis.toml):
# the generated phases, then the stateful one (create -> transcript, message, cancel,
# delete through the document's links), each as a fresh user so that one phase's rate
# limits do not starve the other. Any 5xx or response that breaks the document fails.
fuzz() {
  local phases user
  for phases in coverage,fuzzing stateful; do
    user="fuzz-${phases%%,*}-$(date +%s%N)"
    (cd .local && KNOQ_FUZZ_TOKEN=$("$KNOQ_ADMIN_BIN" issue-token --user "$user" --org "$user") \
      PYTHONPATH="$ROOT/infra/fuzz" SCHEMATHESIS_HOOKS=hooks \
      timeout 600 "$ROOT/.venv/bin/st" --config-file "$ROOT/infra/fuzz/schemathesis.toml" \
        run "$ROOT/openapi.yaml" --checks all --exclude-checks unsupported_method \
        --phases "$phases" --no-color)
  done
}

# The randomized whole-system test (infra/chaos): in `make test`, first the seeds of
# infra/chaos/regressions.txt (seeds that once failed, with their session and client counts) of
# at most CHAOS_TEST_MAX_SESSIONS sessions (heavier ones are named and left to make chaos), then one run
# of 12 sessions from 8 clients with a random seed (printed; CHAOS_SEED fixes it), each bounded
# (90 s of scripts, 60 s to come to rest). A failing run prints the seed, the invariant, the
# evidence and the command that reruns it; the fuzzing still runs, then the test fails.
CHAOS_TEST_MAX_SESSIONS=12
chaos_runs() {
  local failed=0 seed sessions clients _
  while read -r seed sessions clients _; do
    case "$seed" in ''|\#*) continue ;; esac
    if [ "$sessions" -gt "$CHAOS_TEST_MAX_SESSIONS" ]; then
      # Too heavy for make test's bounded runs on a 2-core machine (its runs get 90 s of
      # scripts and 60 s to come to rest): make chaos replays it (docs/testing.md).
      echo "run.sh: chaos regression seed $seed ($sessions sessions) is left to make chaos SEED=$seed SESSIONS=$sessions CLIENTS=$clients"
      continue
    fi
    echo "run.sh: chaos regression seed $seed ($sessions sessions, $clients clients)"
    "$PY" infra/chaos/chaos.py --seed "$seed" --sessions "$sessions" --clients "$clients" --max-seconds 90 \
      --rest-seconds 60 --final-seconds 60 </dev/null || failed=1
  done < infra/chaos/regressions.txt
  "$PY" infra/chaos/chaos.py ${CHAOS_SEED:+--seed "$CHAOS_SEED"} --sessions 12 --clients 8 \
    --max-seconds 90 --rest-seconds 60 --final-seconds 60 </dev/null || failed=1
  return $failed
}

case "$MODE" in
  dev)
    # The terminal shows the build, then the banner alone, then one line per request and per
    # turn event (infra/local/dev_view.py); the services' own output goes to the log file.
    cargo build --workspace --bins
    SERVICE_LOG=${KNOQ_DEV_LOG:-${ENV_FILE%.env}.log}
    : > "$SERVICE_LOG"
    echo "run.sh: starting the emulator, the provider and the functions (their output: $SERVICE_LOG)"
    start_provider --word-delay-ms "${KNOQ_PROVIDER_WORD_DELAY_MS:-200}"
    start_emulator --run-schedules
    start_functions
    wait_for_routes
    # One line per request and per turn event, from the log, until Ctrl-C. Started before the
    # banner, so that a stop the moment the banner shows finds it among the services.
    SERVICE_LOG="" start "$PY" infra/local/dev_view.py --follow "$SERVICE_LOG"
    cat <<MSG

Knoq is running locally (Ctrl-C stops everything):
  API            http://127.0.0.1:$API_PORT/api/managed-agents/...  (Origin: $ORIGIN)
  AWS emulator   http://127.0.0.1:$EMU_PORT  (DynamoDB, Step Functions, Secrets Manager)
  model provider $KNOQ_PROVIDER_URL${PROVIDER_EMULATOR:+  (the bundled emulator; set ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY for a real one)}
  environment    $ENV_FILE
  services' log  $SERVICE_LOG
  cookie         make token USER_ID=<id> ORG_ID=<id>   (cookie name: make token-name)

MSG
    wait "${PIDS[@]}"
    ;;
  test)
    cargo build --workspace --all-targets
    start_provider --word-delay-ms "${KNOQ_PROVIDER_WORD_DELAY_MS:-20}"
    start_emulator --fault-injection --function-concurrency "${KNOQ_FUNCTION_CONCURRENCY:-16}"
    KNOQ_FUNCTION_CONCURRENCY=${KNOQ_FUNCTION_CONCURRENCY:-16} start_functions --ignore-changes
    wait_for_routes
    load_env
    export KNOQ_API_URL="http://127.0.0.1:$API_PORT" KNOQ_PROVIDER_URL
    export KNOQ_ADMIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/knoq-admin"
    export KNOQ_ALLOWED_ORIGIN="$ORIGIN"
    if [ -n "$EXTERNAL_ENDPOINT" ]; then
      # Not skipped quietly: named here, and counted as skipped by nextest.
      cat <<MSG
run.sh: against $EXTERNAL_ENDPOINT these tests are left out, because they plant DynamoDB
faults through the project's own emulator (/_knoq/faults), which no other emulator has;
\`make test\` without AWS_ENDPOINT_URL runs them:
  tests/tests/scenarios/faults.rs      every test
  tests/tests/scenarios/robustness.rs  the whole module (most of its tests plant faults)
  tests/tests/scenarios/purge.rs       the whole module (its half-way purge plants one)
  infra/fuzz/test_contract.py     DynamoDBFaultContractTest (the throttled cancel's 503)
MSG
      cargo nextest run --workspace --no-fail-fast --profile external-emulator "${SELECTED_TESTS[@]}"
      [ ${#SELECTED_TESTS[@]} -gt 0 ] || (cd infra/fuzz && "$PY" -m unittest test_contract.ContractTest)
    else
      cargo nextest run --workspace --no-fail-fast "${SELECTED_TESTS[@]}"
      [ ${#SELECTED_TESTS[@]} -gt 0 ] || "$PY" -m unittest discover -s infra/fuzz -p "test_*.py"
    fi
    # The terminal client (make chat) driven end to end against this stack.
    [ ${#SELECTED_TESTS[@]} -gt 0 ] || "$PY" -m unittest discover -s infra/chat -p "live_test_*.py"

    # The chaos runs need the project's own emulator (its /_knoq/chaos fault schedule).
    CHAOS_FAILED=0
    if [ ${#SELECTED_TESTS[@]} -eq 0 ] && [ -z "$EXTERNAL_ENDPOINT" ]; then chaos_runs || CHAOS_FAILED=1; fi
    [ ${#SELECTED_TESTS[@]} -gt 0 ] || fuzz
    # A failed chaos run fails make test (after the fuzzing has run, so one run shows both).
    if [ "$CHAOS_FAILED" != 0 ]; then
      echo "run.sh: a chaos run failed (its seed, the invariant and the command that reruns it are above)" >&2
      exit 1
    fi
    ;;
  chaos)
    [ -z "$EXTERNAL_ENDPOINT" ] || { echo "run.sh: chaos needs the project's own emulator (unset AWS_ENDPOINT_URL)" >&2; exit 2; }
    cargo build --workspace --bins
    start_chaos_stack() {
      start_provider --word-delay-ms "${KNOQ_PROVIDER_WORD_DELAY_MS:-20}"
      start_emulator --fault-injection --function-concurrency "${KNOQ_FUNCTION_CONCURRENCY:-16}"
      KNOQ_FUNCTION_CONCURRENCY=${KNOQ_FUNCTION_CONCURRENCY:-16} start_functions --ignore-changes
      wait_for_routes
      load_env
    }
    start_chaos_stack
    export KNOQ_API_URL="http://127.0.0.1:$API_PORT" KNOQ_PROVIDER_URL
    export KNOQ_ADMIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/knoq-admin"
    export KNOQ_ALLOWED_ORIGIN="$ORIGIN"
    if [ -z "${RUNS:-}" ]; then
      "$PY" infra/chaos/chaos.py ${SEED:+--seed "$SEED"} --sessions "${SESSIONS:-24}" \
        --clients "${CLIENTS:-24}" ${FAULT_RATES:+--fault-rates "$FAULT_RATES"} "${SELECTED_TESTS[@]}"
    else
      # RUNS consecutive seeds from SEED (default 1); one summary line each in
      # .local/chaos/series.txt; fails when any run failed. A fresh stack every
      # SEEDS_PER_STACK seeds (default 4): moto keeps every execution it ran, so one stack
      # grows by about 1.3 GB and slows down a little more with each seed of 60 sessions
      # (answer p50 1.0 s at the first, 4.8 s at the fifth, 2026-12-03), until a seed outlasts
      # its bounds for the emulator's sake, not the system's.
      mkdir -p .local/chaos; failed=0; first=${SEED:-1}; : > .local/chaos/series.txt
      for seed in $(seq "$first" $((first + RUNS - 1))); do
        if [ "$seed" != "$first" ] && [ $(((seed - first) % ${SEEDS_PER_STACK:-4})) = 0 ]; then
          echo "run.sh: a fresh stack for seed $seed"
          stop_services; PIDS=()
          start_chaos_stack
        fi
        if "$PY" infra/chaos/chaos.py --seed "$seed" --sessions "${SESSIONS:-24}" \
          --clients "${CLIENTS:-24}" ${FAULT_RATES:+--fault-rates "$FAULT_RATES"} \
          "${SELECTED_TESTS[@]}" > ".local/chaos/series-$seed.out" 2>&1; then result=PASS
        else result=FAIL; failed=1; fi
        line="seed=$seed sessions=${SESSIONS:-24} clients=${CLIENTS:-24} $result; $(grep -hE '^chaos: [0-9]+ requests' ".local/chaos/series-$seed.out" | cut -d';' -f1 | sed 's/^chaos: //'); $(grep -hE '^chaos: faults injected' ".local/chaos/series-$seed.out" | sed 's/^chaos: faults injected by the emulator //' | cut -d: -f1)"
        echo "$line" | tee -a .local/chaos/series.txt
        [ "$result" = PASS ] || grep -hE '^(chaos: FAIL|VIOLATED)' ".local/chaos/series-$seed.out"
      done
      exit $failed
    fi
    ;;
  bench)
    # Besides the in-process cancel benchmark: the cancel function as Lambda runs it (the host
    # release build under the Runtime API emulator of tests/benches/lambda.rs) and the size
    # of its arm64 deployment zip. The final block repeats every figure, one per line.
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    rustup target list --installed | grep -x aarch64-unknown-linux-gnu >/dev/null ||
      rustup target add aarch64-unknown-linux-gnu
    cargo build --release -p knoq-tests --bench cancel --bench lambda
    cargo build --release -p cancel
    cargo lambda build --release --arm64 --bin cancel --output-format zip
    start_emulator
    load_env
    cargo bench -p knoq-tests --bench cancel | tee .local/bench-cancel.out
    echo
    KNOQ_CANCEL_BIN="$TARGET_DIR/release/cancel" KNOQ_CANCEL_ZIP="$TARGET_DIR/lambda/cancel/bootstrap.zip" \
      KNOQ_FUNCTION_ENV_FILE="$ROOT/$ENV_FILE" \
      cargo bench -p knoq-tests --bench lambda | tee .local/bench-lambda.out
    echo
    echo "knoq bench summary"
    grep -hE '^[a-z_]+=' .local/bench-cancel.out .local/bench-lambda.out
    ;;
  bench-workflow)
    cargo build --workspace --bins
    cargo build --release -p knoq-tests --bench workflow
    start_provider --word-delay-ms "${KNOQ_PROVIDER_WORD_DELAY_MS:-200}"
    start_emulator
    start_functions --ignore-changes
    wait_for_routes
    load_env
    export KNOQ_API_URL="http://127.0.0.1:$API_PORT" KNOQ_PROVIDER_URL
    cargo bench -p knoq-tests --bench workflow
    ;;
esac
