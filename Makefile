# Thin wrapper over CMake. The real build is CMakeLists.txt.
#   make deps   install missing Debian packages (as root) or print the apt command
#   make build  Release-with-debug-info build in build/
#   make run    backend_app + redis-server (if installed) + gateway, Ctrl-C stops all
#   make test   every test (unit + integration) in the normal and ASan/UBSan builds
#   make test-container  build the image with podman and run it (scripts/container-test.sh)
#   make tsan   the tests under ThreadSanitizer (build-tsan/)
#   make fuzz   libFuzzer targets (clang) for a bounded time each (build-fuzz/)
#   make bench  the benchmark of test/bench/ (gateway vs nginx vs HAProxy vs direct)

BUILD_DIR ?= build
ASAN_DIR  ?= build-asan
TSAN_DIR  ?= build-tsan
FUZZ_DIR  ?= build-fuzz
FUZZ_SECONDS ?= $(or $(GW_FUZZ_SECONDS),60)
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?= --output-on-failure

# Packages the build and the tests need (Debian 12 names).
DEPS = build-essential cmake pkg-config libhiredis-dev node-llhttp libjansson-dev libyaml-dev \
       libcmocka-dev libssl-dev openssl redis-server redis-tools redis-sentinel curl prometheus \
       faketime \
       clang libclang-rt-14-dev

.PHONY: all deps build run test test-release test-asan test-fuzz test-container tsan fuzz bench \
	clean env-example

all: build

deps:
	@./scripts/deps.sh $(DEPS)

$(BUILD_DIR)/Makefile: CMakeLists.txt
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

run: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target gateway backend_app -- --no-print-directory
	@./scripts/run.sh $(BUILD_DIR)

test: build test-release test-asan test-fuzz

test-release:
	@echo "== tests: release build ($(BUILD_DIR)) =="
	@cd $(BUILD_DIR) && ctest $(CTEST_ARGS) -j 2

test-asan: deps
	@echo "== tests: ASan+UBSan build ($(ASAN_DIR)) =="
	@cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DGW_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	@cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest $(CTEST_ARGS) -j 2

# Fuzzing runs in make test when clang is installed (make deps installs it).
test-fuzz: deps
	@if command -v clang >/dev/null 2>&1; then \
		echo "== tests: libFuzzer targets, $(FUZZ_SECONDS) s each ($(FUZZ_DIR)) =="; \
		cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DGW_FUZZ=ON \
			-DGW_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null && \
		cmake --build $(FUZZ_DIR) -j $(JOBS) && \
		cd $(FUZZ_DIR) && ctest $(CTEST_ARGS) -j 2 -L fuzz; \
	else echo "== fuzz: clang not installed, skipped =="; fi

fuzz:
	@$(MAKE) test-fuzz

# The Dockerfile built into an image (podman, no daemon, no registry) and run
# beside backend_app; skips with the reason where podman cannot run.
test-container:
	@bash scripts/container-test.sh $(BUILD_DIR)

bench: build
	@bash test/bench/run.sh $(BUILD_DIR)
	@bash test/bench/shaping.sh $(BUILD_DIR)
	@bash test/bench/algorithms.sh $(BUILD_DIR)

tsan: deps
	@cmake -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DGW_TSAN=ON >/dev/null
	@cmake --build $(TSAN_DIR) -j $(JOBS)
	@cd $(TSAN_DIR) && TSAN_OPTIONS=halt_on_error=1 ctest $(CTEST_ARGS)

env-example: build
	@$(BUILD_DIR)/gateway --print-env-example > gateway.env.example

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)
