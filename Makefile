# Makefile — builds the fleet, runs it, tests it. Plain GNU make.
#
#   make deps    install the Debian packages the build, tests and fleet need
#   make         build every program into build/bin
#   make run     start the local fleet in the foreground (Ctrl-C stops it)
#   make test    unit tests (plain and under ASan/UBSan), then end-to-end tests
#   make examples  the Java direct producer (Maven) and a venv with PyPI's confluent-kafka
#   make bench   benchmarks (QUICK=1 for a short run)
#
# Sources are listed explicitly; -MMD keeps header dependencies.

.DEFAULT_GOAL := all

CC      ?= cc
OPT     ?= -O2
# Layers: a source sees its own folder's headers (quoted includes look there
# first) and common/ (-Icommon), nothing else, so no program can include
# another's headers; code that several programs share lives in common/. The
# only files that look inside a program's folder are that program's unit
# tests and benchmarks, each named below with the folder it may see.
CFLAGS  += -std=c17 $(OPT) -g -Wall -Wextra -Werror -MMD -MP -D_GNU_SOURCE \
           -I/usr/include/hiredis -I/usr/include/mariadb -Icommon
LDLIBS  += -lpthread -lm

B       := build
SAN     := $(B)/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

COMMON_SRC   := common/cmd.c common/codec.c common/util.c common/url.c $(B)/gen/schemas.c
# The scaffolding of the long-running programs: Kafka clients, and the
# /metrics, /healthz and /readyz server (links librdkafka and CivetWeb).
SERVICE_SRC  := common/kafka.c common/ops.c
DOMAIN_SRC   := processors/bytes.c processors/domain.c processors/coupon.c \
                processors/point.c processors/timesale.c
DEDUPE_SRC   := processors/dedupe.c processors/result_pack.c
PROC_SRC     := processors/main.c processors/runtime.c common/checkpoint.c \
                $(DEDUPE_SRC) processors/partition.c common/redis_conn.c
INGEST_SRC   := ingest/main.c ingest/http.c common/parse.c ingest/produce.c common/redis_conn.c \
                ingest/status.c ingest/notify.c ingest/ratelimit.c ingest/docs.c \
                common/result_json.c $(B)/gen/openapi.c
SINK_SRC     := sinks/mysql_main.c sinks/sink_mysql.c common/result_json.c common/redis_conn.c
DEVKAFKA_SRC := tools/devkafka.c

KAFKA_LIBS := -lrdkafka -lavro
REDIS_LIBS := -lhiredis
MYSQL_LIBS := -lmariadb
HTTP_LIBS  := -lcivetweb -ljansson -lcrypto

# Object files of sources, plain and sanitized; generated sources live in $(B).
obj = $(patsubst %.c,$(B)/obj/%.o,$(patsubst $(B)/%,%,$(1)))
sanobj = $(patsubst %.c,$(SAN)/obj/%.o,$(patsubst $(B)/%,%,$(1)))

PROGRAMS := $(B)/bin/promo-devkafka $(B)/bin/promo-processor $(B)/bin/promo-ingest \
            $(B)/bin/promo-sink-mysql

UNIT_TESTS := $(B)/bin/test-codec $(B)/bin/test-coupon $(B)/bin/test-point \
              $(B)/bin/test-timesale $(B)/bin/test-dedupe $(B)/bin/test-parse \
              $(B)/bin/test-result-json $(B)/bin/test-partition $(B)/bin/test-ops

# Programs and tests added by other parts of the tree (webhook dispatcher,
# benchmarks) append to PROGRAMS and UNIT_TESTS in their own fragments.
include $(wildcard sinks/webhook.mk bench/bench.mk tools/promoctl/promoctl.mk tools/coverage.mk tests/faults/faults.mk tests/fuzz/fuzz.mk \
                   examples/examples.mk)

SAN_TESTS  := $(UNIT_TESTS:$(B)/bin/%=$(SAN)/bin/%)

all: $(PROGRAMS) $(UNIT_TESTS)


$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(SAN)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANFLAGS) -c $< -o $@
$(SAN)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANFLAGS) -c $< -o $@

# The Avro schemas are compiled in, so the programs need no schema files.
$(B)/gen/schemas.c: schemas/coupon_command.avsc schemas/point_command.avsc \
                    schemas/timesale_command.avsc schemas/result.avsc schemas/dead_letter.avsc tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh $(filter %.avsc,$^) > $@

# The OpenAPI document ingest serves at /openapi.json, compiled in likewise.
$(B)/gen/openapi.c: ingest/openapi.json
	@mkdir -p $(dir $@)
	{ echo '/* Generated from ingest/openapi.json by the Makefile; do not edit. */'; \
	  echo 'const char ingest_openapi_json[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; echo ';'; } > $@

$(B)/bin/promo-devkafka: $(call obj,$(DEVKAFKA_SRC) common/util.c)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lrdkafka $(LDLIBS)
$(B)/bin/promo-processor: $(call obj,$(PROC_SRC) $(DOMAIN_SRC) $(SERVICE_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(REDIS_LIBS) -lcivetweb $(LDLIBS)
$(B)/bin/promo-ingest: $(call obj,$(INGEST_SRC) $(SERVICE_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(REDIS_LIBS) $(MYSQL_LIBS) $(HTTP_LIBS) $(LDLIBS)
$(B)/bin/promo-sink-mysql: $(call obj,$(SINK_SRC) $(SERVICE_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(REDIS_LIBS) $(MYSQL_LIBS) -ljansson -lcivetweb $(LDLIBS)

# Unit tests: cmocka, no servers.
$(B)/bin/test-codec: $(call obj,tests/unit/test_codec.c $(COMMON_SRC))
$(B)/bin/test-coupon: $(call obj,tests/unit/test_coupon.c $(DOMAIN_SRC) common/cmd.c)
$(B)/bin/test-point: $(call obj,tests/unit/test_point.c $(DOMAIN_SRC) common/cmd.c)
$(B)/bin/test-timesale: $(call obj,tests/unit/test_timesale.c $(DOMAIN_SRC) common/cmd.c)
$(B)/bin/test-dedupe: $(call obj,tests/unit/test_dedupe.c $(DEDUPE_SRC) processors/bytes.c $(COMMON_SRC))
$(B)/bin/test-partition: $(call obj,tests/unit/test_partition.c processors/partition.c)
$(B)/bin/test-ops: $(call obj,tests/unit/test_ops.c common/ops.c common/util.c)
$(B)/bin/test-parse: $(call obj,tests/unit/test_parse.c common/parse.c $(COMMON_SRC))
$(B)/bin/test-result-json: $(call obj,tests/unit/test_result_json.c common/result_json.c $(COMMON_SRC))
$(UNIT_TESTS):
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcmocka -lavro -ljansson $(LDLIBS)

$(SAN)/bin/test-codec: $(call sanobj,tests/unit/test_codec.c $(COMMON_SRC))
$(SAN)/bin/test-coupon: $(call sanobj,tests/unit/test_coupon.c $(DOMAIN_SRC) common/cmd.c)
$(SAN)/bin/test-point: $(call sanobj,tests/unit/test_point.c $(DOMAIN_SRC) common/cmd.c)
$(SAN)/bin/test-timesale: $(call sanobj,tests/unit/test_timesale.c $(DOMAIN_SRC) common/cmd.c)
$(SAN)/bin/test-dedupe: $(call sanobj,tests/unit/test_dedupe.c $(DEDUPE_SRC) processors/bytes.c $(COMMON_SRC))
$(SAN)/bin/test-partition: $(call sanobj,tests/unit/test_partition.c processors/partition.c)
$(SAN)/bin/test-ops: $(call sanobj,tests/unit/test_ops.c common/ops.c common/util.c)
$(SAN)/bin/test-parse: $(call sanobj,tests/unit/test_parse.c common/parse.c $(COMMON_SRC))
$(SAN)/bin/test-result-json: $(call sanobj,tests/unit/test_result_json.c common/result_json.c $(COMMON_SRC))
$(B)/bin/test-ops $(SAN)/bin/test-ops: LDLIBS += -lcivetweb

# The unit tests that look inside a program's folder (see CFLAGS above).
PROC_TESTS   := tests/unit/test_coupon.c tests/unit/test_point.c tests/unit/test_timesale.c \
                tests/unit/test_dedupe.c tests/unit/test_partition.c
$(call obj,$(PROC_TESTS)) $(call sanobj,$(PROC_TESTS)): CFLAGS += -Iprocessors
# test_parse also tests ingest's rate limiter, which it includes whole.
$(call obj,tests/unit/test_parse.c) $(call sanobj,tests/unit/test_parse.c): CFLAGS += -Iingest
$(SAN_TESTS):
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANFLAGS) -o $@ $^ -lcmocka -lavro -ljansson $(LDLIBS)

deps:
	sh tools/deps.sh

run: deps all
	bash tools/fleet.sh run

unit: $(UNIT_TESTS) $(SAN_TESTS)
	@set -e; for t in $(UNIT_TESTS) $(SAN_TESTS); do echo "== $$t"; $$t; done

# The end-to-end tests run the Java and PyPI-based producers too (examples/examples.mk).
e2e: all examples
	/usr/bin/python3 -m pytest -x -v tests/e2e $(if $(TESTS),-k "$(TESTS)")

test: deps
	$(MAKE) all $(SAN_TESTS)
	$(MAKE) unit
	$(MAKE) fuzz-quick
	$(MAKE) e2e
	$(MAKE) test-faults-quick
	$(MAKE) bench-quick

clean:
	rm -rf $(B) examples/java/target

.PHONY: all deps run unit e2e test clean
-include $(shell find $(B) -name '*.d' 2>/dev/null)
