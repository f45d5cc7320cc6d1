# wasmhost — `make run` serves the example services, `make test` runs every test.
# Both install what a fresh machine lacks (the wasm32-wasip2 Rust target).

CARGO        ?= cargo
LISTEN       ?= 127.0.0.1:8080
STATE        ?= .wasmhost
INSTALL_DIR  ?= $(HOME)/.cargo/bin
PLUGIN_DIR   := plugins
GUEST_TARGET := $(CURDIR)/target/plugins
GUEST_OUT    := $(GUEST_TARGET)/wasm32-wasip2/release
TEST_CACHE   := $(CURDIR)/target/test-cache
SERVICES     := user order
WIT_FILES    := $(wildcard wit/*.wit wit/deps/*/*.wit)
# Services in other languages: their tools are pinned and installed into the
# repository (.tools/py, plugins/catalog-js/node_modules), never globally.
COMPONENTIZE_PY_VERSION := 0.25.0
PY_TOOLS        := $(CURDIR)/.tools/py
COMPONENTIZE_PY := $(PY_TOOLS)/bin/componentize-py
POLY_OUT        := $(GUEST_TARGET)/polyglot
JS_DEPS         := plugins/catalog-js/node_modules/.package-lock.json
INVENTORY_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' plugins/inventory/pyproject.toml)
NOTIFY_VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' plugins/notify/pyproject.toml)
CATALOG_VERSION   := $(shell sed -n 's/^  "version": "\(.*\)",/\1/p' plugins/catalog-js/package.json)
crate_version = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(PLUGIN_DIR)/$(1)/Cargo.toml | head -n1)

.PHONY: help run install test ui-deps cluster-deps deploy-check plugins polyglot host setup lint fmt component-check fuzz bench bench-quick bench-guests clean

help:
	@echo "make run              build the example plugins and the host, serve on http://$(LISTEN)"
	@echo "make test             build everything and run every test"
	@echo "make install          put wasmhost (and componentize-py, for Python services) in $(INSTALL_DIR)"
	@echo "make plugins          build the example services into $(PLUGIN_DIR)/NAME@VERSION.wasm"
	@echo "make lint             rustfmt and clippy (host and guests), warnings are errors; wasmtime's component-model-async stays off"
	@echo "make component-check  build the example plugins with cargo-component too"
	@echo "make deploy-check     validate the Kubernetes manifests in deploy/k8s against the API's schemas"
	@echo "make fuzz             a long property-test run (CI runs a short one in make test)"
	@echo "make bench            benchmarks: req/s and latency vs native axum (and wasmtime serve if installed),"
	@echo "                      per-request cost, start-up, hot swap, memory (see bench/RESULTS.md)"
	@echo "make bench-quick      check in seconds that every part of the benchmark harness runs"

## The Kubernetes manifests in deploy/k8s, checked against the API's own
## schemas (kubernetes-validate, pinned, offline) in a virtualenv of its own.
K8S_TOOLS := $(CURDIR)/.tools/k8s
KUBERNETES_VALIDATE_VERSION := 1.37.0
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
$(K8S_TOOLS)/bin/kubernetes-validate:
	@echo "==> installing kubernetes-validate $(KUBERNETES_VALIDATE_VERSION) into .tools/k8s"
	python3 -m venv $(K8S_TOOLS)
	$(K8S_TOOLS)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)

deploy-check: $(K8S_TOOLS)/bin/kubernetes-validate
	$(K8S_TOOLS)/bin/kubernetes-validate --strict $(K8S_MANIFESTS)

## Install what a fresh machine lacks.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || { \
		echo "==> installing the wasm32-wasip2 Rust target"; rustup target add wasm32-wasip2; }

## componentize-py, pinned, in a virtualenv of the repository's own.
$(COMPONENTIZE_PY):
	@command -v python3 >/dev/null || { echo "error: python3 is missing; install Python 3.10+ with venv (e.g. apt install python3 python3-venv)" >&2; exit 1; }
	@echo "==> installing componentize-py $(COMPONENTIZE_PY_VERSION) into .tools/py"
	python3 -m venv $(PY_TOOLS)
	$(PY_TOOLS)/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION)

## componentize-js, pinned by package-lock.json, in plugins/catalog-js/node_modules.
$(JS_DEPS): plugins/catalog-js/package.json plugins/catalog-js/package-lock.json
	@command -v npm >/dev/null || { echo "error: node and npm are missing; install Node.js 18+ (e.g. apt install nodejs npm)" >&2; exit 1; }
	@echo "==> installing componentize-js (npm ci in plugins/catalog-js)"
	cd plugins/catalog-js && npm ci --silent --no-audit --no-fund

$(POLY_OUT)/inventory.wasm: plugins/inventory/app.py $(WIT_FILES) wit/v0.2/plugin.wit | $(COMPONENTIZE_PY)
	@echo "==> building inventory (Python, componentize-py)"
	@mkdir -p $(POLY_OUT)
	cd plugins/inventory && $(COMPONENTIZE_PY) -q -d ../../wit/v0.2 -w subscriber-service componentize app -o $@

$(POLY_OUT)/notify.wasm: plugins/notify/app.py $(WIT_FILES) wit/v0.2/plugin.wit | $(COMPONENTIZE_PY)
	@echo "==> building notify (Python, componentize-py, contract 0.2.0)"
	@mkdir -p $(POLY_OUT)
	cd plugins/notify && $(COMPONENTIZE_PY) -q -d ../../wit/v0.2 -w subscriber-service componentize app -o $@

$(POLY_OUT)/catalog.wasm: plugins/catalog-js/catalog.js plugins/catalog-js/build.mjs $(WIT_FILES) $(JS_DEPS)
	@echo "==> building catalog (JavaScript, componentize-js)"
	@mkdir -p $(POLY_OUT)
	node plugins/catalog-js/build.mjs $@

## The services in other languages.
polyglot: $(POLY_OUT)/inventory.wasm $(POLY_OUT)/catalog.wasm $(POLY_OUT)/notify.wasm
	@cp $(POLY_OUT)/inventory.wasm $(PLUGIN_DIR)/.inventory.wasm.tmp && mv $(PLUGIN_DIR)/.inventory.wasm.tmp $(PLUGIN_DIR)/inventory@$(INVENTORY_VERSION).wasm
	@cp $(POLY_OUT)/notify.wasm $(PLUGIN_DIR)/.notify.wasm.tmp && mv $(PLUGIN_DIR)/.notify.wasm.tmp $(PLUGIN_DIR)/notify@$(NOTIFY_VERSION).wasm
	@cp $(POLY_OUT)/catalog.wasm $(PLUGIN_DIR)/.catalog.wasm.tmp && mv $(PLUGIN_DIR)/.catalog.wasm.tmp $(PLUGIN_DIR)/catalog@$(CATALOG_VERSION).wasm
	@echo "    $(PLUGIN_DIR)/inventory@$(INVENTORY_VERSION).wasm and notify@$(NOTIFY_VERSION).wasm (Python), $(PLUGIN_DIR)/catalog@$(CATALOG_VERSION).wasm (JavaScript)"

## Build the example services and drop them into plugins/ (copy, then rename: never half-written).
plugins: setup polyglot
	@echo "==> building the example services ($(SERVICES)) for wasm32-wasip2"
	cd $(PLUGIN_DIR) && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) build --release --target wasm32-wasip2 $(addprefix -p ,$(SERVICES))
	@for s in $(SERVICES); do \
		v=$$(sed -n 's/^version = "\(.*\)"/\1/p' $(PLUGIN_DIR)/$$s/Cargo.toml | head -n1); \
		cp $(GUEST_OUT)/$$s.wasm $(PLUGIN_DIR)/.$$s.wasm.tmp && mv $(PLUGIN_DIR)/.$$s.wasm.tmp $(PLUGIN_DIR)/$$s@$$v.wasm; \
		echo "    $(PLUGIN_DIR)/$$s@$$v.wasm ($$(wc -c < $(PLUGIN_DIR)/$$s@$$v.wasm) bytes)"; \
	done
	@echo "==> building user 1.1.0 (feature v2) for the gray-release example"
	cd $(PLUGIN_DIR) && CARGO_TARGET_DIR=$(GUEST_TARGET)/v2 $(CARGO) build --release --target wasm32-wasip2 -p user --features v2
	@cp $(GUEST_TARGET)/v2/wasm32-wasip2/release/user.wasm examples/user@1.1.0.wasm
	@echo "    examples/user@1.1.0.wasm (not live: copy it into $(PLUGIN_DIR)/ to start a gray release)"
	@echo "==> building catalog 2.0.0 (Rust) for the mixed-language release example"
	cd $(PLUGIN_DIR) && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) build --release --target wasm32-wasip2 -p catalog
	@cp $(GUEST_OUT)/catalog.wasm examples/catalog@$(call crate_version,catalog).wasm
	@echo "    examples/catalog@$(call crate_version,catalog).wasm (the JavaScript catalog's API in Rust: copy it in beside catalog@1.0.0)"
	@echo "==> building the standard wasi:http example (examples/http-hello)"
	cd examples/http-hello && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) build --release --target wasm32-wasip2
	@cp $(GUEST_OUT)/http_hello.wasm examples/hello@1.0.0.wasm
	@echo "    examples/hello@1.0.0.wasm (a wasi:http/proxy component: copy it into $(PLUGIN_DIR)/ to serve it at /hello)"

host:
	@echo "==> building wasmhost (release; the first build compiles wasmtime and takes several minutes)"
	$(CARGO) build --release -p wasmhost

run: plugins host
	@echo "==> serving the example services on http://$(LISTEN) (Ctrl-C stops)"
	@echo "    try:      curl http://$(LISTEN)/users/1; curl http://$(LISTEN)/products"
	@echo "    the CLI:  ./target/release/wasmhost status   (make install puts wasmhost on PATH)"
	@echo "    admin:    http://127.0.0.1:9090, its token in $(STATE)/admin-token (the CLI reads it there)"
	@echo "    dashboard: http://127.0.0.1:9090/ui (log in with that token)"
	@echo "    your own: wasmhost new hello --lang rust|python|js, then wasmhost dev (README, \"Write a service\")"
	./target/release/wasmhost serve --plugins $(PLUGIN_DIR) --listen $(LISTEN) --state $(STATE)

## Put wasmhost on PATH (in $(INSTALL_DIR)), and componentize-py beside it for
## `wasmhost build` of Python services (a link into .tools/py).
install: host $(COMPONENTIZE_PY)
	@mkdir -p $(INSTALL_DIR)
	install -m 755 target/release/wasmhost $(INSTALL_DIR)/wasmhost
	ln -sf $(COMPONENTIZE_PY) $(INSTALL_DIR)/componentize-py
	@echo "    $(INSTALL_DIR)/wasmhost and $(INSTALL_DIR)/componentize-py ($(INSTALL_DIR) must be on PATH: rustup puts it there)"

## The dashboard's browser test: playwright-core (pinned by its lock file)
## drives Debian's Chromium. Without npm or chromium, the test says it skipped.
UI_DEPS := host/tests/ui/node_modules/.package-lock.json
$(UI_DEPS): host/tests/ui/package.json host/tests/ui/package-lock.json
	@echo "==> installing playwright-core for the browser test (npm ci in host/tests/ui)"
	cd host/tests/ui && npm ci --silent --no-audit --no-fund

ui-deps:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(UI_DEPS); \
	else echo "    npm is missing: the browser test will say it skipped"; fi
	@test -x "$${WASMHOST_CHROMIUM:-/usr/bin/chromium}" || \
		echo "    chromium is missing (apt-get install -y chromium): the browser test will say it skipped"

## The cluster tests start their own redis-server, nats-server and
## docker-registry (Debian's packages); the benchmark also haproxy. Without them the tests say they skipped.
cluster-deps:
	@command -v redis-server >/dev/null || \
		echo "    redis-server is missing (apt-get install -y redis-server): the cluster tests (tests/cluster.rs) skip, each saying why"
	@command -v haproxy >/dev/null || \
		echo "    haproxy is missing (apt-get install -y haproxy): make bench skips the replicas figure"
	@command -v nats-server >/dev/null || \
		echo "    nats-server is missing (apt-get install -y nats-server): the NATS messaging tests (tests/cluster_messaging.rs) skip, each saying why"
	@command -v docker-registry >/dev/null || \
		echo "    docker-registry is missing (apt-get install -y docker-registry): the OCI registry test (tests/oci.rs) skips, saying why"

test: plugins ui-deps cluster-deps
	@echo "==> running every test (the first build compiles wasmtime and takes several minutes)"
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all
	cd $(PLUGIN_DIR) && $(CARGO) fmt --all
	cd examples/http-hello && $(CARGO) fmt

lint: setup
	bash .ci/no-async-abi.sh
	$(CARGO) fmt --all -- --check
	cd $(PLUGIN_DIR) && $(CARGO) fmt --all -- --check
	cd examples/http-hello && $(CARGO) fmt -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd $(PLUGIN_DIR) && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) clippy --workspace --target wasm32-wasip2 -- -D warnings
	cd examples/http-hello && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) clippy --release --target wasm32-wasip2 -- -D warnings

## The workflow plugin authors know: cargo-component must build the examples too.
component-check: setup
	@command -v cargo-component >/dev/null || { \
		echo "==> installing cargo-component (about 9 minutes)"; $(CARGO) install cargo-component --locked; }
	cd $(PLUGIN_DIR) && for s in $(SERVICES); do \
		(cd $$s && CARGO_TARGET_DIR=$(GUEST_TARGET)/component $(CARGO) component build --release) || exit 1; \
	done
	@echo "==> the Rust template of \`wasmhost new\`, built with cargo component"
	$(CARGO) build -p wasmhost
	rm -rf $(GUEST_TARGET)/template-check
	./target/debug/wasmhost new hello --lang rust --plugins $(GUEST_TARGET)/template-check
	cd $(GUEST_TARGET)/template-check/hello && CARGO_TARGET_DIR=$(GUEST_TARGET)/component $(CARGO) component build --release
	@test -s $(GUEST_TARGET)/component/wasm32-wasip1/release/hello.wasm && echo "    $(GUEST_TARGET)/component/wasm32-wasip1/release/hello.wasm"

## What the benchmarks need beyond the example services: the fixtures, and the
## user service built without optimization (~500 KB of code, for the swap figure).
bench-guests: plugins
	cd $(PLUGIN_DIR) && CARGO_TARGET_DIR=$(GUEST_TARGET) $(CARGO) build --release --target wasm32-wasip2 -p probe -p hostile -p faulty -p messenger
	cd $(PLUGIN_DIR) && CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR=$(GUEST_TARGET)/bench $(CARGO) build --target wasm32-wasip2 -p user

## Benchmarks (release build): throughput against native axum (and
## `wasmtime serve` when installed), the per-request micro-benchmark, and the
## start-up, swap and memory figures. See bench/README.md.
bench: bench-guests host
	$(CARGO) build --release -p wasmhost-bench
	bench/run.sh full
	bench/messages.sh full
	bench/cluster.sh full
	bench/instructions.sh full
	$(CARGO) bench -p wasmhost --bench request
	bench/figures.py

## Seconds, not minutes: checks that every part of the harness still runs
## (debug build, shortest runs; the figures it prints mean nothing).
## `--all-targets` builds the binaries with the features the tests unify
## (tokio's test-util), so after `make test` nothing is compiled a second time.
bench-quick: bench-guests
	$(CARGO) build --workspace --all-targets
	BIN_DIR=target/debug CACHE_DIR=$(TEST_CACHE) bench/run.sh quick
	BIN_DIR=target/debug CACHE_DIR=$(TEST_CACHE) bench/messages.sh quick
	BIN_DIR=target/debug CACHE_DIR=$(TEST_CACHE) bench/cluster.sh quick
	BIN_DIR=target/debug CACHE_DIR=$(TEST_CACHE) bench/instructions.sh quick
	$(CARGO) test -p wasmhost --bench request
	BIN_DIR=target/debug bench/figures.py --quick

## A longer run of the property tests than the one `make test` does.
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test -p wasmhost --lib fuzz

clean:
	$(CARGO) clean
	rm -f $(PLUGIN_DIR)/*.wasm
	rm -rf .tools plugins/catalog-js/node_modules
