#!/usr/bin/env bash
# Set up everything (venv, plugin, backend environments, Xvfb when missing), then run the tests.
# Arguments go to pytest (e.g. -k reciprocal).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
if ! command -v Xvfb >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Xvfb for the GUI tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        xvfb x11-apps imagemagick >/dev/null) || echo "test: could not install Xvfb; GUI tests will skip"
fi
if ! { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1 \
        && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    # A single-node SLURM for test_cluster_slurm (the test starts and stops its own daemons).
    echo "test: installing SLURM and munge for the queue tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null) \
        || echo "test: could not install SLURM; the SLURM tests will skip"
fi
cd "$ROOT"
# A test that hangs fails after 25 minutes instead of holding the whole run.
exec python -m pytest --timeout=1500 scipion_reciprocal/tests "$@"
