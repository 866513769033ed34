"""The host probe's remote side: ONE shell script, run over SSH, and its reading.

The script is a constant (nothing from lab.yaml goes into it); it prints sections
`@@ name` followed by that section's lines. probe_parse.py turns that text into a
frozen HostProbe (probe_state.py), whose capability answers come from capabilities.py.
A section the host could not fill (no python3, no dmesg access, an old kernel) leaves
its field unknown (None), and the capability answers say so.
"""

from __future__ import annotations

from harness.errors import InfraError
from harness.hosts.probe_parse import parse, sections
from harness.hosts.probe_state import KCONFIG_SYMBOLS, HostProbe
from harness.hosts.shell import HostShell

# KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES = 235) on /dev/kvm: a bit per supported VM type.
KVM_CHECK_EXTENSION = 0xAE03
KVM_CAP_VM_TYPES = 235

_PY_VM_TYPES = (
    "import fcntl, os; "
    "fd = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC); "
    f"print(fcntl.ioctl(fd, {KVM_CHECK_EXTENSION:#x}, {KVM_CAP_VM_TYPES}))"
)

_PARAMS = (
    "/sys/module/kvm_intel/parameters/tdx",
    "/sys/module/kvm_amd/parameters/sev",
    "/sys/module/kvm_amd/parameters/sev_es",
    "/sys/module/kvm_amd/parameters/sev_snp",
    "/sys/module/kvm/parameters/tdp_mmu",
)

# POSIX sh (dash on Debian); every command may fail without stopping the rest.
SCRIPT = f"""\
export LC_ALL=C
set -f
sec() {{ printf '@@ %s\\n' "$1"; }}
sec hostname; uname -n
sec boot_id; cat /proc/sys/kernel/random/boot_id
sec release; uname -r
sec version; cat /proc/version
sec cmdline; cat /proc/cmdline
sec cpu
grep -m1 '^vendor_id' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo; grep -m1 '^bugs' /proc/cpuinfo
sec kvm; if [ -c /dev/kvm ]; then echo present; else echo absent; fi
sec vm_types
if ! command -v python3 >/dev/null 2>&1; then echo 'unknown: no python3 on the host'
elif [ ! -c /dev/kvm ]; then echo 'unknown: no /dev/kvm'
else python3 -c "{_PY_VM_TYPES}" 2>&1 | tail -n 1; fi
sec params
for p in {" ".join(_PARAMS)}; do
  [ -r "$p" ] && printf '%s=%s\\n' "$p" "$(cat "$p")"
done
sec tdx_host
for f in version seamldr_version num_remaining_updates; do
  p=/sys/devices/faux/tdx_host/$f
  [ -r "$p" ] && printf '%s=%s\\n' "$f" "$(cat "$p" 2>/dev/null)"
done
if d=$(dmesg 2>/dev/null) || d=$(journalctl -k -b -o cat --no-pager 2>/dev/null); then
  sec dmesg
  printf '%s\\n' "$d" | grep -E 'virt/tdx|kvm_intel|kvm_amd|tdx|SEV' | tail -n 300
else
  sec dmesg_unreadable
fi
sec meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
sec df; df -Pk / /boot 2>/dev/null
sec kexec
for k in $(command -v kexec) /usr/sbin/kexec /sbin/kexec; do
  if [ -x "$k" ]; then echo "$k"; break; fi
done
sec kexec_load_disabled; cat /proc/sys/kernel/kexec_load_disabled 2>/dev/null
sec lockdown; cat /sys/kernel/security/lockdown 2>/dev/null
sec kconfig
want='^(# )?CONFIG_({"|".join(KCONFIG_SYMBOLS)})[ =]'
if [ -r /proc/config.gz ]; then
  echo source=/proc/config.gz; gzip -dc /proc/config.gz | grep -E "$want"
elif [ -r "/boot/config-$(uname -r)" ]; then
  echo "source=/boot/config-$(uname -r)"; grep -E "$want" "/boot/config-$(uname -r)"
fi
sec systemd; if [ -d /run/systemd/system ]; then echo yes; else echo no; fi
sec python3; command -v python3
sec root; findmnt -n -P -o SOURCE,FSTYPE,PARTUUID / 2>/dev/null
sec initrd
for f in "/boot/initrd.img-$(uname -r)" "/boot/initramfs-$(uname -r).img"; do
  [ -r "$f" ] && echo "$f"
done
sec end
"""


def command() -> list[str]:
    """The probe as an argv: the script is one quoted word, never pasted raw."""
    return ["sh", "-c", SCRIPT, "gmemlab-probe"]


def run(shell: HostShell, timeout_s: float = 60.0) -> HostProbe:
    """Probe the host behind shell."""
    ran = shell.run(command(), timeout_s=timeout_s)
    if not ran.ok or "end" not in sections(ran.stdout):
        why = ran.error or ran.stderr.strip()[-300:] or f"exit {ran.exit_code}"
        raise InfraError(
            f"host probe failed ({why})",
            "check that the host runs Linux with a POSIX sh and that the SSH user can log in",
        )
    return parse(ran.stdout)
