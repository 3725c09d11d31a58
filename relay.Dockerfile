# The in-cluster relay: a static musl build of `kforward-relay` (the relay crate alone: no
# CLI, kube, clap or testkit) on an empty image, for linux/amd64 and linux/arm64.
#   docker buildx build -f relay.Dockerfile --platform linux/amd64,linux/arm64 \
#     -t ghcr.io/kforward/kforward-relay:$(version) .
# The build stage runs on the builder's own platform and cross-compiles with rustup's musl
# targets and rust-lld, so an arm64 image needs no emulation.
FROM --platform=$BUILDPLATFORM rust:1.89-alpine AS build
ARG TARGETARCH
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$triple" \
 && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p kforward-relay --bin kforward-relay --target "$triple" \
 && cp "target/$triple/release/kforward-relay" /kforward-relay

FROM scratch
COPY --from=build /kforward-relay /kforward-relay
USER 65532:65532
ENTRYPOINT ["/kforward-relay"]
