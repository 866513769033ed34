"""A QEMU stand-in for boot() tests: console file, QMP socket, SSH banner on the hostfwd port.

FAKE_QEMU_MODE picks the behaviour: ssh (a banner on the forwarded port, then wait for
QMP quit), panic (a crash on the console, then exit 0 as -no-reboot does), exit (fail at
once with status 1), silent (never print, never answer), abort (QEMU 10.0.2's TCG
assertion, then SIGABRT), abort-once and silent-once (that, the first time only, marked
by FAKE_QEMU_FLAG), paused (boots, but QMP says the guest stopped on an I/O error).
Each start appends a line to FAKE_QEMU_COUNT when it is set.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time

ASSERTION = (
    "qemu-system-x86_64: ../../system/physmem.c:2617: iotlb_to_section: "
    "Assertion `section_index < d->map.sections_nb' failed."
)


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def opt(value: str, key: str) -> str:
    """key's value in a QEMU option string, ",," read as a comma (as QEMU does)."""
    parts = value.replace(",,", "\0").split(",")
    for part in parts:
        if part.startswith(f"{key}="):
            return part[len(key) + 1 :].replace("\0", ",")
    raise KeyError(key)


def serve_qmp(path: str, status: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        for line in conn.makefile("rb"):
            cmd = json.loads(line)["execute"]
            if cmd == "query-status":
                reply = {"return": {"status": status, "running": status == "running"}}
                conn.sendall(json.dumps(reply).encode() + b"\n")
                continue
            conn.sendall(b'{"return": {}}\n')
            if cmd == "quit":
                os._exit(0)


def first_time(flag: str) -> bool:
    if not flag or os.path.exists(flag):
        return False
    open(flag, "w").close()
    return True


def serve_ssh(port: int) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(5)
    while True:
        conn, _ = server.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_fake\r\n")
        conn.close()


def main() -> None:
    argv = sys.argv[1:]
    if "--version" in argv:
        print("QEMU emulator version 10.0.2 (fake)")
        return
    count = os.environ.get("FAKE_QEMU_COUNT")
    if count:
        with open(count, "a") as f:
            f.write(" ".join(argv) + "\n")
    console = opt(arg(argv, "-chardev"), "path")
    qmp = opt("path=" + arg(argv, "-qmp").removeprefix("unix:"), "path")
    open(opt(arg(argv, "-drive"), "file"), "rb").close()  # the overlay exists
    port = int(re.search(r"hostfwd=tcp:127.0.0.1:(\d+)-", arg(argv, "-netdev"))[1])  # type: ignore[index]
    mode = os.environ.get("FAKE_QEMU_MODE", "ssh")
    out = open(console, "w", buffering=1)  # noqa: SIM115
    status = "io-error" if mode == "paused" else "running"
    threading.Thread(target=serve_qmp, args=(qmp, status), daemon=True).start()
    flag = os.environ.get("FAKE_QEMU_FLAG", "")
    if mode == "abort" or (mode == "abort-once" and first_time(flag)):
        out.write("[    0.000000] Linux version 7.3.0 (fake)\n")
        print(ASSERTION, file=sys.stderr, flush=True)
        os.abort()
    if mode == "silent-once" and first_time(flag):
        out.write("[    0.100000] tsc: Marking TSC unstable due to clocksource watchdog\n")
        time.sleep(600)
    if mode == "port-taken-once" and first_time(flag):
        print(f"qemu: Could not set up host forwarding rule 'tcp:127.0.0.1:{port}-:22'",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    if mode == "exit":
        print("qemu-system-x86_64: -drive file=x: Could not open 'x'", file=sys.stderr)
        sys.exit(1)
    if mode == "silent":
        time.sleep(600)
    out.write("[    0.000000] Linux version 7.3.0 (fake)\n")
    if mode == "panic":
        out.write(
            "[    1.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
        )
        out.write("[    1.000001] Oops: Oops: 0000 [#1] SMP NOPTI\n")
        out.write("[    1.000002] Kernel panic - not syncing: Fatal exception\n")
        out.close()
        sys.exit(0)
    out.write("[    1.500000] gmemlab-init: sshd started on eth0\n")
    out.write('gmemlab-nested: {"present": true, "vm_types": [0, 1], "created": [0, 1]}\n')
    serve_ssh(port)


if __name__ == "__main__":
    main()
