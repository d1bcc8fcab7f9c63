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
    # Reverse start order: slurmd, slurmctld, munged.
    tac "$STATE_DIR/pids" | while read -r name pid; do
        [[ -n ${pid:-} ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "slurm down: $name ($pid) ignored SIGTERM, killing" >&2
                kill -KILL "$pid" 2>/dev/null
            fi
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
