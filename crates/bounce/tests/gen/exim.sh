#!/bin/sh
# Generates real Exim DSNs (bounce messages) for the classifier's extra material,
# once, on a Debian machine with Exim installed (as root; Exim and Postfix conflict
# as packages, hence generate once and commit):
#
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends exim4-daemon-light
#   sh crates/bounce/tests/gen/exim.sh
#
# How: Exim runs from a private configuration (spool under /tmp), takes one message
# per case on the command line, delivers it at once to responder.py on a loopback
# port, which refuses it as the case asks; Exim's bounce to the sender goes to the
# same responder and is stored as tests/gen/exim/<case>.eml. No daemon is started.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/exim"
work=/tmp/rundbrief-eximgen
rx_port=${RX_PORT:-10927}
rm -rf "$work"
mkdir -p "$work/spool" "$work/log" "$work/dsn" "$out"
chown -R Debian-exim "$work/spool" "$work/log"
cat > "$work/exim.conf" <<CF
primary_hostname = mta.sender.example
qualify_domain = sender.example
spool_directory = $work/spool
log_file_path = $work/log/%slog
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
trusted_users = root
host_lookup =
rfc1413_hosts =

begin routers
everything:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = remote

begin transports
remote:
  driver = smtp
  port = $rx_port
  allow_localhost = true
  hosts_try_auth =

begin retry
* * F,2m,20s
CF
python3 "$here/responder.py" "$rx_port" "$work/dsn" --seconds 120 &
rx=$!
trap 'kill $rx 2>/dev/null || true' EXIT
sleep 1
cases="unknown nosuchuser disabled full relay policy spam big listed unknownword"
for c in $cases; do
    printf 'From: news@sender.example\nTo: %s-reader@rx.example\nSubject: gen %s\nMessage-ID: <gen-%s@sender.example>\n\nhello\n' \
        "$c" "$c" "$c" | exim4 -C "$work/exim.conf" -odi -f news@sender.example "$c-reader@rx.example" || true
done
want=$(echo $cases | wc -w)
i=0
while [ "$(ls "$work/dsn" | wc -l)" -lt "$want" ] && [ $i -lt 60 ]; do sleep 2; i=$((i + 2)); done
python3 - "$work/dsn" "$out" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(src)):
    raw = open(os.path.join(src, f), "rb").read()
    m = re.search(rb"([a-z]+)-reader@rx\.example", raw)
    name = m.group(1).decode() if m else f"unnamed-{f}"
    open(os.path.join(dst, name + ".eml"), "wb").write(raw)
    print(name)
PY
echo "exim $(exim4 --version | head -1 | cut -d' ' -f3): $(ls "$out" | wc -l) bounces in $out"
