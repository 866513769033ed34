"""The Debian mirror this machine already uses, read from its own apt sources.

The lab names no package-archive host anywhere: a machine behind a local mirror (or a
proxying one) must keep using it, and a host name baked into the repository would send
every lab to one archive. So the image build and the `deb` kernel source take their
mirror from lab.yaml if given, else from the entry in /etc/apt/sources.list,
sources.list.d/*.list (one-line format) or sources.list.d/*.sources (deb822) that serves
this machine's own Debian release. ci/deps.sh does the same in shell for the backports
line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
# A mirror URL as lab.yaml may give it and as it is written into a sources.list line:
# http(s) with a plain host name (optional port) or file://, then path characters only.
# No spaces and no brackets, so it can never add a field or an [option] to the line,
# and never starts with '-', so mmdebstrap cannot read it as an option.
MIRROR = re.compile(
    r"^(?:https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?|file://)"
    r"(?:/[A-Za-z0-9._~%+-]*)*$"
)
# Debian's suite names that are not a codename but still point at a full archive.
_ALIASES = ("stable", "testing", "unstable", "sid", "oldstable")


@dataclass(frozen=True)
class Entry:
    """One `deb` source: a URI and the suites it serves (deb-src entries are dropped)."""

    uri: str
    suites: tuple[str, ...]
    origin: str  # file name, for messages


def parse_one_line(text: str, origin: str = "") -> list[Entry]:
    """`deb [options] URI suite [components...]` lines; comments and deb-src skipped."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        # Options are one bracketed group; it may hold spaces ("[ arch=amd64 ]").
        rest = line[4:].strip()
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                continue
            rest = rest[end + 1 :].strip()
        fields = rest.split()
        if len(fields) >= 2:
            entries.append(Entry(fields[0], (fields[1],), origin))
    return entries


def parse_deb822(text: str, origin: str = "") -> list[Entry]:
    """deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`), blank-line separated."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:  # a continuation line (multi-line value)
                fields[key] += " " + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        for uri in fields.get("uris", "").split():
            entries.append(Entry(uri, suites, origin))
    return entries


def read_entries(etc: Path = APT_ETC) -> list[Entry]:
    """Every `deb` entry of the apt configuration under etc, in apt's reading order."""
    entries: list[Entry] = []
    main = etc / "sources.list"
    if main.is_file():
        entries += parse_one_line(main.read_text(errors="replace"), str(main))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if not path.is_file():
                continue
            if path.suffix == ".list":
                entries += parse_one_line(path.read_text(errors="replace"), str(path))
            elif path.suffix == ".sources":
                entries += parse_deb822(path.read_text(errors="replace"), str(path))
    return entries


def os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    info: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                info[name.strip()] = value.strip().strip("\"'")
    return info


def pick_mirror(entries: list[Entry], codename: str) -> str | None:
    """The URI serving the release itself (not -security, not a third-party suite).

    First choice: an entry listing the codename as a suite ("bookworm"); then one that
    lists a Debian alias ("stable"). Security archives only list "<codename>-security",
    so they are never chosen.
    """
    # Entries the lab's own mirror rule refuses (cdrom:, tor+http:, mirror+file:, odd
    # characters) are skipped rather than guessed at.
    usable = [e for e in entries if MIRROR.fullmatch(e.uri.rstrip("/"))]
    for wanted in ((codename,) if codename else (), _ALIASES):
        for entry in usable:
            if any(s in wanted for s in entry.suites):
                return entry.uri.rstrip("/")
    return None


def host_mirror(etc: Path = APT_ETC, release: Path = OS_RELEASE) -> str:
    """This Debian machine's mirror, or a UserError that says how to name one."""
    info = os_release(release)
    fix = (
        "set the mirror in lab.yaml (image.mirror, kernels.<name>.deb.mirror) to your "
        "Debian mirror's URL, e.g. mirror: https://<your mirror>/debian"
    )
    if info.get("ID") != "debian":
        raise UserError(
            f"this machine is not Debian ({release}: ID={info.get('ID', 'unknown')}), so its "
            "apt sources name no Debian mirror to build the image or fetch the source from",
            fix,
        )
    mirror = pick_mirror(read_entries(etc), info.get("VERSION_CODENAME", ""))
    if mirror is None:
        raise UserError(
            f"no Debian mirror found in {etc}/sources.list or {etc}/sources.list.d/ "
            f"(*.list, *.sources) serving {info.get('VERSION_CODENAME') or 'this release'}",
            fix,
        )
    return mirror
