# The two commands of the README's quick start, and a few helpers.
.PHONY: up down test bench build fuzz

# `make up` ports (override: `make up HTTP_PORT=8080`, or in the environment); WASH_HOME passes through.
NATS_PORT ?= 4222
HTTP_PORT ?= 8000
WASH := $(or $(CARGO_TARGET_DIR),target)/debug/wash

# A local lattice serving the hello example at http://127.0.0.1:$(HTTP_PORT)/. The debug build is
# the one `make test` makes too. The examples build with exactly the flags (and the environment)
# tests/build.rs uses, so after either one the other is a no-op.
up:
	@bash .ci/bootstrap
	cargo build -p wash
	env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u RUSTC_WORKSPACE_WRAPPER \
	  cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml --target-dir target/wasm
	@NATS_PORT=$(NATS_PORT) HTTP_PORT=$(HTTP_PORT) WASH=$(WASH) bash .ci/up

# Stops what `make up` started: its host and its nats-server (`wash down`).
down:
	@if [ -x $(WASH) ]; then $(WASH) down; else echo "Nothing to stop: $(WASH) is not built"; fi

# The whole test suite (what CI runs): the formatting check, the build, clippy with warnings as
# errors, doc tests, then every unit and integration test.
test:
	@bash .ci/bootstrap
	cargo fmt --all --check
	cargo build --workspace --all-targets
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --doc
	cargo nextest run --workspace --no-fail-fast

# Benchmarks that print figures: invocation overhead vs bare wasmtime; HTTP paths side by side;
# blobstore throughput and host memory per backend; outgoing HTTP (component → http-client →
# server) vs a plain hyper client; WASI 0.3 hello vs 0.2 hello.
bench:
	@bash .ci/bootstrap
	cargo bench -p trellis-tests --bench invoke --bench http --bench keyvalue --bench artifacts --bench control_plane --bench blobstore --bench http_client --bench wasi_p3

build:
	cargo build --workspace

# Fuzzes the wire decoders (lattice/fuzz: control JSON and events, claims, the data-plane
# envelope and WIT values, app manifests), each target for FUZZ_SECONDS, one after another
# (with TARGET.dict as its dictionary when there is one). Needs a nightly
# toolchain and cargo-fuzz (installed if missing). The stack is capped at a tokio worker's
# 2 MiB, where the host decodes, so unbounded recursion shows up as a crash.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= ctl_json claims data_plane manifest
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd lattice/fuzz && ulimit -s 2048 && for t in $(FUZZ_TARGETS); do \
	  dict=; [ -f $$t.dict ] && dict=-dict=$$t.dict; \
	  nice -n 19 cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) $$dict || exit 1; done
