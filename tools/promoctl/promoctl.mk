# promoctl.mk — builds the operator CLI, build/bin/promoctl (tools/promoctl/).
# Included by the Makefile next to the other fragments, before `all` is read,
# so it appends to PROGRAMS and `make` builds the CLI with the fleet. It links
# the request parser ingest uses (the CLI accepts exactly what HTTP accepts)
# and the checkpoint module the processors use (it reads checkpoints the way
# they write them), both in common/.

PROMOCTL_SRC := tools/promoctl/main.c tools/promoctl/ctl.c tools/promoctl/submit.c tools/promoctl/follow.c \
                tools/promoctl/checkpoints.c tools/promoctl/dlq.c tools/promoctl/lag.c \
                tools/promoctl/topics_admin.c tools/promoctl/reconcile.c common/parse.c common/checkpoint.c \
                common/kafka.c common/redis_conn.c common/result_json.c sinks/sink_mysql.c

PROGRAMS += $(B)/bin/promoctl

# reconcile.c repairs through the sink's own writer (sinks/sink_mysql.h).
$(B)/obj/tools/promoctl/reconcile.o: CFLAGS += -Isinks

$(B)/bin/promoctl: $(call obj,$(PROMOCTL_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(KAFKA_LIBS) $(REDIS_LIBS) $(MYSQL_LIBS) -ljansson $(LDLIBS)
