# One image with every binary; compose.yaml picks the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p reelay-api -p reelay-worker -p reelay-scheduler -p reelay-fflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/reelay-api /src/target/release/reelay-worker \
     /src/target/release/reelay-scheduler /src/target/release/reelay-fflow /usr/local/bin/
ENV REELAY_HTTP_ADDR=0.0.0.0:8080
