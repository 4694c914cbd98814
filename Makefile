# Berth: build, provision test tools, test.
#
#   make test    install what the tests need (cached), then run every test
#   make tools   only provision the tools (.tools/bin, cache in ~/.cache/berth)

.PHONY: test tools build

tools:
	scripts/tools.sh

build:
	cargo build --workspace

test: tools
	cargo test --workspace -- --show-output
