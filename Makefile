# banger — see README.md. Every target does its own set-up.
.PHONY: build test bench run release docs fmt

build:
	scripts/build.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

run:
	scripts/run.sh

release:
	scripts/release.sh

docs:
	go run ./tools/clidoc > docs/cli.md

fmt:
	gofmt -w $$(git ls-files '*.go')
