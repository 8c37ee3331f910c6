# The two commands of the README's quick start, and a few helpers.
.PHONY: test bench build

# The whole test suite (what CI runs): doc tests, then every unit and integration test.
test:
	@bash .ci/bootstrap
	cargo build --workspace --all-targets
	cargo test --workspace --doc
	cargo nextest run --workspace --no-fail-fast

bench:
	@bash .ci/bootstrap
	cargo bench -p trellis-tests --bench invoke

build:
	cargo build --workspace
