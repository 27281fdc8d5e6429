#!/usr/bin/env bash
# Sets up, builds, then runs pipetrain. With no arguments: `pipetrain train` on the default config.
#   bash scripts/run.sh                        # train the default config on the bundled default data
#   bash scripts/run.sh doctor                 # any other command and options
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh" --target pipetrain
if [ $# -eq 0 ]; then set -- train; fi
exec "$root/build/pipetrain" "$@"
