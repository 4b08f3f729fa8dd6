#!/bin/bash
# Instructions the whole leansip server spends per REGISTER / digest registration / proxied call, counted by
# callgrind (valgrind): repeatable where CPU time on this shared VM moves by a third between runs.
#
#   bash bench/tools/callgrind_server.sh register|register-auth|stateless|stateful|stateful-script [N] [REPO]
#   SERVER=kamailio bash bench/tools/callgrind_server.sh ...   (the same count for Kamailio, all its processes)
#
# Two runs of the server under callgrind: one with the warm-up only, one with the warm-up and N more; the
# difference over N is the cost of one, start-up and warm-up cancelled out. REGISTER: 1,000 users registered
# first, then N refreshes of the same users (what the benchmark's fixed step mostly is). Calls: a callee
# registered, then 100 (or 100 + N) calls at 50/s, with 40 s after them, so the work of ending every
# transaction (32 s timers) is counted. REPO (default: this checkout) lets two checkouts be compared.
# SERVER=kamailio counts Kamailio with the benchmark's config for the scenario instead (-n 1 -x tlsf as in the
# benchmark, but -m 256: valgrind with 2 GB of shared memory is slow to start; the slow rates here need little),
# summing the instructions of every process it forks (main, the UDP worker, timers): a ratio of instructions
# per request that the host's load does not move.
# STORE=memory (default) | durable | relaxed | redis picks leansip's location store: SQLite with
# --durability durable (group commit) or relaxed (write-behind), or Redis (a redis-server started here, emptied
# before each run). Every thread of the server is counted (the SQLite writer, the Redis link), not redis-server.
# CALL_RATE (default 50 calls/s): lower it on a busy host, where a slowed server makes SIPp retransmit and the
# retransmissions are counted as the calls' work.
# EXTRA="--no-calls" adds flags to leansip's command line (a switch's cost: run with and without it).
# Needs valgrind and sipp; takes a few minutes.
set -euo pipefail
scenario=${1:?register, register-auth, stateless, stateful or stateful-script}
n=${2:-1000}
repo=$(cd "${3:-$(dirname "$0")/../..}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((47000 + RANDOM % 2000))
users="$work/users.txt"
python3 -c "import sys; sys.stdout.write(''.join(f'user{i}:pass{i}\n' for i in range(1000)) + 'callee:callee\n')" > "$users"
head -1001 "$here/sipp/users.csv" > "$work/users.csv"

store=()
case ${STORE:-memory} in
  memory) store=(--location memory) ;;
  durable|relaxed) store=(--location sqlite --durability "$STORE") ;;
  redis)
    rport=$((port + 20))
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" 2>&1 &
    redis_pid=$!
    trap 'kill $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
    for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    store=(--location redis --redis-url "redis://127.0.0.1:$rport/0") ;;
  *) echo "unknown STORE $STORE (memory, durable, relaxed or redis)" >&2; exit 2 ;;
esac

case $scenario in
  register) flags=(--mode registrar --no-auth); cfg=registrar ;;
  register-auth) flags=(--mode registrar --auth --auth-algorithms MD5); cfg=registrar-auth ;;
  stateless) flags=(--mode proxy --stateless --no-auth); cfg=proxy-stateless ;;
  stateful) flags=(--mode proxy --stateful --no-auth); cfg=proxy-stateful ;;
  # the stateful call through a route script doing what the built-in proxy does (leansip only)
  stateful-script) flags=(--mode proxy --stateful --no-auth --routes "$repo/bench/routes/proxy.py"); cfg=proxy-stateful ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac

total() { # COUNT: instructions of one server run that handles the warm-up and COUNT more
  local count=$1 out="$work/cg.$1" log="$work/server.$1.log"
  [ "${STORE:-memory}" = redis ] && redis-cli -p "$rport" flushall >/dev/null
  if [ "${SERVER:-leansip}" = kamailio ]; then
    (cd "$work" && exec valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p" \
      /usr/sbin/kamailio -DD -E -f "$here/kamailio/$cfg.cfg" -l "udp:127.0.0.1:$port" -n 1 -m 256 -M 16 \
      -x tlsf > "$log" 2>&1) &
  else
    (cd "$work" && PYTHONHASHSEED=0 LEANSIP_SECRET=callgrind-secret-0123456789 exec valgrind --tool=callgrind \
      --callgrind-out-file="$out.main" "$repo/.venv/bin/python" -m leansip serve --listen "udp:127.0.0.1:$port" \
      "${flags[@]}" ${EXTRA:-} --users "$users" "${store[@]}" --db "$work/store.$count.db" --workers 1 --fail-slow-after 0 \
      --fail-block-after 0 --admin off --log-level error --realm 127.0.0.1 > "$log" 2>&1) &
  fi
  local server=$!
  # leansip prints "listening"; Kamailio its socket list (then it is a few seconds from answering under valgrind)
  for _ in $(seq 120); do grep -q "listening\|Aliases" "$log" 2>/dev/null && break; sleep 0.5; done
  sleep 3
  local sipp=(sipp "127.0.0.1:$port")
  case $scenario in
    register|register-auth)
      "${sipp[@]}" -sf "$here/sipp/$scenario.xml" -inf "$work/users.csv" -m 1000 -r 200 -p $((port + 1)) >/dev/null 2>&1
      if [ "$count" -gt 0 ]; then
        "${sipp[@]}" -sf "$here/sipp/$scenario.xml" -inf "$work/users.csv" -m "$count" -r 200 -p $((port + 1)) >/dev/null 2>&1
      fi ;;
    *)
      (cd "$work" && "${sipp[@]}" -sf "$here/sipp/uas-call.xml" -p $((port + 2)) -bg >/dev/null 2>&1)
      (cd "$work" && "${sipp[@]}" -sf "$here/sipp/register-callee.xml" -p $((port + 3)) -m 1 -s callee \
        -key callee_port $((port + 2)) >/dev/null 2>&1)
      (cd "$work" && "${sipp[@]}" -sf "$here/sipp/uac-call.xml" -s callee -m $((100 + count)) -r "${CALL_RATE:-50}" \
        -p $((port + 1)) >/dev/null 2>&1)
      sleep 40
      pkill -f "sipp 127.0.0.1:$port" || true ;;
  esac
  kill -INT "$server"; wait "$server" || true
  sleep 2  # Kamailio's children write their counts as they exit
  local f sum=0
  for f in "$out".*; do
    sum=$((sum + $(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')))
  done
  echo "$sum"
}

base=$(total 0)
more=$(total "$n")
case $scenario in register) unit="REGISTER" ;; register-auth) unit="registration (401 + 200)" ;; *) unit="call" ;; esac
echo "$scenario: $(( (more - base) / n )) instructions per $unit (N=$n, store ${STORE:-memory}, $repo)"
