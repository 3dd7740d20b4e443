# faults.mk — the fault-injection suite (tests/faults/run.py), included by the
# Makefile at its end (so the default goal stays `all`).
#
#   make test-faults        the full suite: 20+ processor kills, rebalances and
#                           fencing in every domain, sink, MariaDB, Redis and
#                           broker faults under load, on a three-node Apache
#                           Kafka (KRaft) cluster: the hot partition's leader
#                           and the active controller killed, a broker frozen
#                           past its session timeout, the whole cluster
#                           restarted (10-15 minutes)
#   make test-faults-quick  the subset `make test` runs, on one broker that is
#                           killed and restarted twice (about 2 minutes)
#
# Both start their own fleet on free ports, print per fault kind how many were
# injected and how many requests were accepted meanwhile, then lost,
# duplicated, mismatched and invariant violations (all must be 0). SEED=N
# replays another schedule; FAULTS_KEEP=1 keeps the fleet's logs.

FAULTS_ARGS = $(if $(SEED),--seed $(SEED)) $(if $(FAULTS_KEEP),--keep)

test-faults: all
	/usr/bin/python3 tests/faults/run.py $(FAULTS_ARGS)

test-faults-quick: all
	/usr/bin/python3 tests/faults/run.py --quick $(FAULTS_ARGS)

.PHONY: test-faults test-faults-quick

# Included before `all` is defined, this file must not become the default goal.
ifeq ($(.DEFAULT_GOAL),test-faults)
.DEFAULT_GOAL :=
endif
