# examples.mk — builds the direct producers that share no code with the fleet
# (docs/producers.md), which `make e2e` needs for tests/e2e/test_053:
#
#   make examples-java   examples/java/target/promo-produce-command.jar (Maven:
#                        Apache Kafka's Java client and Avro from Maven Central;
#                        its dependencies in examples/java/target/lib/)
#   make pyenv           build/pyenv, a venv with PyPI's confluent-kafka and avro
#                        for examples/produce_command.py (tools/pyenv.sh)
#   make examples        both
#
# Included by the Makefile with the other fragments.

JAVA_EXAMPLE     := examples/java/target/promo-produce-command.jar
JAVA_EXAMPLE_SRC := examples/java/pom.xml $(shell find examples/java/src -name '*.java' 2>/dev/null)
PYENV            := $(B)/pyenv

$(JAVA_EXAMPLE): $(JAVA_EXAMPLE_SRC)
	mvn -q -B -Dstyle.color=never -f examples/java/pom.xml package
	@touch $@

$(PYENV)/.installed: tools/pyenv.sh
	sh tools/pyenv.sh $(PYENV)
	@touch $@

examples-java: $(JAVA_EXAMPLE)
pyenv: $(PYENV)/.installed
examples: examples-java pyenv

.PHONY: examples examples-java pyenv
