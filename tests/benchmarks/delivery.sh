#!/usr/bin/env bash
# What a change costs delivery, before against after:
#
#   tests/benchmarks/delivery.sh [--postgres] [--events N] [--pairs N] BEFORE AFTER
#
# BEFORE and AFTER are two price-alertd binaries (a release build of each
# tree: `git worktree add /tmp/before REV && cargo build --release` there).
# An outbox of N pending events (50,000) is made once, by BEFORE's schema
# (AFTER migrates its copy when it opens it: that is outside delivery_ms),
# then each binary delivers a fresh copy of it with `run-job purge` (a purge
# job with nothing to purge: the run is the delivery) to an nginx location
# that answers 204, at webhook.concurrency = 16, in turn: BEFORE AFTER
# BEFORE AFTER ..., PAIRS times (12). Printed: each run's delivery_ms (the
# daemon's own figure), the process's CPU seconds and wall seconds, then
# the medians and AFTER / BEFORE of each. Alternating pairs, because this
# machine's speed drifts by ±10% over minutes.
#
# SQLite by default; --postgres runs the same on a throwaway PostgreSQL
# cluster (Debian's server, fsync off as the tests run it), each run on a
# fresh `CREATE DATABASE ... TEMPLATE` copy. Needs nginx, sqlite3, psql and
# GNU time (`tests/run` installs the first three; `apt-get install time`).
set -euo pipefail

engine=sqlite events=50000 pairs=12
while [ $# -gt 2 ]; do
    case "$1" in
        --postgres) engine=postgresql; shift ;;
        --events) events=$2; shift 2 ;;
        --pairs) pairs=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
[ $# -eq 2 ] || { sed -n '2,20p' "$0" >&2; exit 64; }
before=$(realpath "$1") after=$(realpath "$2")
for tool in nginx /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 69; }
done

work=$(mktemp -d /tmp/price-alertd-delivery.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$work/pg/data/postmaster.pid" ]; then
        as_postgres "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The receiver: nginx answering 204 to every POST, its workers ending with it.
relay_port=$(free_port)
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work;
    server {
        listen 127.0.0.1:$relay_port;
        location / { return 204; }
    }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 50); do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$relay_port/" && break
    sleep 0.1
done

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --clear-groups "$@"
    else
        "$@"
    fi
}

config() { # config FILE DATABASE-LINE
    cat > "$1" <<EOF
[database]
$2
[webhook]
url = "http://127.0.0.1:$relay_port/events"
concurrency = 16
drain_timeout = "10m"
[[jobs]]
name = "purge"
kind = "purge"
schedule = "@daily"
keep = "365d"
EOF
}

# The events: as the daemon queues them, N of them for 1,000 users.
events_sql() {
    cat <<EOF
INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, user_id)
SELECT event_id, i,
       '{"event_id":"' || event_id || '","type":"price_alert.triggered","alert_id":' || i
       || ',"user_id":"user-' || (i % 1000) || '","ticker":"T' || (i % 1000)
       || '","condition":"above","target_price":100.0,"price":101.25,"previous_price":99.5,'
       || '"triggered_at":"2026-12-05T21:00:00.000Z","quote_at":"2026-12-05T20:59:59.500Z",'
       || '"note":"n","trigger_count":1}',
       '2026-12-05T21:00:00.000Z', 0, 'user-' || (i % 1000)
FROM (SELECT i, 'pa_bench_' || i AS event_id FROM $1) AS numbered;
EOF
}

case $engine in
    sqlite)
        command -v sqlite3 >/dev/null || { echo "needs sqlite3" >&2; exit 69; }
        config "$work/template.toml" "path = \"$work/template.db\""
        config "$work/run.toml" "path = \"$work/run.db\""
        "$before" --config "$work/template.toml" run-job purge >/dev/null
        sqlite3 "$work/template.db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $events)
            $(events_sql n); PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
        fresh() { rm -f "$work"/run.db*; cp "$work/template.db" "$work/run.db"; }
        ;;
    postgresql)
        command -v psql >/dev/null || { echo "needs psql" >&2; exit 69; }
        pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
        mkdir "$work/pg"
        [ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
        as_postgres "$pgbin/initdb" -D "$work/pg/data" -A trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null
        pg_port=$(free_port)
        as_postgres "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w start -o \
            "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB" >/dev/null
        admin() { PGOPTIONS="-c client_min_messages=warning" psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
        admin -d postgres -c "CREATE DATABASE template_run"
        config "$work/template.toml" "url = \"postgresql://postgres@127.0.0.1:$pg_port/template_run?sslmode=disable\""
        config "$work/run.toml" "url = \"postgresql://postgres@127.0.0.1:$pg_port/run?sslmode=disable\""
        "$before" --config "$work/template.toml" run-job purge >/dev/null
        admin -d template_run -c "$(events_sql "generate_series(1, $events) AS i")" -c "VACUUM ANALYZE outbox" >/dev/null
        fresh() {
            admin -d postgres -c "DROP DATABASE IF EXISTS run WITH (FORCE)" -c "CREATE DATABASE run TEMPLATE template_run"
        }
        ;;
esac

# One delivery: "delivery_ms cpu_s wall_s" on stdout.
deliver() {
    fresh
    local out
    out=$( { /usr/bin/time -f "time %U %S %e" "$1" --config "$work/run.toml" run-job purge; } 2>&1 )
    local delivered=$(grep -o ' delivered=[0-9]*' <<<"$out" | cut -d= -f2)
    if [ "$delivered" != "$events" ]; then
        echo "$1 delivered ${delivered:-nothing} of $events: $out" >&2
        exit 70
    fi
    local ms=$(grep -o 'delivery_ms=[0-9]*' <<<"$out" | cut -d= -f2)
    grep '^time ' <<<"$out" | awk -v ms="$ms" '{ printf "%d %.2f %.2f\n", ms, $2 + $3, $4 }'
}

echo "$engine: $events events, $pairs pairs; before $before, after $after"
printf '%6s %28s %28s\n' pair "before: ms cpu_s wall_s" "after: ms cpu_s wall_s"
for pair in $(seq "$pairs"); do
    b=$(deliver "$before")
    a=$(deliver "$after")
    echo "$b" >> "$work/before"
    echo "$a" >> "$work/after"
    printf '%6d %28s %28s\n' "$pair" "$b" "$a"
done

median() { # median FILE COLUMN
    cut -d' ' -f"$2" "$1" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for column in 1:delivery_ms 2:cpu_s 3:wall_s; do
    n=${column%%:*} name=${column#*:}
    b=$(median "$work/before" "$n") a=$(median "$work/after" "$n")
    awk -v name="$name" -v b="$b" -v a="$a" \
        'BEGIN { printf "median %-12s before %9.2f  after %9.2f  after/before %.3f\n", name, b, a, a / b }'
done
paste -d' ' "$work/before" "$work/after" | awk '{ d += $4 / $1; c += $5 / $2 } END {
    printf "mean of the pairs'"'"' after/before: delivery_ms %.3f, cpu %.3f\n", d / NR, c / NR }'
