# Multi-stage build of the gateway for use as a container sidecar.
#   docker build -t gateway .
#   docker run --rm -p 8000:8000 -e BACKEND_URL=http://app:8080 gateway
# Configuration comes only from the environment (see gateway.env.example).

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
COPY test ./test
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target gateway backend_app

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis0.14 libjansson4 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /src/build/gateway /usr/local/bin/gateway
COPY --from=build /src/build/backend_app /usr/local/bin/backend_app
USER gateway
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["gateway", "--healthcheck"]
ENTRYPOINT ["gateway"]
