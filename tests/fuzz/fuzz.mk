# fuzz.mk — libFuzzer targets, included by the top-level Makefile.
#
#   make fuzz         run each target for FUZZ_SECONDS (default 600) in turn
#   make fuzz-quick   each target for FUZZ_QUICK_SECONDS (20), then replay every
#                     saved regression input; part of `make test`
#   make fuzz-merge   minimize tests/fuzz/corpus/<target> with what the last
#                     runs found (-merge=1); this one rewrites the repo's corpus
#
# Targets: parse (ingest's JSON request parsing, parse.h), codec (Avro
# decoders, codec.h), checkpoint (domain and dedupe load/apply/dump). Built
# with clang and -fsanitize=fuzzer,address,undefined into build/fuzz/, with
# every sanitizer report fatal so a finding stops the run. A run works on a
# copy of the committed corpus under build/fuzz/work/, so the tree stays clean;
# a crash leaves its input there as crash-<sha1>. Such an input, once the bug
# is fixed, goes into tests/fuzz/regressions/<target>/ and is replayed by
# fuzz-quick from then on. Needs the COMMON_SRC, DOMAIN_SRC and B variables
# and the $(B)/gen/schemas.c rule of the Makefile, so include it after those.

# Keep whatever the including Makefile chose as its default goal: when this is
# included before `all:`, clearing it lets the next target parsed be the default.
fuzz_saved_goal := $(.DEFAULT_GOAL)

FUZZ_CC        ?= clang-14
FUZZ_SECONDS   ?= 600
FUZZ_QUICK_SECONDS ?= 20
FUZZ_NICE      ?= nice -n 19
FUZZ_ARGS      ?= -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_DIR       := $(B)/fuzz
FUZZ_TARGETS   := parse codec checkpoint
FUZZ_SAN       := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS    := -std=c17 -O1 -g -Wall -Wextra -Werror -MMD -MP -D_GNU_SOURCE \
                  -Icommon $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_BINS      := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/bin/fuzz-%)

fuzzobj = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(patsubst $(B)/%,%,$(1)))

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_DIR)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/bin/fuzz-parse: $(call fuzzobj,tests/fuzz/fuzz_parse.c common/parse.c $(COMMON_SRC))
$(FUZZ_DIR)/bin/fuzz-codec: $(call fuzzobj,tests/fuzz/fuzz_codec.c $(COMMON_SRC))
$(FUZZ_DIR)/bin/fuzz-checkpoint: $(call fuzzobj,tests/fuzz/fuzz_checkpoint.c $(DEDUPE_SRC) \
                                  $(DOMAIN_SRC) $(COMMON_SRC))
# The checkpoint target drives the processors' state machines and dedupe
# window directly: it alone looks inside processors/ (see the Makefile).
$(call fuzzobj,tests/fuzz/fuzz_checkpoint.c): FUZZ_CFLAGS += -Iprocessors
$(FUZZ_BINS):
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ -lavro -ljansson -lpthread -lm

fuzz-build: $(FUZZ_BINS)

# $(call fuzz_run,target,seconds): a fresh copy of the committed corpus, then
# the run; saved regression inputs join as a second, read-only seed directory.
define fuzz_run
	@echo "== fuzz-$(1): $(2) s"
	@rm -rf $(FUZZ_DIR)/work/$(1) && mkdir -p $(FUZZ_DIR)/work/$(1)/corpus $(FUZZ_DIR)/work/$(1)/seeds
	@cp -R tests/fuzz/corpus/$(1)/. $(FUZZ_DIR)/work/$(1)/corpus/
	@if [ -d tests/fuzz/regressions/$(1) ]; then cp -R tests/fuzz/regressions/$(1)/. $(FUZZ_DIR)/work/$(1)/seeds/; fi
	$(FUZZ_NICE) $(FUZZ_DIR)/bin/fuzz-$(1) -max_total_time=$(2) $(FUZZ_ARGS) \
	    -artifact_prefix=$(FUZZ_DIR)/work/$(1)/ $(FUZZ_DIR)/work/$(1)/corpus $(FUZZ_DIR)/work/$(1)/seeds \
	    2>$(FUZZ_DIR)/work/$(1)/log || { tail -n 60 $(FUZZ_DIR)/work/$(1)/log; exit 1; }
	@grep -E '^(stat::|Done|INFO: -max_total_time)' $(FUZZ_DIR)/work/$(1)/log || true
	@echo "fuzz-$(1): corpus now $$(ls $(FUZZ_DIR)/work/$(1)/corpus | wc -l) inputs"

endef

# Each saved crash input must now run clean (libFuzzer runs files given by name once each).
define fuzz_replay
	@set -e; files=$$(find tests/fuzz/regressions/$(1) -type f ! -name '*.md' 2>/dev/null | sort); \
	if [ -n "$$files" ]; then \
	    echo "== fuzz-$(1): replaying $$(echo "$$files" | wc -l) regression inputs"; \
	    $(FUZZ_DIR)/bin/fuzz-$(1) $(FUZZ_ARGS) $$files 2>$(FUZZ_DIR)/work/$(1)-replay.log || \
	        { tail -n 60 $(FUZZ_DIR)/work/$(1)-replay.log; exit 1; }; \
	fi

endef

fuzz: $(FUZZ_BINS)
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_SECONDS)))

fuzz-quick: $(FUZZ_BINS)
	@mkdir -p $(FUZZ_DIR)/work
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_replay,$(t)))
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_run,$(t),$(FUZZ_QUICK_SECONDS)))

fuzz-merge: $(FUZZ_BINS)
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_merge,$(t)))

define fuzz_merge
	@echo "== fuzz-$(1): merging into tests/fuzz/corpus/$(1)"
	@rm -rf $(FUZZ_DIR)/merge/$(1) && mkdir -p $(FUZZ_DIR)/merge/$(1) $(FUZZ_DIR)/work/$(1)/corpus
	$(FUZZ_DIR)/bin/fuzz-$(1) -merge=1 $(FUZZ_ARGS) $(FUZZ_DIR)/merge/$(1) tests/fuzz/corpus/$(1) \
	    $(FUZZ_DIR)/work/$(1)/corpus 2>$(FUZZ_DIR)/merge/$(1).log
	@rm -rf tests/fuzz/corpus/$(1) && mkdir -p tests/fuzz/corpus/$(1)
	@cp $(FUZZ_DIR)/merge/$(1)/* tests/fuzz/corpus/$(1)/
	@echo "fuzz-$(1): $$(ls tests/fuzz/corpus/$(1) | wc -l) inputs, $$(du -sk tests/fuzz/corpus/$(1) | cut -f1) KiB"

endef

.PHONY: fuzz fuzz-quick fuzz-merge fuzz-build
.DEFAULT_GOAL := $(fuzz_saved_goal)
