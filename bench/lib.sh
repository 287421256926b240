# Shared by the benchmark scripts (bench/run, bench/sinks): one backlog in
# Postgres, slots made before the load so every reader decodes the same WAL,
# and the timing of pg_recvlogical and of `weir run` until the slot's
# confirmed_flush_lsn reaches the end of the backlog (a row counts only once
# it is durable at the sink and acknowledged).
#
# A script sets SLOTS (slot names) and calls `bench_setup`, then
# `bench_load`, then `recv`/`weir` per reader, then `bench_report` and
# `bench_teardown`. Results are rows of a Markdown table.

ROWS="${ROWS:-1000000}"
UPDATES=$((ROWS / 2))
CHUNK=1000
DB="${DB:-weir_bench}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
RESULTS=()

q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / tck}' "/proc/$1/stat" 2>/dev/null || echo "?"; }
walsender() { q -d postgres -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1' AND active"; }
# Rows per second between two times, of TOTAL rows or of the count given third.
rate() { python3 -c "print(f'{${3:-$TOTAL} / ($2 - $1):,.0f}')"; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# Microseconds of CPU per row, from CPU seconds.
per_row() { python3 -c "print('-' if '$1' in ('-', '?') else f'{float(\"$1\") * 1e6 / $TOTAL:.1f}')"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# What every benchmark needs: Postgres, the servers of the demo's sinks, the
# passthrough plugin and Weir's release build. A script that needs more
# (tansu, the Python and JavaScript toolchains) sets it up itself.
bench_setup() {
  scripts/setup-demo >/dev/null
  scripts/build-plugins passthrough >/dev/null
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
  # WEIR_BIN: a `weir` binary to measure instead of this checkout's
  # release build (a build of another commit, for an A/B comparison).
  if [ -n "${WEIR_BIN:-}" ]; then
    WEIR="$WEIR_BIN"
  else
    cargo build --release -p weir --locked 2>&1 | tail -1
    WEIR="$CARGO_TARGET_DIR/release/weir"
  fi
  PASSTHROUGH="$PWD/plugins/target/wasm32-wasip2/release/passthrough.wasm"
  WORK="$(mktemp -d /tmp/weir-bench.XXXXXX)"
}

drop_slots() {
  for s in $SLOTS; do
    q -d postgres -c "SELECT pg_drop_replication_slot('$s') FROM pg_replication_slots WHERE slot_name = '$s'" >/dev/null
  done
}

# The backlog: ROWS inserts then ROWS/2 updates into a 10-column table, in
# transactions of CHUNK rows.
bench_load() {
  drop_slots
  q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  q -d $DB <<SQL
CREATE TABLE bench (
  id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL, note varchar(64), created_at timestamptz NOT NULL,
  flag bool NOT NULL, score float8, ref uuid, qty int8
);
CREATE PUBLICATION bench_pub FOR TABLE bench;
-- A publication the backlog's table is not in: what a walsender spends on
-- changes it filters out (bench/run).
CREATE TABLE other (id bigint PRIMARY KEY);
CREATE PUBLICATION other_pub FOR TABLE other;
SQL
  for s in $SLOTS; do
    q -d $DB -c "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
  done
  echo "loading $ROWS inserts + $UPDATES updates in transactions of $CHUNK rows..."
  q -d $DB <<SQL
DO \$\$
BEGIN
  FOR c IN 0..($ROWS / $CHUNK - 1) LOOP
    INSERT INTO bench
    SELECT g, g % 1000, (g % 100000) / 100.0, 'status-' || (g % 7), 'note for row ' || g,
           timestamptz '2026-01-01' + g * interval '1 second', g % 2 = 0, g / 3.0,
           md5(g::text)::uuid, g * 10
    FROM generate_series(c * $CHUNK + 1, (c + 1) * $CHUNK) g;
    COMMIT;
  END LOOP;
  FOR c IN 0..($UPDATES / $CHUNK - 1) LOOP
    UPDATE bench SET status = 'updated', amount = amount + 1
    WHERE id BETWEEN c * $CHUNK + 1 AND (c + 1) * $CHUNK;
    COMMIT;
  END LOOP;
END
\$\$;
SQL
  END_LSN="$(q -d $DB -c 'SELECT pg_current_wal_lsn()')"
  TOTAL=$((ROWS + UPDATES))
  echo "backlog ends at $END_LSN"
}

recv() { # label slot binary [publication]
  local t0 t1 pid ws="" ws_cpu="?"
  t0=$(now)
  pg_recvlogical -d $DB --slot "$2" --start --endpos "$END_LSN" --no-loop -f /dev/null \
    -o proto_version=1 -o publication_names="${4:-bench_pub}" -o binary="$3" &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    [ -z "$ws" ] && ws="$(walsender "$2")"
    [ -n "$ws" ] && ws_cpu="$(cpu "$ws")"
    sleep 0.1
  done
  wait $pid
  t1=$(now)
  RESULTS+=("$1|$(secs $t0 $t1)|$(rate $t0 $t1)|-|-|-|$ws_cpu")
}

# The configuration of a `weir` run: slot $1, sinks $2, more source settings $3.
weir_config() {
  cat <<TOML
[source]
database = "$DB"
slot = "$1"
publication = "bench_pub"
tables = ["public.bench"]
create_slot = false
create_publication = false
status_interval = "1s"
${3:-}

[[transforms]]
path = "$PASSTHROUGH"

$2
TOML
}

weir() { # label slot sink-toml [more source settings]
  local t0 t1 pid rss conf="$WORK/$2.toml"
  weir_config "$2" "$3" "${4:-}" >"$conf"
  t0=$(now)
  # WEIR_UNDER: a command Weir runs under (bench/callgrind: valgrind).
  ${WEIR_UNDER:-} "$WEIR" run --config "$conf" 2>"$WORK/$2.log" &
  pid=$!
  local perf_pid=""
  if [ -n "${PROFILE:-}" ] && [ "$2" = "${PROFILE_SLOT:-}" ]; then
    perf record -q -F 499 -g -p $pid -o "$WORK/perf.data" 2>/dev/null &
    perf_pid=$!
  fi
  local ws="" ws_cpu="?"
  while :; do
    [ -z "$ws" ] && ws="$(walsender "$2")"
    [ -n "$ws" ] && ws_cpu="$(cpu "$ws")"
    local flushed
    flushed="$(q -d postgres -c "SELECT confirmed_flush_lsn >= '$END_LSN' FROM pg_replication_slots WHERE slot_name = '$2'")"
    [ "$flushed" = t ] && break
    kill -0 $pid 2>/dev/null || { cat "$WORK/$2.log"; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  rss="$(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$pid/status)"
  local weir_cpu
  weir_cpu="$(cpu $pid)"
  [ -n "$ws" ] && ws_cpu="$(cpu "$ws")"
  kill -TERM $pid; wait $pid || true
  if [ -n "$perf_pid" ]; then
    wait $perf_pid 2>/dev/null || true
    perf report -i "$WORK/perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null \
      | grep -v '^#' | grep '%' | head -40 >"$WORK/profile.txt" || true
    echo "== top of Weir's profile ($2)"; cat "$WORK/profile.txt"
  fi
  RESULTS+=("$1|$(secs $t0 $t1)|$(rate $t0 $t1)|$rss|$weir_cpu|$(per_row "$weir_cpu")|$ws_cpu")
}

# A server's own bulk load: `ceiling LABEL ROWS COMMAND...` times the
# command, which must load ROWS rows (the final rows of the backlog are
# fewer than its TOTAL changes, so the count is the caller's to give).
ceiling() { # label rows command...
  local label=$1 rows=$2 t0 t1
  shift 2
  t0=$(now)
  "$@"
  t1=$(now)
  RESULTS+=("$label|$(secs $t0 $t1)|$(rate $t0 $t1 $rows)|-|-|-|-")
}

bench_report() {
  echo
  echo "Weir's times include its start-up (connecting, compiling the plugin)."
  echo "| reader | seconds | rows/s | Weir peak RSS | Weir CPU s | Weir CPU µs/row | walsender CPU s |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for r in "${RESULTS[@]}"; do echo "| ${r//|/ | } |"; done
}

bench_teardown() {
  drop_slots
  q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
}
