# syntax=docker/dockerfile:1
# One image per reference service, by build target (docs/deploy.md, "Images"):
#   docker build --target gateway     -t libsaga/gateway:0.1.0 .
#   docker build --target reservation -t libsaga/reservation:0.1.0 .
#   (payment, inventory, mypage likewise)
# The build stage installs what CI installs (scripts/setup, Debian 12 packages) and builds
# the CI preset (release, -Werror); each image holds one stripped service binary, the
# Debian runtime libraries it links and nothing else of the build, and runs as a non-root
# user. Checked by scripts/deploy-check (hadolint; no container engine in CI).

# Debian 12 (bookworm), as CI. Pin a digest (debian:bookworm@sha256:...) for reproducible images.
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build: the same setup and preset as CI ----
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY scripts/setup scripts/setup
# --no-kafka: the broker jars are for the tests, not for the images.
RUN scripts/setup --no-kafka && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake --preset ci -DSAGA_BUILD_TESTS=OFF -DSAGA_BUILD_BENCH=OFF -DSAGA_BUILD_EXAMPLES=OFF \
 && cmake --build --preset ci --target saga-gateway saga-reservation saga-payment saga-inventory saga-mypage
# Each service's package files (cmake/packaging.cmake), stripped, under /out/<service>.
RUN for s in gateway reservation payment inventory mypage; do \
      DESTDIR=/out/$s cmake --install build/ci --prefix /usr --component $s --strip; \
    done

# ---- runtime bases: Debian's runtime libraries only, a non-root user ----
FROM ${RUNTIME_IMAGE} AS runtime
# The gateway's libraries (ldd): spdlog/fmt, prometheus-cpp, OpenSSL, jemalloc.
# Versions are those of the Debian release the tag names (no pins: security updates).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libspdlog1.10 libfmt9 libprometheus-cpp-core1.0 libssl3 libjemalloc2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 saga \
 && useradd --system --uid 10001 --gid saga --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin saga \
 && install -d -m 0750 -o saga -g saga /var/lib/libsaga
USER 10001:10001
ENV HTTP_HOST=0.0.0.0 LOG_LEVEL=info

FROM runtime AS runtime-kafka
USER 0:0
# And those of the services on Kafka and RocksDB.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends librdkafka1 librdkafka++1 librocksdb7.8 \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# ---- one image per service ----
FROM runtime AS gateway
COPY --from=build /out/gateway/usr/bin/saga-gateway /usr/bin/saga-gateway
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/bin/saga-gateway"]

FROM runtime-kafka AS reservation
COPY --from=build /out/reservation/usr/bin/saga-reservation /usr/bin/saga-reservation
ENV PORT=8082 DATA_DIR=/var/lib/libsaga/reservation
EXPOSE 8082
ENTRYPOINT ["/usr/bin/saga-reservation"]

FROM runtime-kafka AS payment
COPY --from=build /out/payment/usr/bin/saga-payment /usr/bin/saga-payment
ENV PORT=8083 DATA_DIR=/var/lib/libsaga/payment
EXPOSE 8083
ENTRYPOINT ["/usr/bin/saga-payment"]

FROM runtime-kafka AS inventory
COPY --from=build /out/inventory/usr/bin/saga-inventory /usr/bin/saga-inventory
ENV PORT=8084 DATA_DIR=/var/lib/libsaga/inventory
EXPOSE 8084
ENTRYPOINT ["/usr/bin/saga-inventory"]

FROM runtime-kafka AS mypage
COPY --from=build /out/mypage/usr/bin/saga-mypage /usr/bin/saga-mypage
ENV PORT=8086 DATA_DIR=/var/lib/libsaga/mypage
EXPOSE 8086
ENTRYPOINT ["/usr/bin/saga-mypage"]
