#!/usr/bin/env bash
# The tiers past the unit tier (`make test`, once the images are built), ordered so that both
# cores work without any test's timing suffering for it. Usage: scripts/test-tiers.sh PYTEST
#   1. Two lanes side by side. Run as one pytest, these tests left 45% of the CPU idle: each
#      mostly waits, on dockerd and its storage driver, on a service starting, on a client's
#      timeout. The first lane: the tests that start containers (the docker and cluster
#      tiers), then the service tier's tests of the exporter and the harness's measurements
#      (CPU-bound, no timing bound: model/ and benchmark/); the second, the rest of the
#      service tier (the strategies as processes). Their halves took about as long on a
#      2-core VM. The first lane's output is printed after the second's.
#   2. Then, with nothing beside them, the tests marked `alone` (pyproject.toml): those that
#      load every core or bound their own timing (the harness's runs, the fault suite, the
#      Ray cluster's autoscaling and node loss, a client leaving a batch's queue).
# NOTE: running the harness's runs beside the alone tests at a low priority (nice) does not
# work: the services they start lead sessions of their own, and with the kernel's autogroup
# scheduling each session shares the CPU as one group whatever its nice value (the alone
# tests ran 75% slower beside them); and the harness's runs bound some timing of their own
# (health probes during a one-second flood, an open-loop window's end).
# Exit status: 0 when every pytest passed; the last line names the parts that did not.
set -uo pipefail
pytest=$1
CPU_BOUND=(model/tests benchmark/tests)
failed=()

first_lane() {
    local status=0
    "$pytest" -m "(docker or cluster) and not alone" || status=1
    "$pytest" -m "service and not alone" "${CPU_BOUND[@]}" || status=1
    return $status
}

first_lane_log=$(mktemp)
trap 'rm -f "$first_lane_log"' EXIT
first_lane >"$first_lane_log" 2>&1 &
first=$!
"$pytest" -m "service and not alone" "${CPU_BOUND[@]/#/--deselect=}" \
    || failed+=("the service tier's strategies")
wait "$first" || failed+=("the containers' tiers or the exporter's and the harness's tests")
echo "=== run beside the above: the containers' tiers, the exporter's and the harness's tests ==="
cat "$first_lane_log"

echo "=== the tests that run alone ==="
"$pytest" -m "alone and not unit" || failed+=("the tests that run alone")

if ((${#failed[@]})); then
    echo "FAILED: $(printf '%s; ' "${failed[@]}" | sed 's/; $//')"
    exit 1
fi
