# Sourced by the one-command GPU scripts (gpu_run.sh, gpu_search.sh): one time budget that their
# steps share, and what the machine is. Needs $py, the Python to report on.

# budget_start BUDGET_S: check it (whole seconds, read as decimal) and start the clock.
budget_start() {
    [[ $1 =~ ^[0-9]+$ ]] || { echo "error: BUDGET_S must be whole seconds, got '$1'" >&2; exit 2; }
    budget=$((10#$1))
    budget_from=$SECONDS
}

# left: seconds of the budget left (0 or less once it is spent).
left() { echo $((budget - (SECONDS - budget_from))); }

# within_budget COMMAND...: run it for at most what is left (SIGTERM, then SIGKILL 30 s later);
# skipped, status 124, once nothing is left (`timeout 0` would mean no limit at all).
within_budget() {
    local seconds
    seconds=$(left)
    [ "$seconds" -gt 0 ] || { echo "skipped, out of time: $*" >&2; return 124; }
    timeout -k 30 "$seconds" "$@"
}

# record_machine FILE: the GPU (if any) and the torch version, for the figures' context.
record_machine() {
    { nvidia-smi || true; "$py" -c 'import torch; print("torch", torch.__version__)'; } > "$1"
}
