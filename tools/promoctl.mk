# promoctl.mk — builds the operator CLI, build/bin/promoctl (tools/promoctl.c).
# Included by the Makefile next to the other fragments, before `all` is read,
# so it appends to PROGRAMS and `make` builds the CLI with the fleet. It links
# the request parser ingest uses (the CLI accepts exactly what HTTP accepts)
# and the checkpoint module the processors use (it reads checkpoints the way
# they write them), both in common/.
# Object paths are spelled out like the Makefile's `obj` function, which is
# defined only after this file is included.

PROMOCTL_SRC := tools/promoctl.c tools/topics.c common/parse.c common/checkpoint.c common/kafka.c

PROGRAMS += $(B)/bin/promoctl

$(B)/bin/promoctl: $(patsubst %.c,$(B)/obj/%.o,$(patsubst $(B)/%,%,$(PROMOCTL_SRC) $(COMMON_SRC)))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(REDIS_LIBS) $(MYSQL_LIBS) -ljansson $(LDLIBS)
