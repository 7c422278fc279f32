#!/bin/sh
# Generates real Postfix DSNs for the classifier's extra material, once, on a
# Debian machine with the `postfix` package installed (as root: Postfix's master
# runs as root). Nothing listens beyond 127.0.0.1; both servers are stopped at the
# end. The produced files are committed (tests/gen/postfix/*.eml with
# labels.jsonl), so tests and CI need no MTA.
#
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
#   sh crates/bounce/tests/gen/postfix.sh
#
# Postfix insists that an alternate configuration directory is named in the
# default one, so the script also writes /etc/postfix/main.cf when it is missing
# (a package installed with "No configuration" has none).
#
# How: a private Postfix instance (config and queue under a temp dir) takes one
# message per case over SMTP on a loopback port and relays it to responder.py,
# which answers each recipient as its local part asks (see CASES there: user
# unknown, mailbox full, relay denied, spam after DATA, greylisting until the
# queue lifetime expires, ...). Postfix then writes its DSN to the sender, which
# goes to the same responder and is stored.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/postfix"
work=/tmp/rundbrief-pfgen
rm -rf "$work"
rx_port=${RX_PORT:-10925}
in_port=${IN_PORT:-10926}
mkdir -p "$work/etc" "$work/queue" "$work/data" "$work/dsn" "$out"
[ -e /etc/postfix/main.cf ] || echo "compatibility_level = 3.6" > /etc/postfix/main.cf
grep -q "^alternate_config_directories" /etc/postfix/main.cf ||
    echo "alternate_config_directories = /tmp/rundbrief-pfgen" >> /etc/postfix/main.cf
cp /etc/postfix/master.cf "$work/etc/master.cf"
# no listener on port 25; one smtpd on a loopback port instead
sed -i 's/^smtp\( *\)inet/#smtp\1inet/' "$work/etc/master.cf"
echo "127.0.0.1:$in_port inet n - y - - smtpd" >> "$work/etc/master.cf"
cat > "$work/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/queue
data_directory = $work/data
meta_directory = /etc/postfix
myhostname = mta.sender.example
mydomain = sender.example
myorigin = sender.example
mydestination =
local_recipient_maps =
alias_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$rx_port
smtp_dns_support_level = disabled
maximal_queue_lifetime = 60s
bounce_queue_lifetime = 60s
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 20s
delay_warning_time = 0h
smtputf8_enable = no
maillog_file_prefixes = /tmp
maillog_file = $work/maillog
CF
chmod 755 "$work"
chown postfix "$work/data"
python3 "$here/responder.py" "$rx_port" "$work/dsn" --seconds 240 &
rx=$!
trap 'postfix -c "$work/etc" stop >/dev/null 2>&1 || true; kill $rx 2>/dev/null || true' EXIT
postfix -c "$work/etc" start || { cat "$work/maillog" >&2; exit 1; }
sleep 2
cases="unknown nosuchuser disabled full relay policy greylist spam big listed unknownword"
python3 - "$in_port" $cases <<'PY'
import smtplib, sys
port = int(sys.argv[1])
for case in sys.argv[2:]:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    msg = (f"From: news@sender.example\r\nTo: {case}-reader@rx.example\r\n"
           f"Subject: gen {case}\r\nMessage-ID: <gen-{case}@sender.example>\r\n\r\nhello\r\n")
    s.sendmail("news@sender.example", [f"{case}-reader@rx.example"], msg)
    s.quit()
PY
want=$(echo $cases | wc -w)
i=0
while [ "$(ls "$work/dsn" | wc -l)" -lt "$want" ] && [ $i -lt 220 ]; do sleep 2; i=$((i + 2)); done
postfix -c "$work/etc" stop
# name each DSN after its case (the recipient's local part)
python3 - "$work/dsn" "$out" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(src)):
    raw = open(os.path.join(src, f), "rb").read()
    m = re.search(rb"Final-Recipient: rfc822; ?([a-z]+)-reader@", raw)
    name = m.group(1).decode() if m else f"unnamed-{f}"
    open(os.path.join(dst, name + ".eml"), "wb").write(raw)
    print(name)
PY
echo "postfix $(postconf -d -h mail_version): $(ls "$out" | wc -l) DSNs in $out"
