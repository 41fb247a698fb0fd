# The `caption` binary in a small runtime image, serving the production version of the model
# registry mounted at /models (see "Serving" in README.md):
#
#   docker build -t caption .
#   mkdir -p serve-data
#   docker run --rm -p 8080:8080 --user "$(id -u)" -v "$PWD/registry:/models:ro" -v "$PWD/serve-data:/data" caption
#
# The registry can stay read-only: jobs, recorded requests and feedback go to the database in
# /data (keep that volume to keep them across container restarts; export the feedback with
# `caption data export-feedback --store serve-data/serve.sqlite3 --out DIR`).
#
# API keys are read from /models/keys.json unless serve.yaml says otherwise. `caption serve keys
# add` writes that file readable by its owner only, hence `--user` (the image's own user, uid
# 10001, is used otherwise). Mount a config and pass it with `--config`, e.g.
# `-v "$PWD/configs:/config:ro" caption serve --registry /models --host 0.0.0.0 --config /config/serve.yaml`.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Only what the build reads: the manifests, the lock file and the sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates ./crates
COPY src ./src
COPY configs ./configs
RUN cargo build --release --locked --bin caption

FROM debian:bookworm-slim
# The binary needs only glibc and libgcc, both in the base image.
RUN useradd --system --uid 10001 --no-create-home caption && mkdir /data && chown caption /data
COPY --from=builder /src/target/release/caption /usr/local/bin/caption
USER caption
VOLUME /data
EXPOSE 8080
# `docker stop` sends SIGTERM: the server stops accepting, answers what it has, and exits 0.
ENTRYPOINT ["caption"]
CMD ["serve", "--registry", "/models", "--store", "/data/serve.sqlite3", "--host", "0.0.0.0", "--port", "8080"]
