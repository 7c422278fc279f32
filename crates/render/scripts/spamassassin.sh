#!/usr/bin/env bash
# SpamAssassin with local rules only (-L: no DNS or network tests) on a
# campaign message rendered with the shipped layout
# (examples/sample_message.rs). Prints the score and the rules that fired.
# A benchmark-style check, not a CI gate: scores move with SpamAssassin's
# rule updates. Needs Debian's `spamassassin` (apt-get install spamassassin).
#
#   crates/render/scripts/spamassassin.sh [MESSAGE.eml]
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v spamassassin >/dev/null || { echo "spamassassin is not installed (apt-get install spamassassin)" >&2; exit 2; }
msg=$(mktemp)
trap 'rm -f "$msg"' EXIT
if [ $# -gt 0 ]; then
    cp "$1" "$msg"
else
    cargo run -q -p rundbrief-render --example sample_message > "$msg"
fi
report=$(spamassassin -L -t < "$msg" 2>/dev/null)
# The X-Spam-Status header, unfolded: score and rule names.
status=$(printf '%s\n' "$report" | awk '/^X-Spam-Status:/{s=$0; while ((getline l) > 0 && l ~ /^[ \t]/) s = s " " l; print s; exit}' | tr -s ' \t' ' ')
echo "$status"
score=$(printf '%s\n' "$status" | sed -n 's/.*score=\([-0-9.]*\).*/\1/p')
echo "score: $score"
echo "rules fired (points, name, description):"
printf '%s\n' "$report" | awk '/^Content analysis details:/{on=1; next} on && /^ *-?[0-9]+\.[0-9]+ /{print "  " $0} on && /^$/{if (seen) exit} on{seen=1}'
