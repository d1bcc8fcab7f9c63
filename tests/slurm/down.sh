#!/usr/bin/env bash
# Tear down the loopback cluster of up.sh: stop the daemons it recorded, by PID, and restore
# /etc/slurm/slurm.conf.   tests/slurm/down.sh STATE_DIR
set -uo pipefail

STATE_DIR=${1:?usage: down.sh STATE_DIR}
CONF=/etc/slurm/slurm.conf
MARKER="# kernel-eft loopback test cluster"

if [[ -f $STATE_DIR/pids ]]; then
    # Cancel leftover jobs first, while slurmctld still answers.
    scancel --quiet --partition=debug 2>/dev/null || true
    # SIGTERM to all at once (each takes ~2 s to exit; the cluster's state is thrown away), then
    # SIGKILL whatever is still there after 10 s.
    mapfile -t daemons <"$STATE_DIR/pids"
    for entry in "${daemons[@]}"; do
        read -r name pid <<<"$entry"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for entry in "${daemons[@]}"; do
        read -r name pid <<<"$entry"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm down: $name ($pid) ignored SIGTERM, killing" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    rm -f "$STATE_DIR/pids"
fi

if [[ -f $CONF ]] && grep -q "^$MARKER" "$CONF"; then
    if [[ -f $STATE_DIR/slurm.conf.orig ]]; then
        mv "$STATE_DIR/slurm.conf.orig" "$CONF"
    else
        rm -f "$CONF"
    fi
fi
exit 0
