# Multi-stage build of the gateway for use as a container sidecar.
#   docker build -t gateway .
#   docker run --rm -p 8000:8000 -e BACKEND_URL=http://app:8080 gateway
# Configuration comes from the environment (see gateway.env.example); to use
# an env file inside the container instead, mount it and set
# GATEWAY_ENV_FILE=/path/to/it: the server and the HEALTHCHECK
# (`gateway --healthcheck`) then both read it (the real environment still
# wins). The access log goes to stdout and diagnostics to stderr, so
# `docker logs` and `kubectl logs` see both. test/integration/test_container.c
# checks this file against `make deps` (build stage) and `ldd` of the built
# gateway (runtime stage): keep the package lists in step with them.
# `make test-container` builds this image and runs it (scripts/container-test.sh).

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libhiredis-dev node-llhttp libjansson-dev libyaml-dev \
      libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY third_party ./third_party
COPY include ./include
COPY src ./src
# GW_BUILD_TESTS=OFF: CMake configures without cmocka and test/; only the
# gateway is built.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGW_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target gateway

FROM debian:bookworm-slim
# Only the shared libraries the gateway links besides libc6 (ldd):
# libhiredis.so.0.14, libjansson.so.4, libssl.so.3 and libcrypto.so.3 (in libssl3),
# libyaml-0.so.2 (in libyaml-0-2).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis0.14 libjansson4 libssl3 libyaml-0-2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=build /src/build/gateway /usr/local/bin/gateway
# OCI labels. The version is CMakeLists.txt's project(VERSION) (the test
# checks it); no LICENSE file is in the repository yet, hence the SPDX
# NOASSERTION until one is chosen; the release build passes the public
# repository's address with --build-arg GW_SOURCE_URL=... (the default is a
# reserved placeholder name).
ARG GW_SOURCE_URL=https://gateway.invalid/source
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Rate-limiting HTTP/1.1 reverse proxy (sidecar)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="NOASSERTION" \
      org.opencontainers.image.source="${GW_SOURCE_URL}"
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# Liveness (/health?probe=live): a dead backend or Redis is not the
# gateway's fault and a restart would not fix it (readiness is
# `gateway --healthcheck=ready`). The timeout exceeds the checker's own
# bounded waits (2 s connect + 2 s response, src/main.c), so a wedged
# gateway is reported by the checker, not killed by the engine.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["gateway", "--healthcheck"]
ENTRYPOINT ["gateway"]
