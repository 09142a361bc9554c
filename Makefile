# Knoq managed-agents backend. `make dev` runs it locally, `make test` runs every test.
# Both install what they need: Python tools into .venv from infra/local/requirements.txt,
# cargo-nextest from crates.io when missing.

SHELL := bash
VENV := .venv
TOOLS := $(VENV)/.installed
DEV_ENV := .local/dev.env
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help dev test unit chat chaos bench bench-workflow token token-name lint fmt check-nextest build deploy-staging

## help: every target, with what it does (the `## target:` comments of this Makefile)
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); split($$0, part, ": "); printf "  make %-15s %s\n", part[1], substr($$0, length(part[1]) + 3); next } /^## / { sub(/^## /, ""); printf "  %-20s %s\n", "", $$0 }' $(MAKEFILE_LIST)

$(TOOLS): infra/local/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r infra/local/requirements.txt
	touch $@

## check-nextest: install cargo-nextest from crates.io when it is missing
check-nextest:
	@cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked

## dev: emulator + every function on http://127.0.0.1:9000 (foreground; Ctrl-C stops)
dev: $(TOOLS)
	infra/local/run.sh dev

## test: lint template and code, start the local stack, run unit and integration tests
test: $(TOOLS) check-nextest lint
	cfn-lint template.yaml
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 sam validate --lint
	$(VENV)/bin/python -m unittest discover -s infra/local
	$(VENV)/bin/python -m unittest discover -s infra/scale
	$(VENV)/bin/python -m unittest discover -s infra/chaos
	$(VENV)/bin/python -m unittest discover -s infra/chat
	infra/local/run.sh test

## unit: the fast loop: every library and unit test of the workspace, no emulator, no stack
unit: check-nextest
	cargo nextest run --workspace --lib --bins --no-fail-fast

## chaos: start the local stack with its fault schedule, then the randomized whole-system test and
## its history check (make chaos SEED=<n> SESSIONS=<n> CLIENTS=<n> [FAULT_RATES='name=rate,...'],
## names and defaults in infra/local/chaos.py); with RUNS=<n>, n consecutive seeds from SEED, a
## fresh stack every SEEDS_PER_STACK (4), a line each in .local/chaos/series.txt
chaos: $(TOOLS)
	SEED="$(SEED)" SESSIONS="$(SESSIONS)" CLIENTS="$(CLIENTS)" FAULT_RATES="$(FAULT_RATES)" RUNS="$(RUNS)" SEEDS_PER_STACK="$(SEEDS_PER_STACK)" infra/local/run.sh chaos

## build: every function, release, arm64 (provided.al2023), into .aws-sam/build (sam build)
# One cargo run first builds all the functions' binaries side by side (sam builds them one
# at a time); sam build then finds them up to date and copies each into .aws-sam/build.
build: $(TOOLS)
	rustup target add aarch64-unknown-linux-gnu
	cargo lambda build --release --arm64 $(addprefix --bin ,$(notdir $(wildcard functions/*)))
	SAM_CLI_TELEMETRY=0 sam build --beta-features --build-in-source

## deploy-staging: build, then deploy the staging stack of samconfig.toml (needs AWS credentials
## and ANTHROPIC_API_KEY_SECRET_ARN, the ARN of the Secrets Manager secret holding the API key)
deploy-staging:
	@if [ -z "$(ANTHROPIC_API_KEY_SECRET_ARN)" ]; then echo "usage: make deploy-staging ANTHROPIC_API_KEY_SECRET_ARN=arn:aws:secretsmanager:..." >&2; exit 2; fi
	$(MAKE) build
	SAM_CLI_TELEMETRY=0 sam deploy --config-env staging --parameter-overrides \
	  AllowedOrigin=https://staging.knoq.one AnthropicApiKeySecretArn=$(ANTHROPIC_API_KEY_SECRET_ARN)

## bench: cancel latency against a bare UpdateItem on the same emulator
bench: $(TOOLS)
	infra/local/run.sh bench

## bench-workflow: cancel -> status_terminated latency of real turns, against the poll interval
bench-workflow: $(TOOLS)
	infra/local/run.sh bench-workflow

## chat: talk to an agent session from the terminal: the answer streams in, a tool call is one
## line, Ctrl-C during a turn cancels it (and says how long that took), Ctrl-C at the prompt
## quits. Local (with make dev running): make chat USER_ID=<id> ORG_ID=<id>; a deployed API:
## make chat API_URL=https://... COOKIE=<token> [ORIGIN=https://knoq.one] [COOKIE_NAME=...]
chat:
	@if [ -n "$(API_URL)" ]; then \
	  if [ -z "$(COOKIE)" ]; then echo "usage: make chat API_URL=<url> COOKIE=<token> [ORIGIN=<origin>] [COOKIE_NAME=<name>]" >&2; exit 2; fi; \
	  KNOQ_COOKIE="$(COOKIE)" python3 infra/chat/chat.py --api-url "$(API_URL)" \
	    $(if $(ORIGIN),--origin "$(ORIGIN)") $(if $(COOKIE_NAME),--cookie-name "$(COOKIE_NAME)"); \
	else \
	  if [ -z "$(USER_ID)" ] || [ -z "$(ORG_ID)" ]; then echo "usage: make chat USER_ID=<id> ORG_ID=<id> (local), or make chat API_URL=<url> COOKIE=<token>" >&2; exit 2; fi; \
	  if [ ! -s $(DEV_ENV) ]; then echo "make chat: start the local stack first (make dev)" >&2; exit 1; fi; \
	  set -a; . ./$(DEV_ENV); set +a; \
	  KNOQ_COOKIE=$$("$${CARGO_TARGET_DIR:-target}/debug/knoq-admin" issue-token --user "$(USER_ID)" --org "$(ORG_ID)") || exit 1; \
	  export KNOQ_COOKIE; python3 infra/chat/chat.py --api-url "http://127.0.0.1:$${KNOQ_API_PORT:-9000}" \
	    --origin "$$ALLOWED_ORIGIN" --cookie-name "$$SESSION_COOKIE_NAME"; \
	fi

## token: print a session cookie value for USER_ID in ORG_ID (needs `make dev` running)
token:
	@if [ -z "$(USER_ID)" ] || [ -z "$(ORG_ID)" ]; then echo "usage: make token USER_ID=<id> ORG_ID=<id>" >&2; exit 2; fi
	@if [ ! -s $(DEV_ENV) ]; then echo "make token: start the local stack first (make dev)" >&2; exit 1; fi
	@set -a; . ./$(DEV_ENV); set +a; cargo run -q -p knoq-admin -- issue-token --user "$(USER_ID)" --org "$(ORG_ID)"

## token-name: print the session cookie's name
token-name:
	@if [ -s $(DEV_ENV) ]; then set -a; . ./$(DEV_ENV); set +a; fi; cargo run -q -p knoq-admin -- cookie-name

## lint: formatting and clippy with warnings as errors
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## fmt: format the workspace
fmt:
	cargo fmt --all
