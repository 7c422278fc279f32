#!/usr/bin/env bash
# Loads a real unsubscribe page in headless Chromium, clicks its button like a
# person would (a mouse event at the button, through the DevTools protocol),
# and checks that the subscriber ends up unsubscribed. This proves the page
# works in a browser under its own Content-Security-Policy (no JavaScript,
# `form-action 'self'`), which the HTTP tests cannot.
#
# Needs: Debian's `chromium` (apt-get install chromium), python3 with the
# `websocket-client` package (pip install websocket-client), and a built
# `rundbrief` (RB_BIN, default: cargo build, then target/debug/rundbrief).
# Talks only to 127.0.0.1. Exit code 0 when the click unsubscribed.
#
#   scripts/check-unsubscribe-chromium.sh
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
chromium="${CHROMIUM:-chromium}"
command -v "$chromium" >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 2; }
python3 -c 'import websocket' 2>/dev/null || { echo "needs python3 websocket-client (pip install websocket-client)" >&2; exit 2; }
if [[ -z "${RB_BIN:-}" ]]; then
    (cd "$here" && cargo build -q -p rundbrief)
    RB_BIN="${CARGO_TARGET_DIR:-$here/target}/debug/rundbrief"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
unset DATABASE_URL RUNDBRIEF_CONFIG RUNDBRIEF_RELAY
# No recipient-domain check: nothing here may ask a real resolver.
export RUNDBRIEF_DNS__CHECK=false

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port="$(free_port)"
devtools_port="$(free_port)"

rb() { "$RB_BIN" "$@"; }
rb init >/dev/null 2>&1
sed -i \
    -e 's|^# from = .*|from = "News <news@example.org>"|' \
    -e 's|^# bounce_domain = .*|bounce_domain = "bounce.example.org"|' \
    -e 's|^# public_url = .*|public_url = "https://news.example.org"|' \
    rundbrief.toml
rb list create news >/dev/null
rb sub add ann@example.org --list news >/dev/null
printf 'Hello\n' > issue.md
# The message a campaign would send carries the real one-click link; the
# browser opens its path on the local endpoint (in production a TLS proxy
# sits in between).
path="$(rb render --content issue.md --subject Hi --to ann@example.org --list news 2>/dev/null \
    | tr -d '\r' | grep -o "https://news.example.org/u/[a-z2-7]*" | head -n1 | sed 's|https://news.example.org||')"
[[ -n "$path" ]] || { echo "no unsubscribe link in the rendered message" >&2; exit 1; }
url="http://127.0.0.1:$http_port$path"

"$RB_BIN" http serve --listen "127.0.0.1:$http_port" >"$work/http.log" 2>&1 &
pids+=($!)
"$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$work/profile" --remote-debugging-address=127.0.0.1 \
    --remote-debugging-port="$devtools_port" --remote-allow-origins='*' about:blank \
    >"$work/chromium.log" 2>&1 &
pids+=($!)

python3 - "$devtools_port" "$url" <<'PY'
import json, sys, time, urllib.request, websocket

port, url = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while True:
    try:
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
        page = next(t for t in targets if t.get("type") == "page")
        break
    except Exception:
        if time.time() > deadline:
            sys.exit("chromium's DevTools did not come up")
        time.sleep(0.2)
ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
seq = 0
def call(method, **params):
    global seq
    seq += 1
    ws.send(json.dumps({"id": seq, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == seq:
            if "error" in msg:
                sys.exit(f"{method}: {msg['error']}")
            return msg.get("result", {})
def wait_event(name):
    while True:
        msg = json.loads(ws.recv())
        if msg.get("method") == name:
            return msg
def evaluate(expr):
    return call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

call("Page.enable")
call("Page.navigate", url=url)
wait_event("Page.loadEventFired")
text = evaluate("document.body.innerText")
print("page:", " ".join(text.split()))
assert "ann@example.org" in text and "news" in text, text
rect = evaluate("JSON.stringify(document.querySelector('button').getBoundingClientRect())")
r = json.loads(rect)
x, y = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
for kind in ("mousePressed", "mouseReleased"):
    call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
wait_event("Page.loadEventFired")
text = evaluate("document.body.innerText")
print("after the click:", " ".join(text.split()))
assert "You are unsubscribed" in text, text
PY

status="$(rb sub show ann@example.org --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([m["status"] for m in d["memberships"] if m["list"]=="news"][0])')"
echo "membership of ann@example.org on news: $status"
[[ "$status" == "unsubscribed" ]] || { echo "FAILED: the click did not unsubscribe" >&2; exit 1; }
echo "ok: headless Chromium unsubscribed ann@example.org with one click"
