#!/bin/sh
# Time-bounded fuzzing of the SMTP session state machine and the bounce parser
# (issue #21). Not part of CI: run by hand, like the benchmarks.
#
#   scripts/fuzz.sh            # 60 s per target, release build
#   scripts/fuzz.sh 300        # 5 minutes per target
#   PROFILE=dev scripts/fuzz.sh 30
#
# Prints, per target, the inputs tried, the crashes found (their inputs are
# saved under target/fuzz-crashes/) and the slowest input; exits non-zero when
# a crash was found.
set -eu
secs=${1:-60}
profile=${PROFILE:-release}
cd "$(dirname "$0")/.."
RUNDBRIEF_FUZZ_SECS=$secs exec cargo test -p rundbrief-smtpd --profile "$profile" \
    --test fuzz -- --ignored --nocapture --test-threads 1
