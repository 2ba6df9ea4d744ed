# One image for all project binaries (xds-server, echo-upstream); the command picks the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p xds-server -p tests --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xds-server /src/target/release/echo-upstream /usr/local/bin/
ENTRYPOINT []
