# bench.mk — the benchmark programs and `make bench`, included by the Makefile.
#
#   make bench           every scenario at full size (several minutes)
#   make bench QUICK=1   every scenario shrunk, under a minute (also run by make test)
#   make bench SCENARIOS=flash-coupon,rowlock   a selection
#
# The Makefile includes this file before it defines its `obj` function, and
# prerequisites are expanded as rules are read, so bench_obj repeats obj's
# definition here (the same mapping: foo.c -> build/obj/foo.o).

bench_obj = $(patsubst %.c,$(B)/obj/%.o,$(patsubst $(B)/%,%,$(1)))

PROGRAMS += $(B)/bin/promo-loadgen $(B)/bin/bench-core $(B)/bin/baseline-rowlock $(B)/bin/baseline-lua

$(B)/bin/promo-loadgen: $(call bench_obj,bench/loadgen.c $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(LDLIBS)
# bench-core times the processors' core alone, so it looks inside processors/.
$(call bench_obj,bench/core.c): CFLAGS += -Iprocessors
$(B)/bin/bench-core: $(call bench_obj,bench/core.c $(DEDUPE_SRC) $(DOMAIN_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lavro $(LDLIBS)
$(B)/bin/baseline-rowlock: $(call bench_obj,bench/baseline_rowlock.c bench/front.c common/util.c common/cmd.c)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcivetweb -ljansson $(MYSQL_LIBS) $(LDLIBS)
$(B)/bin/baseline-lua: $(call bench_obj,bench/baseline_lua.c bench/front.c common/util.c common/cmd.c)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcivetweb -ljansson $(REDIS_LIBS) $(LDLIBS)

BENCH_FLAGS := $(if $(filter-out 0,$(QUICK)),--quick)

bench: all
	/usr/bin/python3 bench/run.py $(BENCH_FLAGS) $(if $(SCENARIOS),--only $(SCENARIOS))

.PHONY: bench

# `make test` runs the quick benchmark too (last, after deps and the
# tests), so the benchmark keeps working.
bench-quick: all
	/usr/bin/python3 bench/run.py --quick

.PHONY: bench-quick
