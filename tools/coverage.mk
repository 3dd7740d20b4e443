# coverage.mk — `make coverage`: line coverage of the unit and end-to-end
# tests, as an lcov HTML report in build/coverage/index.html.
#
# The programs and unit tests are built a second time with --coverage (and
# -O0, so lines map to code) into build/cov, by running this Makefile again
# with B=build/cov: every path in it derives from $(B), so nothing else needs
# a coverage twin. The unit tests run from build/cov/bin, then the e2e suite
# and the quick fault-injection run with PROMO_BIN_DIR pointing there
# (tools/fleet.sh starts those binaries). A process killed with SIGKILL never
# writes its counters at exit, so PROMO_COVERAGE_FLUSH makes the long-running
# programs write them every second from their main loops
# (coverage_flush_tick() in common/util.c).
# Then lcov collects the counters of our sources, genhtml renders them, and
# the check prints each file's line coverage and fails when the pure state
# machines or the runtime, each taken as a whole, fall under COV_MIN percent.
# `make coverage TESTS=promoctl` narrows the e2e part (pytest -k).
#
# Included by the Makefile next to the other fragments.

COV      := build/cov
COV_HTML := build/coverage
COV_MIN  ?= 90
# The files held to COV_MIN: the pure state machines, and the runtime.
COV_MACHINES := processors/coupon.c processors/point.c processors/timesale.c processors/domain.c \
                processors/bytes.c
COV_RUNTIME  := processors/runtime.c common/checkpoint.c processors/dedupe.c processors/result_pack.c

coverage: deps
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) B=$(COV) OPT="-O0 --coverage -DPROMO_COVERAGE_FLUSH" all
	lcov --quiet --zerocounters --directory $(COV)/obj
	@mkdir -p $(COV_HTML) && rm -f $(COV_HTML)/FAILED
	@# A failing test still leaves a report of what ran; the target fails at the end.
	@for t in $(UNIT_TESTS:$(B)/bin/%=$(COV)/bin/%); do echo "== $$t"; $$t || echo "$$t" >> $(COV_HTML)/FAILED; done
	PROMO_BIN_DIR=$(abspath $(COV)/bin) /usr/bin/python3 -m pytest -q tests/e2e $(if $(TESTS),-k "$(TESTS)") \
	    || echo e2e >> $(COV_HTML)/FAILED
	@# The quick fault-injection run of `make test`: the runtime's error paths.
	if [ -z "$(TESTS)" ] && [ -f tests/faults/run.py ]; then \
	    PROMO_BIN_DIR=$(abspath $(COV)/bin) /usr/bin/python3 tests/faults/run.py --quick \
	    || echo faults >> $(COV_HTML)/FAILED; fi
	lcov --quiet --capture --directory $(COV)/obj --base-directory . --output-file $(COV_HTML)/all.info
	lcov --quiet --extract $(COV_HTML)/all.info '$(CURDIR)/*' --output-file $(COV_HTML)/lcov.info
	lcov --quiet --remove $(COV_HTML)/lcov.info '$(CURDIR)/tests/*' '$(CURDIR)/$(COV)/*' \
	     --output-file $(COV_HTML)/lcov.info
	genhtml --quiet --title promo --output-directory $(COV_HTML) $(COV_HTML)/lcov.info
	@awk -v min=$(COV_MIN) -v root='$(CURDIR)/' -v machines='$(COV_MACHINES)' -v runtime='$(COV_RUNTIME)' ' \
	    BEGIN { n = split(machines, m, " "); for (i = 1; i <= n; i++) group[m[i]] = "state machines"; \
	            n = split(runtime, r, " "); for (i = 1; i <= n; i++) group[r[i]] = "runtime" } \
	    /^SF:/ { f = substr($$0, 4); sub(root, "", f) } \
	    /^LF:/ { lf[f] += substr($$0, 4) } /^LH:/ { lh[f] += substr($$0, 4) } \
	    END { for (f in lf) if (lf[f] > 0) \
	              printf "%-28s %6.1f%%  %5d/%-5d%s\n", f, 100 * lh[f] / lf[f], lh[f], lf[f], \
	                     (f in group) ? "  " group[f] : "" | "sort"; \
	          close("sort"); \
	          for (f in group) { if (!(f in lf)) { print "no coverage data for " f; bad = 1 } \
	                             gf[group[f]] += lf[f]; gh[group[f]] += lh[f] } \
	          for (g in gf) { pct = gf[g] ? 100 * gh[g] / gf[g] : 0; \
	                          printf "%s: %.1f%% of %d lines (minimum %d%%)\n", g, pct, gf[g], min; \
	                          if (pct < min) bad = 1 } \
	          exit bad }' $(COV_HTML)/lcov.info
	@echo "coverage report: $(COV_HTML)/index.html"
	@if [ -f $(COV_HTML)/FAILED ]; then echo "failed tests:" $$(cat $(COV_HTML)/FAILED); exit 1; fi

.PHONY: coverage
