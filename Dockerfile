# Multi-stage build of the gateway for use as a container sidecar.
#   docker build -t gateway .
#   docker run --rm -p 8000:8000 -e BACKEND_URL=http://app:8080 gateway
# Configuration comes only from the environment (see gateway.env.example);
# the access log goes to stdout and diagnostics to stderr, so `docker logs`
# and `kubectl logs` see both. test/integration/test_container.c checks this
# file against `make deps` (build stage) and `ldd` of the built gateway
# (runtime stage): keep the package lists in step with them.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libhiredis-dev node-llhttp libjansson-dev \
      libcmocka-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY third_party ./third_party
COPY include ./include
COPY src ./src
# CMake configures the test targets too (cmocka is required), so test/
# and the scripts a test runs come along; only the gateway is built.
COPY test ./test
COPY scripts ./scripts
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target gateway

FROM debian:bookworm-slim
# Only the shared libraries the gateway links besides libc6 (ldd):
# libhiredis.so.0.14, libjansson.so.4, libcrypto.so.3 (in libssl3).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis0.14 libjansson4 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=build /src/build/gateway /usr/local/bin/gateway
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["gateway", "--healthcheck"]
ENTRYPOINT ["gateway"]
