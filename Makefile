# Berth: build, provision test tools, test.
#
#   make test    install what the tests need (cached), then run every test
#   make tools   only provision the tools (.tools/bin, cache in ~/.cache/berth)
#   make lint    formatting (rustfmt's defaults) and clippy, warnings as errors;
#                the dependency tree's licenses, duplicates and sources (deny.toml);
#                shellcheck over the shell scripts
#   make release the release binaries of berth-registry and berth-operator
#   make images  their images (and the test node's) as OCI layouts in target/images
#   make crds    regenerate crds/registry.yaml (and the chart's copy) from the operator's types
#   make bench   berth-registry side by side with CNCF Distribution (bench/README.md)

.PHONY: test tools lint build release images crds bench

tools:
	scripts/tools.sh

# Every shell script of the repository, for shellcheck.
SHELL_SCRIPTS = .ci/run bench/run.sh scripts/*.sh scripts/images/*.sh

# cargo-deny's `advisories` check is left out: its database is fetched from
# GitHub, which the machines this runs on cannot reach (deny.toml).
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	.tools/bin/cargo-deny check licenses bans sources
	shellcheck -x -P scripts $(SHELL_SCRIPTS)

build:
	cargo build --workspace

# The release binaries, built by the README's own commands (one package at a
# time, so the features match those of `cargo run --release -p ...`).
release:
	cargo build --release -p berth-registry
	cargo build --release -p berth-operator

# Berth's images as OCI layouts in target/images, without a container engine
# (scripts/images/build.sh), and the test node's pause and busybox images.
images: release
	scripts/images/build.sh

crds:
	cargo run -q -p berth-operator --bin crdgen > crds/registry.yaml
	cp crds/registry.yaml charts/berth/crds/registry.yaml

test: tools lint images
	cargo test --workspace --no-fail-fast -- --show-output

bench:
	bench/run.sh
