#!/usr/bin/env bash
# Starts a single-node Garage (our S3) if it is not running: installs it from
# crates.io if missing (about 12 minutes on 2 cores, once per machine), writes
# its config, assigns the layout, imports the fixed dev key and creates the
# bucket. Idempotent. Data lives under $REELAY_GARAGE_DIR.
set -euo pipefail

GARAGE_VERSION=2.5.0
DIR=${REELAY_GARAGE_DIR:-/var/lib/reelay-garage}
BUCKET=${REELAY_S3_BUCKET:-reelay}
# Must match DEV_S3_ACCESS_KEY_ID / DEV_S3_SECRET_ACCESS_KEY in shared/src/config.rs.
KEY_ID=${REELAY_S3_ACCESS_KEY_ID:-GK0123456789abcdef01234567}
SECRET=${REELAY_S3_SECRET_ACCESS_KEY:-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}
CONFIG=$DIR/garage.toml
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[garage] %s\n' "$*"; }

if ! command -v garage >/dev/null || ! garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  log "installing garage $GARAGE_VERSION from crates.io (slow, once per machine)"
  cargo install garage --version "$GARAGE_VERSION" --locked
fi

mkdir -p "$DIR/meta" "$DIR/data"
if [ ! -f "$CONFIG" ]; then
  cat > "$CONFIG" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(openssl rand -hex 32 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
TOML
fi
g() { garage -c "$CONFIG" "$@"; }

if ! g status >/dev/null 2>&1; then
  log "starting garage server (log: $DIR/garage.log)"
  nohup garage -c "$CONFIG" server >>"$DIR/garage.log" 2>&1 &
  for _ in $(seq 1 100); do
    g status >/dev/null 2>&1 && break
    sleep 0.2
  done
  g status >/dev/null 2>&1 || { log "garage did not start; see $DIR/garage.log"; exit 1; }
fi

if g status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
  node=$(g node id -q | cut -d@ -f1)
  g layout assign -z dc1 -c 10G "$node" >/dev/null
  g layout apply --version $(( $(g layout show 2>/dev/null | sed -n 's/.*Current cluster layout version: \([0-9]*\).*/\1/p') + 1 )) >/dev/null
  log "layout applied"
fi

if ! g key info "$KEY_ID" >/dev/null 2>&1; then
  g key import --yes -n reelay-dev "$KEY_ID" "$SECRET" >/dev/null
  log "imported dev key $KEY_ID"
fi
if ! g bucket info "$BUCKET" >/dev/null 2>&1; then
  g bucket create "$BUCKET" >/dev/null
  log "created bucket $BUCKET"
fi
g bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null
# The S3 endpoint answers once the layout is live.
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3900/ || true)
  [ "$code" != "000" ] && break
  sleep 0.2
done
# Browsers play what the api presigns: the bucket's CORS rule
# (REELAY_CORS_ORIGINS, default *).
REELAY_S3_BUCKET=$BUCKET REELAY_S3_ACCESS_KEY_ID=$KEY_ID REELAY_S3_SECRET_ACCESS_KEY=$SECRET \
  "$(dirname "$0")/bucket-cors.sh" >/dev/null
log "ready: s3 http://127.0.0.1:3900 bucket $BUCKET key $KEY_ID, CORS for ${REELAY_CORS_ORIGINS:-*}"
