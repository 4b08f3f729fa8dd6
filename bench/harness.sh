#!/usr/bin/env bash
# Copied from /work/shared/bench/run.sh (the Kamailio anchor harness, see ANCHOR.md), adapted for leansip:
#  - server CPU is also read in nanoseconds from /proc/<pid>/task/*/schedstat (server_ns, srv_us_per_call),
#    because tick counts (10 ms) are too coarse for a few-microsecond-per-call server at 1000/s;
#  - a "fixed" step at FIXED_RATE (the same rate for every server) for a like-for-like CPU cost;
#  - FIXED_ONLY=1 skips latency and ladder (used by the memory/profile helpers).
# Called by bench/bench.py (the `make bench` / `leansip bench` driver); it can still be run by hand.
# Generic SIPp benchmark harness for ANY SIP server listening on 127.0.0.1 (UDP).
#
#   TARGET=127.0.0.1:47060 ./run.sh register            # REGISTER, no auth
#   TARGET=127.0.0.1:47060 ./run.sh register-auth       # REGISTER / 401 / REGISTER+digest / 200
#   TARGET=127.0.0.1:47060 ./run.sh call                # registers CALLEE -> UAS sipp, then calls via proxy
#
# For each scenario: (1) a rate ladder: sipp -r RATE -m RATE*STEP_SECS for each RATE in RATES,
# stopping at the first step with failed calls, retransmissions, or achieved rate < 95% of target;
# (2) a fixed-rate latency run (LAT_RATE/s for LAT_SECS s) with -trace_rtt (sipp RTT has 1 ms resolution)
# plus tools/latprobe.py (microsecond resolution, closed loop, LAT_RATE/s; PROBE_ROUNDS rounds) unless NO_PROBE=1.
#
# Environment (defaults in brackets):
#   TARGET      server ip:port (required, must be 127.0.0.1)
#   SERVER_PID  main pid of the server; CPU% of it + its children is reported per step  [none]
#   RATES       ladder  ["1000 2000 3000 4000 6000 8000 12000 16000 24000 32000 48000 64000"]
#   REFINE      bisection steps between last pass and first fail [2]; SETTLE s of idle before each [8]
#   STEP_SECS   seconds per ladder step [5]      LAT_RATE [500]   LAT_SECS [10]   PROBE_ROUNDS [3]
#   SIPP_CPU    core for sipp (uac and uas) [0]  (pin the server to the other core yourself)
#   SIPP_PORT   first local UDP port for sipp; uses +0 (uac), +1 (uas), +2 (callee registration), +3/+4 (latprobe) [47100]
#   UAS         callee scenario: uas-call (INVITE->180->200) or uas-call-no180 (for multi-worker servers) [uas-call]
#   CALLEE      user part the call scenario registers and calls [callee]
#   MIN_CALLS   min -m per ladder step [500]   LADDER_RTT  sipp RTT on ladder steps [1]
#   FIXED_RATE  rate of the fixed-rate CPU step [1000]   FIXED_SECS [STEP_SECS]   FIXED_ROUNDS [1]
#   FIXED_DRAIN seconds after the fixed step whose server CPU counts for it (work the calls leave behind) [0]
#   ADMIN_URL   leansip's admin endpoint (http://127.0.0.1:PORT): each step's RESULT line then also carries the
#               server's own figures for the step (tools/loopstat.py: handler_us, and with --bare busy_frac and
#               busy_us_per_call) [none]      FLOW  the step-timing flow of the scenario (register|invite) [auto]
#   LOAD_PROBE_RATE  rate of a tools/latprobe.py run beside each ladder step (its p50/p99 in us under the step's
#               load: lp_p50_us, lp_p99_us; SIPp's RTT has a ~4 ms clock), on SIPP_PORT+5/+6; 0 = none [100]
#   OUT         results directory [results/<date>-<label>]     LABEL  free text tag [server]
# Every sipp is bounded by -m, sipp -timeout and coreutils timeout. Output: lines starting with RESULT
# (key=value), also appended to $OUT/results.txt.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
SC="$HERE/sipp"
export LC_ALL=C
: "${TARGET:?set TARGET=127.0.0.1:PORT}"
case "$TARGET" in 127.0.0.1:*) ;; *) echo "TARGET must be 127.0.0.1:PORT" >&2; exit 2;; esac
RATES="${RATES:-1000 2000 3000 4000 6000 8000 12000 16000 24000 32000 48000 64000}"
REFINE="${REFINE:-2}"
SETTLE="${SETTLE:-8}"
STEP_SECS="${STEP_SECS:-5}"
LAT_RATE="${LAT_RATE:-500}"
LAT_SECS="${LAT_SECS:-10}"
PROBE_ROUNDS="${PROBE_ROUNDS:-3}"
SIPP_CPU="${SIPP_CPU:-0}"
SIPP_PORT="${SIPP_PORT:-47100}"
CALLEE="${CALLEE:-callee}"
UAS="${UAS:-uas-call}"
LABEL="${LABEL:-server}"
OUT="${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)-$LABEL}"
SERVER_PID="${SERVER_PID:-}"
FIXED_RATE="${FIXED_RATE:-1000}"
MIN_CALLS="${MIN_CALLS:-500}"   # smallest -m of a ladder step (the anchor used 2000)
# LADDER_RTT=1: sipp -trace_rtt on every ladder step too (p50/p99 in ms per step, for latency-vs-load plots;
# sipp's RTT clock is coarse, ~4 ms). The rtt files are deleted after parsing.
LADDER_RTT_ARGS=""; [ "${LADDER_RTT:-1}" = 1 ] && LADDER_RTT_ARGS="-trace_rtt -rtt_freq 1000"
FIXED_SECS="${FIXED_SECS:-$STEP_SECS}"
FIXED_ROUNDS="${FIXED_ROUNDS:-1}"
mkdir -p "$OUT"
TCK=$(getconf CLK_TCK)
COMMON=(-i 127.0.0.1 -nostdin -buff_size 4194304 -recv_timeout 5000 -trace_stat -fd 1)
UAS_PID=""
case " $* " in *" register"*) FLOW="${FLOW:-register}" ;; *) FLOW="${FLOW:-invite}" ;; esac

log() { echo "$*" | tee -a "$OUT/results.txt"; }

# utime+stime ticks of a pid and its direct children (kamailio forks workers from main)
tree_ticks() {
  local p=$1 t=0 f
  [ -z "$p" ] && { echo 0; return; }
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    # fields after the ") " : state ppid ... utime(14) stime(15)
    local rest=${line##*) }
    set -- $rest
    local pid=${f#/proc/}; pid=${pid%/stat}
    if [ "$pid" = "$p" ] || [ "$2" = "$p" ]; then t=$((t + ${12} + ${13})); fi
  done
  echo $t
}
# CPU nanoseconds (schedstat: exact, not tick-sampled) of a pid's threads and its direct children's threads
tree_ns() {
  local p=$1 t=0 f line pid
  [ -z "$p" ] && { echo 0; return; }
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    local rest=${line##*) }
    set -- $rest
    pid=${f#/proc/}; pid=${pid%/stat}
    if [ "$pid" = "$p" ] || [ "$2" = "$p" ]; then
      for g in /proc/$pid/task/*/schedstat; do
        { read -r a _ < "$g"; } 2>/dev/null && t=$((t + a))
      done
    fi
  done
  echo $t
}
pid_ticks() { local p=$1; [ -z "$p" ] || [ ! -r /proc/$p/stat ] && { echo 0; return; }
  local line; { read -r line < /proc/$p/stat; } 2>/dev/null || { echo 0; return; }; local rest=${line##*) }; set -- $rest; echo $(( ${12} + ${13} )); }
# idle jiffies of the whole machine (2 CPUs); host_busy = 100*NCPU - idle% (tick-sampled busy fields under-count
# short bursts on this tickless VM, the idle counter is exact). Compare host_busy with our own cpu to spot foreign load.
NCPU=$(nproc)
host_idle() { local c u n s i w _; read -r c u n s i w _ < /proc/stat; echo "$((i+w))"; }
pct_of() { python3 -c "print(f'{100.0*$1/$TCK/$2:.0f}')"; }

# run_step SCENARIO RATE M TAG [extra sipp args...]  -> sets STEP_* vars
run_step() {
  local sc=$1 rate=$2 m=$3 tag=$4; shift 4
  local dir="$OUT/$tag"; mkdir -p "$dir"
  local tmax=$(( m / rate + 20 ))
  local s0 u0 w0 w1 s1 u1
  STEP_SNAP=""
  [ -n "${ADMIN_URL:-}" ] && STEP_SNAP=$(python3 "$HERE/tools/loopstat.py" snap "$ADMIN_URL" "$FLOW")
  s0=$(tree_ticks "$SERVER_PID"); u0=$(pid_ticks "$UAS_SIPP_PID"); local n0; n0=$(tree_ns "$SERVER_PID")
  w0=$(date +%s.%N); local h0; h0=$(host_idle)
  ( cd "$dir" && TIMEFORMAT='%R %U %S' && { time taskset -c "$SIPP_CPU" timeout $((tmax + 10)) \
      sipp "$TARGET" -sf "$SC/$sc.xml" "${COMMON[@]}" -p "$SIPP_PORT" -stf stat.csv \
      -m "$m" -r "$rate" -l 20000 -timeout "$tmax" "$@" > sipp.out 2> sipp.err; echo $? > rc; } 2> time.txt )
  w1=$(date +%s.%N); local h1; h1=$(host_idle)
  STEP_HOST_BUSY=$(python3 -c "print(f'{max(0,100*$NCPU-100*($h1-$h0)/$TCK/($w1-$w0)):.0f}')")
  s1=$(tree_ticks "$SERVER_PID"); u1=$(pid_ticks "$UAS_SIPP_PID"); local n1; n1=$(tree_ns "$SERVER_PID")
  STEP_SRV_NS=$((n1 - n0))
  echo "cd $dir; taskset -c $SIPP_CPU sipp $TARGET -sf $SC/$sc.xml ${COMMON[*]} -p $SIPP_PORT -stf stat.csv -m $m -r $rate -l 20000 -timeout $tmax $*" > "$dir/cmd.txt"
  local wall; wall=$(python3 -c "print(f'{$w1-$w0:.3f}')"); STEP_WALL=$wall
  read -r STEP_OK STEP_FAILED STEP_RETR STEP_ELAPSED STEP_CREATED < <(python3 "$HERE/tools/sippstat.py" stat "$dir/stat.csv" 2>/dev/null || echo "0 -1 -1 1 0")
  STEP_RC=$(cat "$dir/rc")
  STEP_ACH=$(python3 -c "print(f'{$STEP_OK/max($STEP_ELAPSED,0.001):.0f}')")
  STEP_US_PER_CALL=$(python3 -c "print(f'{$STEP_SRV_NS/1000/max($STEP_OK,1):.1f}')")
  read -r _r su ss < "$dir/time.txt"
  STEP_SIPP_CPU=$(python3 -c "print(f'{100*($su+$ss)/$wall:.0f}')")
  STEP_OWN=""
  [ -n "$STEP_SNAP" ] && STEP_OWN=$(python3 "$HERE/tools/loopstat.py" diff "$ADMIN_URL" "$FLOW" "$STEP_SNAP" "$STEP_OK")
  STEP_SRV_CPU=$(pct_of $((s1 - s0)) "$wall")
  STEP_UAS_CPU=$(pct_of $((u1 - u0)) "$wall")
}

LOAD_PROBE_RATE="${LOAD_PROBE_RATE:-100}"
load_probe_start() { # PROBE-MODE SECS: a low-rate latency probe beside a ladder step (its us latency under the load)
  LP_PID=""
  [ "$LOAD_PROBE_RATE" -gt 0 ] || return 0
  taskset -c "$SIPP_CPU" timeout $(($2 + 30)) python3 "$HERE/tools/latprobe.py" --mode "$1" --seed $((RANDOM + 100)) \
    --target "$TARGET" --rate "$LOAD_PROBE_RATE" --secs "$2" --port $((SIPP_PORT + 5)) --callee "$CALLEE-load" \
    > "$OUT/load-probe.txt" 2>&1 &
  LP_PID=$!
}
load_probe_end() { # -> LP_FIGS: the probe's first figure as lp_p50_us= lp_p99_us=
  LP_FIGS=""
  [ -n "$LP_PID" ] || return 0
  wait "$LP_PID"
  LP_FIGS=$(tail -1 "$OUT/load-probe.txt" | python3 -c "import re, sys
m = re.search(r'(\w+)_p50_us=(\S+) \1_p90_us=\S+ \1_p99_us=(\S+)', sys.stdin.read())
print(f'lp_p50_us={m[2]} lp_p99_us={m[3]}' if m else '')")
}

ladder() { # SCENARIO TAGPREFIX [extra sipp args]
  local sc=$1 pfx=$2; shift 2
  local best=0 best_ach=0 fail=0 r m pass i pm=$1
  [ "$sc" = uac-call ] && pm=call
  local -a extra=("$@")
  try_rate() { # RATE TAG-SUFFIX -> sets pass
    m=$(( $1 * STEP_SECS )); [ $m -lt "$MIN_CALLS" ] && m=$MIN_CALLS
    load_probe_start "$pm" $(( m / $1 ))
    run_step "$sc" "$1" "$m" "$pfx-r$1$2" "${extra[@]}" $LADDER_RTT_ARGS
    load_probe_end
    local rt=""; [ -n "$LADDER_RTT_ARGS" ] && rt=$(python3 "$HERE/tools/sippstat.py" rtt "$OUT/$pfx-r$1$2"/*_rtt.csv 2>/dev/null | tr '\n' ' ')
    rm -f "$OUT/$pfx-r$1$2"/*_rtt.csv
    pass=1
    [ "$STEP_RC" != 0 ] && pass=0
    [ "$STEP_FAILED" != 0 ] && pass=0
    [ "$STEP_RETR" != 0 ] && pass=0
    [ "$STEP_ACH" -lt $(( $1 * 95 / 100 )) ] && pass=0
    log "RESULT label=$LABEL scenario=$pfx kind=step rate=$1 m=$m ok=$STEP_OK failed=$STEP_FAILED retrans=$STEP_RETR elapsed_s=$STEP_ELAPSED achieved=$STEP_ACH rc=$STEP_RC sipp_cpu=$STEP_SIPP_CPU uas_cpu=$STEP_UAS_CPU server_cpu=$STEP_SRV_CPU server_ns=$STEP_SRV_NS wall_s=$STEP_WALL srv_us_per_call=$STEP_US_PER_CALL host_busy=$STEP_HOST_BUSY pass=$pass $STEP_OWN $LP_FIGS $rt"
  }
  for r in $RATES; do
    try_rate "$r" ""
    if [ $pass = 1 ]; then best=$r; best_ach=$STEP_ACH; else fail=$r; break; fi
  done
  # bisection between last pass and first failure (server state after an overload may linger: settle first)
  i=0
  while [ "$fail" -gt 0 ] && [ $i -lt "$REFINE" ]; do
    local gran=500; [ "$best" -lt 4000 ] && gran=50   # finer steps for a slow server
    r=$(( (best + fail) / 2 / gran * gran )); [ $r -le $best ] && break
    sleep "$SETTLE"
    try_rate "$r" "-refine"
    if [ $pass = 1 ]; then best=$r; best_ach=$STEP_ACH; else fail=$r; fi
    i=$((i + 1))
  done
  log "RESULT label=$LABEL scenario=$pfx kind=max max_rate=$best achieved_at_max=$best_ach first_fail=$fail"
}

latency() { # SCENARIO TAGPREFIX [extra sipp args]
  local sc=$1 pfx=$2; shift 2
  local m=$(( LAT_RATE * LAT_SECS ))
  run_step "$sc" "$LAT_RATE" "$m" "$pfx-lat$LAT_RATE" -trace_rtt -rtt_freq 1 "$@"
  local rt; rt=$(python3 "$HERE/tools/sippstat.py" rtt "$OUT/$pfx-lat$LAT_RATE"/*_rtt.csv | tr '\n' ' ')
  log "RESULT label=$LABEL scenario=$pfx kind=latency_sipp rate=$LAT_RATE n=$m ok=$STEP_OK failed=$STEP_FAILED retrans=$STEP_RETR sipp_cpu=$STEP_SIPP_CPU server_cpu=$STEP_SRV_CPU srv_us_per_call=$STEP_US_PER_CALL host_busy=$STEP_HOST_BUSY $STEP_OWN $rt"
}

fixed() { # SCENARIO TAGPREFIX [extra sipp args]: one step at FIXED_RATE for a like-for-like CPU cost per call
  # For calls it runs first on a fresh server (for REGISTER after the latency runs, as in ../shared/bench: a
  # warm server whose registrations are mostly refreshes). With FIXED_DRAIN > 0 the server's CPU for FIXED_DRAIN s after the step is
  # added (and that time to wall_s): a transaction-stateful server keeps each transaction 32 s (Timers J/K/L)
  # and the work of ending them comes after the calls; measured this way the figure holds all the work the
  # calls cause and none left over from earlier steps (idle CPU over the whole wall is in the idle row).
  # FIXED_ROUNDS > 1 repeats the step (each round after the drain of the one before, so none carries work
  # left by another) and the report takes the median: one 5 s step on this shared VM was once 1.8x its twin.
  local sc=$1 pfx=$2 k; shift 2
  for k in $(seq 1 "$FIXED_ROUNDS"); do fixed_round "$sc" "$pfx" "$k" "$@"; done
}

fixed_round() { # SCENARIO TAGPREFIX ROUND [extra sipp args]
  local sc=$1 pfx=$2 round=$3; shift 3
  local m=$(( FIXED_RATE * FIXED_SECS )) tag="$pfx-fixed$FIXED_RATE"
  [ "$round" -gt 1 ] && tag="$tag-$round"
  run_step "$sc" "$FIXED_RATE" "$m" "$tag" "$@"
  local step_us=$STEP_US_PER_CALL
  if [ "${FIXED_DRAIN:-0}" -gt 0 ] && [ -n "$SERVER_PID" ]; then
    local d0 d1; d0=$(tree_ns "$SERVER_PID"); sleep "$FIXED_DRAIN"; d1=$(tree_ns "$SERVER_PID")
    STEP_SRV_NS=$((STEP_SRV_NS + d1 - d0))
    STEP_WALL=$(python3 -c "print(f'{$STEP_WALL + $FIXED_DRAIN:.3f}')")
    STEP_US_PER_CALL=$(python3 -c "print(f'{$STEP_SRV_NS/1000/max($STEP_OK,1):.1f}')")
    # the server's own figures over the step and its drain, as the CPU figure
    [ -n "$STEP_SNAP" ] && STEP_OWN=$(python3 "$HERE/tools/loopstat.py" diff "$ADMIN_URL" "$FLOW" "$STEP_SNAP" "$STEP_OK")
  fi
  local pass=1
  [ "$STEP_RC" != 0 ] && pass=0; [ "$STEP_FAILED" != 0 ] && pass=0; [ "$STEP_RETR" != 0 ] && pass=0
  [ "$STEP_ACH" -lt $(( FIXED_RATE * 95 / 100 )) ] && pass=0
  log "RESULT label=$LABEL scenario=$pfx kind=fixed rate=$FIXED_RATE m=$m ok=$STEP_OK failed=$STEP_FAILED retrans=$STEP_RETR elapsed_s=$STEP_ELAPSED achieved=$STEP_ACH rc=$STEP_RC sipp_cpu=$STEP_SIPP_CPU uas_cpu=$STEP_UAS_CPU server_cpu=$STEP_SRV_CPU server_ns=$STEP_SRV_NS wall_s=$STEP_WALL srv_us_per_call=$STEP_US_PER_CALL srv_us_in_step=$step_us drain_s=${FIXED_DRAIN:-0} host_busy=$STEP_HOST_BUSY pass=$pass round=$round $STEP_OWN"
}

probe() { # MODE TAGPREFIX: PROBE_ROUNDS rounds, each with its own seed (other Call-IDs and branches, so a
  # round is never answered from a reply cache); the report takes the median of the rounds' percentiles
  [ "${NO_PROBE:-0}" = 1 ] && return
  local k r
  for k in $(seq 1 "$PROBE_ROUNDS"); do
    r=$(taskset -c "$SIPP_CPU" timeout $((LAT_SECS + 30)) python3 "$HERE/tools/latprobe.py" --mode "$1" --seed "$k" \
         --target "$TARGET" --rate "$LAT_RATE" --secs "$LAT_SECS" --port $((SIPP_PORT + 3)) --callee "$CALLEE-probe" 2>&1 | tail -1)
    log "RESULT label=$LABEL scenario=$2 kind=latency_probe rate=$LAT_RATE round=$k $r"
  done
}

start_uas() {
  taskset -c "$SIPP_CPU" timeout 1800 sipp "$TARGET" -sf "$SC/$UAS.xml" "${COMMON[@]}" -p $((SIPP_PORT + 1)) \
     -stf "$OUT/uas-stat.csv" -timeout 1790 > "$OUT/uas.out" 2> "$OUT/uas.err" &
  UAS_PID=$!   # pid of coreutils timeout; sipp is its child
  sleep 1
  UAS_SIPP_PID=$(ps -o pid= --ppid "$UAS_PID" | tr -d ' ')
  # register CALLEE with Contact = uas sipp port
  ( cd "$OUT" && taskset -c "$SIPP_CPU" timeout 20 sipp "$TARGET" -sf "$SC/register-callee.xml" "${COMMON[@]}" \
      -p $((SIPP_PORT + 2)) -stf reg-callee-stat.csv -m 1 -r 1 -timeout 15 -s "$CALLEE" -key callee_port $((SIPP_PORT + 1)) \
      > reg-callee.out 2>&1 ); local rc=$?
  log "RESULT label=$LABEL kind=register_callee user=$CALLEE contact_port=$((SIPP_PORT + 1)) rc=$rc"
}
stop_uas() { [ -n "$UAS_PID" ] && kill "$UAS_PID" 2>/dev/null; UAS_PID=""; UAS_SIPP_PID=""; sleep 0.5; }
trap stop_uas EXIT
UAS_SIPP_PID=""

log "# $(date -Is) label=$LABEL target=$TARGET rates='$RATES' step_secs=$STEP_SECS lat=$LAT_RATE/s x ${LAT_SECS}s sipp_cpu=$SIPP_CPU uas=$UAS server_pid=${SERVER_PID:-none} $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*')"
# idle CPU of the server (timers, housekeeping): lets a reader subtract it from the per-call figures at low rates
if [ -n "$SERVER_PID" ] && [ "${FIXED_ONLY:-0}" != 1 ]; then
  i0=$(tree_ns "$SERVER_PID"); sleep "${IDLE_SECS:-3}"; i1=$(tree_ns "$SERVER_PID")
  log "RESULT label=$LABEL kind=idle secs=${IDLE_SECS:-3} server_ns_per_s=$(( (i1 - i0) / ${IDLE_SECS:-3} ))"
fi
for s in "$@"; do
  case "$s" in
    register)      if [ "${FIXED_ONLY:-0}" = 1 ]; then fixed register register -inf "$SC/users.csv"; continue; fi
                   latency register register -inf "$SC/users.csv";           probe register register
                   fixed register register -inf "$SC/users.csv";             ladder register register -inf "$SC/users.csv" ;;
    register-auth) if [ "${FIXED_ONLY:-0}" = 1 ]; then fixed register-auth register-auth -inf "$SC/users.csv"; continue; fi
                   latency register-auth register-auth -inf "$SC/users.csv"; probe register-auth register-auth
                   fixed register-auth register-auth -inf "$SC/users.csv";   ladder register-auth register-auth -inf "$SC/users.csv" ;;
    call)          start_uas
                   if [ "${FIXED_ONLY:-0}" = 1 ]; then fixed uac-call call -s "$CALLEE"; stop_uas; continue; fi
                   fixed uac-call call -s "$CALLEE"; latency uac-call call -s "$CALLEE"; probe call call
                   ladder uac-call call -s "$CALLEE"
                   stop_uas ;;
    *) echo "unknown scenario $s" >&2 ;;
  esac
done
