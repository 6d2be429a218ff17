#!/usr/bin/env bash
# Makes sure every service reelay needs is running on this machine, starting
# what is stopped and installing what is missing (Debian packages; Garage from
# crates.io), so a fresh Debian machine needs nothing by hand. Idempotent.
#   PostgreSQL 127.0.0.1:5432 (user postgres, trust), database $REELAY_DB_NAME
#   RabbitMQ   127.0.0.1:5672 (guest/guest)
#   Redis      127.0.0.1:6379
#   Garage     127.0.0.1:3900 (S3), bucket reelay, dev key (scripts/garage.sh)
#   ClickHouse 127.0.0.1:8123 (HTTP), Debian's 18.16 (scripts/clickhouse.sh)
#   ffmpeg     ffmpeg and ffprobe, which fflow runs and the tests probe with
#   tuspy      the Python tus client the tests drive
#   Node.js    npm and node, which bundle the browser code (web/)
#   Chromium   Debian's chromium and chromium-driver, with Selenium from
#              PyPI, for the browser tests
#   schemathesis  from PyPI: the contract test of the api against its
#              OpenAPI document
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DB_NAME=${REELAY_DB_NAME:-reelay}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { printf '[services] %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 150); do port_open "$1" && return 0; sleep 0.2; done
  log "nothing listens on port $1 after 30 s"; return 1
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Tools the scripts themselves use.
for tool in curl:curl openssl:openssl psql:postgresql-client python3:python3 pip3:python3-pip; do
  command -v "${tool%%:*}" >/dev/null || apt_install "${tool#*:}"
done

# PostgreSQL
if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
    # Development only: trust local TCP connections, as the dev machines do.
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  log "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  wait_port 5432
fi
if ! psql -h 127.0.0.1 -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
  log "created database $DB_NAME"
fi

# RabbitMQ
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || { log "installing RabbitMQ"; apt_install rabbitmq-server; }
  log "starting RabbitMQ"
  $SUDO rabbitmq-server -detached
  wait_port 5672
fi

# Redis
if ! port_open 6379; then
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/reelay.log
  wait_port 6379
fi

# Garage (S3)
"$here/garage.sh"

# ClickHouse (the analytics store)
"$here/clickhouse.sh"

# ffmpeg (fflow encodes with it; the tests make and probe videos with it)
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  log "installing ffmpeg"
  apt_install ffmpeg
fi

# The Python tus client used by the tests and the benchmark.
if ! python3 -c "import tusclient" 2>/dev/null; then
  log "installing tuspy"
  pip3 install -q tuspy==1.1.0 2>/dev/null || pip3 install -q --break-system-packages tuspy==1.1.0
fi
pip_install() {
  pip3 install -q "$@" 2>/dev/null || pip3 install -q --break-system-packages "$@"
}

# Node.js and npm bundle the browser code (web/).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing Node.js and npm"
  apt_install nodejs npm
fi

# The browser tests: Debian's Chromium and its driver, driven by Selenium.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi
if ! python3 -c "import selenium" 2>/dev/null; then
  log "installing selenium"
  pip_install selenium==4.27.1
fi
# schemathesis checks the live api against its OpenAPI document.
if ! python3 -c "import schemathesis" 2>/dev/null; then
  log "installing schemathesis"
  pip_install schemathesis==4.32.5
fi
log "all services up"
