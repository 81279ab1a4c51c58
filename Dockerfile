# The flotilla server image: a multi-stage build (the Rust toolchain only in
# the build stage), a small Debian runtime, a non-root user.
#
#   docker build -t flotilla .
#   docker run -p 127.0.0.1:3000:3000 -v flotilla-data:/var/lib/flotilla \
#     -e FLOTILLA_AUTH=tokens -e 'FLOTILLA_TOKENS=[{token="<secret>",owner="admin",role="admin"}]' flotilla
#
# Without a registry, make the base image locally first and pass it:
# test-support/image/build.sh (debootstrap + docker import) does both.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG RUST_VERSION=1.95.0
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# Extra CA certificates (PEM, base64-encoded) for a TLS-intercepting proxy
# between the build and the Rust and crates registries; empty by default.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "${EXTRA_CA_CERTS}" ]; then \
      echo "${EXTRA_CA_CERTS}" | base64 -d > /usr/local/share/ca-certificates/build-extra.crt \
      && update-ca-certificates; \
    fi
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo \
    PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN curl -sSf -o /tmp/rustup-init \
      "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init" \
 && chmod +x /tmp/rustup-init \
 && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" \
 && rm /tmp/rustup-init
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flotilla-http --bin flotilla \
 && install -m 0755 target/release/flotilla /usr/local/bin/flotilla \
 && rm -rf target

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/flotilla --create-home \
      --shell /usr/sbin/nologin flotilla
COPY --from=build /usr/local/bin/flotilla /usr/local/bin/flotilla
USER 10001:10001
WORKDIR /var/lib/flotilla
# Inside a container the server listens on every interface of the
# container's network; a non-loopback address needs authentication
# (FLOTILLA_AUTH=tokens) or, knowingly, --insecure-listen.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    FLOTILLA_DATA_DIR=/var/lib/flotilla FLOTILLA_LISTEN=0.0.0.0:3000
VOLUME ["/var/lib/flotilla"]
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["serve"]
