# Sourced by cpu_metric.sh and cpu_optimization.sh (not run on its own). The caller sets PY, OUT,
# ONLY (the parts to run, space-separated) and RUN_FLAGS (flags added to every command, maybe none).

want() {  # want PART: is PART in $ONLY?
  [[ " $ONLY " == *" $1 "* ]]
}

run() {  # run NAME ARGS...: one command; its last line -> $OUT/NAME.json, the load average around it -> $OUT/load.txt
  local name=$1; shift
  echo "$name before: $(cat /proc/loadavg)" >> "$OUT/load.txt"
  "$PY" -m metalearn_lib "$@" "${RUN_FLAGS[@]}" | tail -n 1 > "$OUT/$name.json"
  echo "$name after:  $(cat /proc/loadavg)" >> "$OUT/load.txt"
  cat "$OUT/$name.json"
}
