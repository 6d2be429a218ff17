# One image with every binary; compose.yaml picks the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p reelay-api -p reelay-worker -p reelay-scheduler -p reelay-fflow

# The console's bundle (served by the api at /console/), from npm only.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json web/build.mjs ./
COPY web/src ./src
RUN npm ci --no-audit --no-fund --loglevel=error && node build.mjs

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/reelay-api /src/target/release/reelay-worker \
     /src/target/release/reelay-scheduler /src/target/release/reelay-fflow /usr/local/bin/
COPY --from=web /web/dist /usr/local/share/reelay/web
ENV REELAY_HTTP_ADDR=0.0.0.0:8080 REELAY_WEB_DIR=/usr/local/share/reelay/web
