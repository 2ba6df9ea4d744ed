# One image for every binary of the compose stack (xds-server, authz-service, ratelimit-service
# and the demo echo-upstream); each service's `command` picks its binary. tests/tests/deploy.rs
# checks that every binary docker-compose.yml runs is built here and copied into the final stage.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and target/ between builds, so an edit rebuilds
# only what it touches. A cache mount is not part of the image, hence the copy to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin xds-server --bin authz-service --bin ratelimit-service --bin echo-upstream \
    && mkdir -p /out \
    && cp target/release/xds-server target/release/authz-service \
        target/release/ratelimit-service target/release/echo-upstream /out/

# Same Debian release as the build image, so the binaries find the glibc they were linked against.
FROM debian:bookworm-slim
# curl (and bash, for the WebSocket echo's upgrade check) runs the compose healthchecks; CA certificates let authz-service fetch `jwks_url` over https.
RUN apt-get update && apt-get install -y --no-install-recommends bash ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/xds-server /out/authz-service /out/ratelimit-service /out/echo-upstream /usr/local/bin/
# The mount point of compose's `tls` volume, owned by the user everything runs as: an empty
# volume takes the ownership of the directory it is first mounted on, so `xds-server certs` can
# write there and every service (Envoy included, run as the same user) can read its key.
RUN mkdir /tls && chown 65534:65534 /tls
# Nothing needs root: every port is above 1024 and configuration is mounted read-only.
USER 65534:65534
ENTRYPOINT []
