# sourceflow — every command builds and uses the project's own .venv with pinned versions.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The deployables: the services, as infra/resources.py SERVICES names them, and the console.
DEPLOYABLES := validation download unlocking scheduler tasks console
# Cloud deploys (docs/deploy.md): make deploy STAGE=dev ARTIFACT_BUCKET=my-bucket PARAMS="K=V ..."
STAGE ?=
ARTIFACT_BUCKET ?=
PARAMS ?=
# PARAMS reach every stack; PARAMS_<part>="K=V ..." that part's alone (PARAMS_download=
# "MemorySize=3008"); PARAMS_FILE, or infra/params/$(STAGE).json if it exists, is read first.
DEPLOY_PARTS := core $(DEPLOYABLES) workflow
PARAMS_FILE ?=
DEPLOY_ARGS = --stage "$(STAGE)" --artifact-bucket "$(ARTIFACT_BUCKET)" $(foreach p,$(PARAMS),--param "$(p)") \
	$(foreach part,$(DEPLOY_PARTS),$(foreach p,$(PARAMS_$(part)),--part-param "$(part):$(p)")) \
	$(if $(PARAMS_FILE),--params-file "$(PARAMS_FILE)")

.PHONY: install browser demo up console migrate test test-fast test-unit test-contract test-integration test-e2e lint typecheck bench clean deploy \
	$(DEPLOYABLES:%=build-%) $(DEPLOYABLES:%=deploy-%) deploy-core deploy-workflow

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The console's browser tests (tests/e2e/test_console.py) drive Debian's chromium through
# Playwright's driver (pinned in requirements.lock): nothing is downloaded at test time.
CHROMIUM := /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: install
	$(BIN)/sourceflow demo

up: install
	$(BIN)/sourceflow up

console: install
	$(BIN)/sourceflow console

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint infra/templates/*.yaml
	$(BIN)/xenon --max-absolute C shared services infra ops console local

typecheck: install
	$(BIN)/mypy shared services infra ops console local tests bench

# Every tier. The tiers with a database keep their temporary files (the embedded PostgreSQL's
# data among them) here: under the shared /tmp/pytest-of-<user>, another pytest run on the
# machine makes that folder private again and the running PostgreSQL loses its data directory.
# Three workers, a test file at a time each (an e2e worker starts an embedded stack of its own):
# the e2e tests spend most of their time waiting on their stack, so three share the two cores.
# Measured on 2 cores with this round's workflow, IAM and redrive tiers: the suite took 859 s on
# two workers and 607 s on three.
TEST_WORKERS ?= 3
test: lint typecheck browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --basetemp=$(CURDIR)/.pytest-tmp

# The tiers that need no stack and no database (STYLE.md habit 12): lint, unit and contract,
# in under a minute.
test-fast: lint
	$(BIN)/pytest -q tests/unit tests/contract

test-unit: install
	$(BIN)/pytest -q tests/unit

test-contract: install
	$(BIN)/pytest -q tests/contract

test-integration: install
	$(BIN)/pytest -q --basetemp=$(CURDIR)/.pytest-tmp tests/integration

test-e2e: install browser
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --basetemp=$(CURDIR)/.pytest-tmp tests/e2e

# Speed, memory and cost on the embedded stack (docs/performance.md); writes
# .sourceflow/bench.json. Not part of `make test`: no timed assertions in tests.
bench: install
	$(BIN)/python -m bench

# build/<service>/ and build/<service>.zip: the service's Lambda artifact (needs the package
# index, not AWS).
$(DEPLOYABLES:%=build-%): build-%: install
	$(BIN)/python -m infra.build $*

# One stack; a service's deploy builds its artifact first. Needs the AWS CLI and credentials.
deploy-core deploy-workflow $(DEPLOYABLES:%=deploy-%): deploy-%: install
	$(BIN)/python -m infra.deploy $* $(DEPLOY_ARGS)

# Point a part's live alias back at the version before the one it serves (infra/rollback.py,
# docs/deploy.md "Rolling back"). Needs the AWS CLI and credentials.
ROLLBACK_PARTS := $(DEPLOYABLES) workflow
.PHONY: $(ROLLBACK_PARTS:%=rollback-%)
$(ROLLBACK_PARTS:%=rollback-%): rollback-%: install
	$(BIN)/python -m infra.rollback $* --stage "$(STAGE)"

# The stage's database: migrations, every role's grants, each service's login (infra/
# migrate_stage.py, as the core's database secret's administrator). `make deploy` runs it after
# the core stack. The Re-specs role may update the tables RespecsAllowedTables names (in
# PARAMS or PARAMS_unlocking); not given, those it may update now.
RESPECS_ALLOWED_TABLES = $(patsubst RespecsAllowedTables=%,%,$(lastword $(filter RespecsAllowedTables=%,$(PARAMS) $(PARAMS_unlocking))))
migrate: install
	$(BIN)/python -m infra.migrate_stage --stage "$(STAGE)" \
		$(if $(RESPECS_ALLOWED_TABLES),--respecs-tables "$(RESPECS_ALLOWED_TABLES)")

# Every stack, in the order they depend on each other: core, the database's migrations, the
# services, the workflow, the console.
deploy: install
	$(BIN)/python -m infra.deploy all $(DEPLOY_ARGS)

clean:
	rm -rf $(VENV) .sourceflow build
