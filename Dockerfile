# The Sluice image: one binary, every component a subcommand (`sluice system controller`,
# `sluice system activator`, and `sluice queue-proxy` as the revisions' sidecar).
#   docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice && cp target/release/sluice /sluice

FROM debian:trixie-slim
COPY --from=build /sluice /usr/local/bin/sluice
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]
