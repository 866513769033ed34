"""A QEMU stand-in for boot() tests: console file, QMP socket, SSH banner on the hostfwd port.

FAKE_QEMU_MODE picks the behaviour: ssh (a banner on the forwarded port, then wait for
QMP quit), panic (a crash on the console, then exit 0 as -no-reboot does), exit (fail at
once with status 1), silent (never print, never answer).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def serve_qmp(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        for line in conn.makefile("rb"):
            cmd = json.loads(line)["execute"]
            conn.sendall(b'{"return": {}}\n')
            if cmd == "quit":
                os._exit(0)


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
    console = arg(argv, "-chardev").split("path=", 1)[1]
    qmp = arg(argv, "-qmp").removeprefix("unix:").split(",", 1)[0]
    port = int(re.search(r"hostfwd=tcp:127.0.0.1:(\d+)-", arg(argv, "-netdev"))[1])  # type: ignore[index]
    mode = os.environ.get("FAKE_QEMU_MODE", "ssh")
    out = open(console, "w", buffering=1)  # noqa: SIM115
    threading.Thread(target=serve_qmp, args=(qmp,), daemon=True).start()
    flag = os.environ.get("FAKE_QEMU_FLAG", "")
    if mode == "port-taken-once" and flag and not os.path.exists(flag):
        open(flag, "w").close()
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
