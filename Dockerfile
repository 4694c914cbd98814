# syntax=docker/dockerfile:1
#
# The two Berth images, each the release binary with the shared libraries it
# links (glibc, libgcc), the CA bundle and the non-root user 65532, and
# nothing else (no shell, no package manager). Build from the repository root:
#
#   docker build --target registry -t ghcr.io/berth-dev/berth-registry:v0.1.0 .
#   docker build --target operator -t ghcr.io/berth-dev/berth-operator:v0.1.0 .
#
# `make images` builds the same images without a container engine, as OCI
# layouts, from the same files: both run scripts/images/rootfs.sh, and the
# image configuration below (USER, EXPOSE, VOLUME, ENTRYPOINT, CMD, LABEL) must
# stay as scripts/images/build.sh writes it (tests/tests/images.rs compares
# them). The tests run those images on a real node. Kubernetes runs the
# registry as the operator says (`serve --config /etc/berth/config.yml` with
# that file from a ConfigMap, and `gc`); `docker run -p 5000:5000 IMAGE`
# serves the built-in config. charts/berth runs the operator.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The workspace: every member's manifest is needed to resolve it.
COPY Cargo.toml Cargo.lock ./
COPY config config
COPY registry registry
COPY operator operator
COPY tests tests
COPY scripts/images scripts/images
# One package per build, as `make release` builds them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p berth-registry \
 && cargo build --release --locked -p berth-operator \
 && scripts/images/rootfs.sh registry target/release/berth-registry /rootfs/registry \
 && scripts/images/rootfs.sh operator target/release/berth-operator /rootfs/operator

FROM scratch AS registry
COPY --from=build /rootfs/registry/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 5000/tcp
VOLUME ["/var/lib/registry"]
ENTRYPOINT ["/usr/local/bin/berth-registry"]
CMD ["serve", "--config", "/etc/berth/config.yml"]
LABEL org.opencontainers.image.title="berth-registry" \
      org.opencontainers.image.description="An OCI Distribution registry server, a drop-in for CNCF Distribution" \
      org.opencontainers.image.licenses="Apache-2.0"

# The operator writes no files, so it runs with a read-only root filesystem.
FROM scratch AS operator
COPY --from=build /rootfs/operator/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
# /metrics and /healthz (--metrics-addr).
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/berth-operator"]
LABEL org.opencontainers.image.title="berth-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs berth-registry on every node from one Registry resource" \
      org.opencontainers.image.licenses="Apache-2.0"
