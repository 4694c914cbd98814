# syntax=docker/dockerfile:1
#
# The two Berth images, each a static (musl) binary on a distroless base,
# running as the non-root user 65532 with nothing else in the image (no
# shell, no package manager). Build from the repository root:
#
#   docker build --target registry -t ghcr.io/berth-dev/berth-registry:v0.1.0 .
#   docker build --target operator -t ghcr.io/berth-dev/berth-operator:v0.1.0 .
#
# The tests do not build these images (they run the binaries directly); they
# are built where images are published. Kubernetes runs the registry as the
# operator says (`serve --config /etc/berth/config.yml` with that file from a
# ConfigMap, and `gc`); `docker run -p 5000:5000 IMAGE` serves the built-in
# config below. charts/berth runs the operator.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# ring (TLS) compiles C and assembly: the musl toolchain headers.
RUN apk add --no-cache musl-dev
WORKDIR /src
# The workspace: every member's manifest is needed to resolve it.
COPY Cargo.toml Cargo.lock ./
COPY registry registry
COPY operator operator
COPY tests tests
# Alpine's Rust targets musl and links statically; strip the symbols.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin berth-registry --bin berth-operator \
 && install -D -m 0755 target/release/berth-registry /registry/usr/local/bin/berth-registry \
 && install -d -o 65532 -g 65532 /registry/var/lib/registry \
 && install -D -m 0755 target/release/berth-operator /operator/usr/local/bin/berth-operator

# The configuration `docker run` uses; in Kubernetes the operator mounts its
# own file over /etc/berth.
COPY <<CONFIG /registry/etc/berth/config.yml
version: 0.1
log:
  formatter: json
http:
  addr: :5000
storage:
  filesystem:
    rootdirectory: /var/lib/registry
CONFIG

# distroless/static: CA certificates (for S3 over HTTPS), /etc/passwd with
# the nonroot user, tzdata.
FROM gcr.io/distroless/static-debian12:nonroot AS registry
COPY --from=build /registry/ /
USER 65532:65532
EXPOSE 5000
VOLUME ["/var/lib/registry"]
ENTRYPOINT ["/usr/local/bin/berth-registry"]
CMD ["serve", "--config", "/etc/berth/config.yml"]
LABEL org.opencontainers.image.title="berth-registry" \
      org.opencontainers.image.description="An OCI Distribution registry server, a drop-in for CNCF Distribution" \
      org.opencontainers.image.licenses="Apache-2.0"

# The operator writes no files, so it runs with a read-only root filesystem.
FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /operator/ /
USER 65532:65532
# /metrics and /healthz (--metrics-addr).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/berth-operator"]
LABEL org.opencontainers.image.title="berth-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs berth-registry on every node from one Registry resource" \
      org.opencontainers.image.licenses="Apache-2.0"
