# The in-cluster relay: a static musl build of `kforward-relay` on an empty image.
#   docker build -f relay.Dockerfile -t ghcr.io/kforward/kforward-relay:$(version) .
FROM rust:1.89-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kforward-cli --bin kforward-relay \
 && cp target/release/kforward-relay /kforward-relay

FROM scratch
COPY --from=build /kforward-relay /kforward-relay
USER 65532:65532
ENTRYPOINT ["/kforward-relay"]
