#!/usr/bin/env bash
# Starts ClickHouse (the analytics store) if it is not running: installs
# Debian's clickhouse-server and clickhouse-client when missing (bookworm
# ships 18.16; its postinstall expects systemd, so we never use its
# service) and runs it with the project's own config and data folder,
# HTTP on 127.0.0.1:8123. Idempotent. Data lives under $REELAY_CLICKHOUSE_DIR.
set -euo pipefail

DIR=${REELAY_CLICKHOUSE_DIR:-/var/lib/reelay-clickhouse}
PORT=${REELAY_CLICKHOUSE_PORT:-8123}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
log() { printf '[clickhouse] %s\n' "$*"; }
up() { curl -fsS "http://127.0.0.1:$PORT/ping" >/dev/null 2>&1; }

if up; then
  log "ready: http://127.0.0.1:$PORT"
  exit 0
fi
if ! command -v clickhouse-server >/dev/null; then
  log "installing clickhouse-server and clickhouse-client (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    clickhouse-server clickhouse-client >/dev/null
fi

$SUDO mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/log" "$DIR/format_schemas"
cat > "$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$DIR/log/clickhouse-server.log</log>
        <errorlog>$DIR/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <http_port>$PORT</http_port>
    <tcp_port>${REELAY_CLICKHOUSE_TCP_PORT:-9004}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
cat > "$DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- A query a client gave up on keeps running; none of ours
                 needs a minute. -->
            <max_execution_time>60</max_execution_time>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML

log "starting clickhouse-server (log: $DIR/log)"
nohup clickhouse-server --config-file="$DIR/config.xml" >>"$DIR/log/stdout.log" 2>&1 &
for _ in $(seq 1 150); do
  up && { log "ready: http://127.0.0.1:$PORT"; exit 0; }
  sleep 0.2
done
log "clickhouse did not start; see $DIR/log"
exit 1
