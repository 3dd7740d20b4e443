# webhook.mk — the webhook dispatcher and its unit test, included by the
# Makefile. Appends to PROGRAMS and UNIT_TESTS; the Makefile's generic
# $(UNIT_TESTS) and $(SAN_TESTS) rules link the tests.

# sink_mysql.c for its migration runner: the dispatcher may start first.
WEBHOOK_SRC := sinks/webhook_main.c sinks/webhook.c sinks/webhook_sign.c sinks/sink_mysql.c \
               common/result_json.c

PROGRAMS += $(B)/bin/promo-webhook
UNIT_TESTS += $(B)/bin/test-webhook

$(B)/bin/promo-webhook: $(call obj,$(WEBHOOK_SRC) $(SERVICE_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lrdkafka -lavro -lhiredis -lmariadb -ljansson -lcurl -lcrypto -lcivetweb \
		-lpthread -lm

$(B)/bin/test-webhook: $(call obj,tests/unit/test_webhook.c sinks/webhook_sign.c common/url.c)
$(SAN)/bin/test-webhook: $(call sanobj,tests/unit/test_webhook.c sinks/webhook_sign.c common/url.c)
$(B)/bin/test-webhook $(SAN)/bin/test-webhook: LDLIBS += -lcrypto
$(call obj,tests/unit/test_webhook.c) $(call sanobj,tests/unit/test_webhook.c): CFLAGS += -Isinks
