#!/usr/bin/env python3
"""A loopback SMTP server that plays the receiving side for gen/postfix.sh.

It answers each recipient by the first word of its local part (see CASES), and
stores every message sent with an empty envelope sender (the DSNs Postfix writes)
as OUTDIR/<n>.eml. Loopback only; stops after --seconds.

usage: responder.py PORT OUTDIR --seconds N
"""
import asyncio
import os
import sys

# local-part prefix -> (reply at RCPT TO, reply after DATA)
CASES = {
    "unknown": ("550 5.1.1 <{a}>: Recipient address rejected: User unknown in local recipient table", None),
    "nosuchuser": ("550 No such user here", None),
    "disabled": ("550 5.2.1 <{a}>: Recipient address rejected: Mailbox disabled, not accepting messages", None),
    "full": ("552 5.2.2 <{a}>: Recipient address rejected: Mailbox full", None),
    "relay": ("554 5.7.1 <{a}>: Relay access denied", None),
    "policy": ("550 5.7.1 <{a}>: Recipient address rejected: Access denied", None),
    "greylist": ("450 4.2.0 <{a}>: Recipient address rejected: Greylisted, try again later", None),
    "spam": (None, "550 5.7.1 Message rejected as spam by content filtering"),
    "big": (None, "552 5.3.4 Message size exceeds fixed limit"),
    "listed": (None, "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"),
    "unknownword": ("550 Unknown user {a}", None),
}


def case_of(addr):
    local = addr.split("@", 1)[0].lower()
    return CASES.get(local.split("-", 1)[0], (None, None))


async def session(reader, writer, outdir, counter):
    def send(line):
        writer.write((line + "\r\n").encode())

    send("220 rx.gen.example ESMTP responder")
    sender = None
    rcpts = []
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = line.decode("utf-8", "replace").strip()
        up = cmd.upper()
        if up.startswith("EHLO"):
            send("250-rx.gen.example")
            send("250 8BITMIME")
        elif up.startswith("HELO"):
            send("250 rx.gen.example")
        elif up.startswith("MAIL FROM:"):
            sender = cmd[10:].split()[0].strip("<>") if cmd[10:].strip() else ""
            rcpts = []
            send("250 2.1.0 Ok")
        elif up.startswith("RCPT TO:"):
            addr = cmd[8:].split()[0].strip("<>")
            at_rcpt, _ = case_of(addr)
            if sender and at_rcpt:
                send(at_rcpt.format(a=addr))
            else:
                rcpts.append(addr)
                send("250 2.1.5 Ok")
        elif up == "DATA":
            send("354 End data with <CR><LF>.<CR><LF>")
            await writer.drain()
            body = []
            while True:
                d = await reader.readline()
                if not d or d in (b".\r\n", b".\n"):
                    break
                body.append(d[1:] if d.startswith(b"..") else d)
            after = next((case_of(a)[1] for a in rcpts if case_of(a)[1]), None)
            if sender == "":
                counter[0] += 1
                with open(os.path.join(outdir, f"{counter[0]:02d}.eml"), "wb") as fh:
                    fh.write(b"".join(body).replace(b"\r\n", b"\n"))
                send("250 2.0.0 Ok: stored")
            elif after:
                send(after)
            else:
                send("250 2.0.0 Ok: queued")
        elif up == "RSET":
            rcpts = []
            send("250 2.0.0 Ok")
        elif up == "QUIT":
            send("221 2.0.0 Bye")
            await writer.drain()
            break
        else:
            send("250 2.0.0 Ok")
        await writer.drain()
    writer.close()


async def main():
    port, outdir = int(sys.argv[1]), sys.argv[2]
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    counter = [0]
    server = await asyncio.start_server(lambda r, w: session(r, w, outdir, counter), "127.0.0.1", port)
    async with server:
        await asyncio.sleep(seconds)


asyncio.run(main())
