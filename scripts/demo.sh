#!/usr/bin/env bash
# The main job: set up everything, then build and run the demo Scipion project.
# Arguments go to `scipion-reciprocal demo` (e.g. --gui).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
scipion-reciprocal demo "$@"
