# syntax=docker/dockerfile:1
#
# Images of the Audio-Alchemist functions, one target per function:
#
#   docker build --target login   -t audio-alchemist/login   .
#   docker build --target upload  -t audio-alchemist/upload  .
#   docker build --target convert -t audio-alchemist/convert .
#   docker build --target notify  -t audio-alchemist/notify  .
#
# scripts/images builds all four and tags them for a registry. The dependency
# build sits in its own layer (cargo-chef), so a change to the project's own
# sources rebuilds only the workspace crates. Every image runs as uid 65532,
# listens on $PORT (8080 unless Knative sets another) and has no shell except
# convert, which needs Debian's ffmpeg.

# The toolchain the project is tested with; scripts/check-deploy checks that it
# is not older than rust-version in Cargo.toml.
ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# Builder and runtime are both Debian 12 (bookworm), so the binaries link
# against the glibc they run with.
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# Reduces the workspace to a recipe: the manifests, the lock file and the
# targets, without the sources. The recipe changes only when dependencies do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# sqlx's query macros read saved query metadata (.sqlx/) instead of a database.
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
        --bin alchemist-login \
        --bin alchemist-upload \
        --bin alchemist-convert \
        --bin alchemist-notify

# login, upload and notify need only glibc, libgcc and CA certificates, which
# distroless/cc provides; its "nonroot" variant defines uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS login
COPY --from=builder /src/target/release/alchemist-login /usr/local/bin/alchemist-login
ENV PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/alchemist-login"]

FROM gcr.io/distroless/cc-debian12:nonroot AS upload
COPY --from=builder /src/target/release/alchemist-upload /usr/local/bin/alchemist-upload
ENV PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/alchemist-upload"]

FROM gcr.io/distroless/cc-debian12:nonroot AS notify
COPY --from=builder /src/target/release/alchemist-notify /usr/local/bin/alchemist-notify
ENV PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/alchemist-notify"]

# convert runs ffmpeg and ffprobe from Debian's ffmpeg package, which gets
# Debian's security updates; rebuild the image to pick them up.
FROM debian:bookworm-slim AS convert
# Package versions are not pinned: bookworm's archive keeps only the current
# version of each package, so a pinned version stops building after an update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin nonroot
COPY --from=builder /src/target/release/alchemist-convert /usr/local/bin/alchemist-convert
ENV PORT=8080
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/alchemist-convert"]
