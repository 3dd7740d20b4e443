# Dockerfile — the fleet's image: every program (promo-ingest, promo-processor,
# promo-sink-mysql, promo-webhook, promoctl) on Debian bookworm, the same
# distribution and packages as the local fleet (librdkafka 2.0.2, Avro-C
# 1.11.1, CivetWeb 1.15, hiredis 0.14.1, MariaDB Connector/C).
#
# Stage 1 installs the build dependencies with tools/deps.sh, the very script
# `make deps` runs, so the image and a developer machine cannot drift; then
# builds with the Makefile and records which Debian packages own the shared
# libraries the programs link. Stage 2 installs exactly those packages, so the
# runtime list cannot drift from the build either. One image serves every
# service of docker-compose.yml; the service's command picks the program.
#
# Not built on the development machines (they run no Docker engine): checked
# by reading and by `docker-compose config`. Build with
#   docker build -t promo:latest .

FROM debian:bookworm AS build
WORKDIR /src
# deps.sh first, alone, so the package layer is cached across source edits.
COPY tools/deps.sh tools/deps.sh
RUN PROMO_DEPS_NO_KAFKA=1 sh tools/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make -j"$(nproc)" all \
    && mkdir -p /out/bin \
    && cp build/bin/promo-ingest build/bin/promo-processor build/bin/promo-sink-mysql \
          build/bin/promo-webhook build/bin/promoctl /out/bin/ \
    && for lib in $(ldd /out/bin/* | awk '/=> \//{print $3}' | sort -u); do \
           dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")"; \
       done | cut -d: -f1 | sort -u > /out/runtime-packages.txt \
    && cat /out/runtime-packages.txt

FROM debian:bookworm-slim AS runtime
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
# curl only for the health checks of docker-compose.yml.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       $(cat /tmp/runtime-packages.txt) ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && useradd --system --home-dir /app --shell /usr/sbin/nologin promo
COPY --from=build /out/bin/ /usr/local/bin/
# Fails the build if the package list missed a library.
RUN ! ldd /usr/local/bin/* | grep 'not found'
COPY sinks/migrations/ /app/sinks/migrations/
WORKDIR /app
ENV PROMO_MIGRATIONS_DIR=/app/sinks/migrations
USER promo
# No default program: docker-compose.yml names one per service.
CMD ["promoctl"]
