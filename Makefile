# synapsex build. `make` builds build/synapsex; `make check` runs the unit tests;
# `make asan` builds everything with AddressSanitizer + UBSan into build-asan/;
# `make fuzz` builds the libFuzzer targets into build-fuzz/.
#
# Sources are found by wildcard, so a new file in src/<module>/ needs no edit here.
# The engine (src/engine/) is its own library: it links against nothing above it.
# Files named *_avx2.c, *_avx512.c and *_amx.c get the matching -m flags; the
# code chooses between them at run time.

CC       ?= cc
BUILD    ?= build
PKGS     := libmicrohttpd jansson sqlite3 openssl libcurl
OPT      ?= -O2
SAN      ?=
CFLAGS   := -std=c17 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -Isrc -pthread \
            -fno-strict-aliasing $(SAN) $(shell pkg-config --cflags $(PKGS))
LDLIBS   := $(shell pkg-config --libs $(PKGS)) -lm -pthread
# The server allocates with mimalloc (Debian's libmimalloc-dev): a relayed
# request makes some hundred small allocations across synapsex, jansson,
# libcurl and libmicrohttpd, which cost 16 % of its CPU in glibc's malloc
# (consolidations set off by the larger ones included); with mimalloc 55
# against 68 us of CPU a request at concurrency 64 (bench/gateway). jemalloc
# did as well but hangs under libfaketime, which the tests use. A sanitizer
# build keeps the C library's, which the sanitizer replaces.
MALLOC   ?= $(if $(SAN),,-lmimalloc)
AVX2     := -mavx2 -mfma -mf16c
AVX512   := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c
AMX      := -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vl -mavx512dq \
            -mavx512vnni -mfma -mf16c

ENGINE_SRC  := $(wildcard src/engine/*.c)
GATEWAY_SRC := $(filter-out src/main.c $(ENGINE_SRC),$(wildcard src/*/*.c))
ENGINE_OBJ  := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o)
GATEWAY_OBJ := $(GATEWAY_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all check unit asan fuzz clean
all: $(BUILD)/synapsex $(UNIT_BIN)

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_amx.o: %_amx.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AMX) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libsxengine.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libsxgateway.a: $(GATEWAY_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/synapsex: $(BUILD)/obj/src/main.o $(BUILD)/libsxgateway.a $(BUILD)/libsxengine.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MALLOC)

# Engine tests (test_engine_*.c) link the engine alone; the rest link everything.
$(BUILD)/tests/test_engine_%: tests/unit/test_engine_%.c $(BUILD)/libsxengine.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka -lm -pthread

$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libsxgateway.a $(BUILD)/libsxengine.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka $(LDLIBS)

# Runs every unit test; each prints cmocka's summary. Fixture tests find
# ../shared/fixtures through SYNAPSEX_FIXTURES (default: ../shared/fixtures).
check unit: all
	@failed=; for t in $(UNIT_BIN); do echo "== $$t"; $$t || failed="$$failed $$t"; done; \
	if [ -n "$$failed" ]; then echo "unit tests failed:$$failed"; exit 1; fi

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

# libFuzzer targets: fuzz/fuzz_<name>.c, each built with clang against all sources.
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build-fuzz/%)
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang OPT=-O1 \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" \
	    build-fuzz/libsxgateway.a build-fuzz/libsxengine.a $(FUZZ_BIN)

build-fuzz/fuzz_%: fuzz/fuzz_%.c build-fuzz/libsxgateway.a build-fuzz/libsxengine.a
	clang $(CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
