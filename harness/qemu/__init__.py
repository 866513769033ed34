"""The boot stage: a kernel and an image become a running QEMU VM reachable by SSH.

One job per module: argv (the QEMU and kernel command lines, pure), accel (KVM or TCG),
version (`qemu --version`), console (following console.log), machine (a running VM and
how to reach it), boot (starting QEMU until SSH answers), nested (the guest's own KVM),
detached (the VM `lab boot --detach` leaves running), qmp (asking QEMU to quit).
"""

from __future__ import annotations

import logging

# paramiko logs every failed connection attempt with a traceback while sshd starts;
# the lab reports connection failures itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
