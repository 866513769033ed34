"""The host lock: its remote scripts run for real here, on a temporary /run and /proc."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from harness.errors import InfraError
from harness.hosts import lock as hlock
from tests.unit.hostfakes import LocalShell, fake_proc

BOOT = "3f1c9a52-6f0e-4b8e-9a1d-2c7e5b0d4a61"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def make(
    tmp: Path,
    *,
    lab_host: str = "lab-a",
    pid: int = 1111,
    alive: bool = True,
    clock: Clock | None = None,
    said: list[str] | None = None,
    boot_id: str = BOOT,
    cmdline: str = "ro quiet",
    uptime: float = 100.0,
) -> hlock.HostLock:
    proc = fake_proc(tmp / "proc", boot_id=boot_id, cmdline=cmdline, uptime=uptime)
    c = clock or Clock()
    return hlock.HostLock(
        str(tmp / "run" / "gmemlab.lock"),
        host="tdx-1",
        lab_host=lab_host,
        user="alice",
        pid=pid,
        pid_alive=lambda _pid: alive,
        clock=c,
        sleep=c.sleep,
        now=lambda: "2026-09-30T10:00:00+00:00",
        say=(said if said is not None else []).append,
        proc=proc,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return tmp_path


def test_take_writes_json_and_release_removes_it(run_dir: Path) -> None:
    lk = make(run_dir)
    sh = LocalShell()
    lease = lk.acquire(sh, "20260930-100000-01111", BOOT)
    data = json.loads((run_dir / "run" / "gmemlab.lock").read_text())
    assert data == {
        "run_id": "20260930-100000-01111",
        "user": "alice",
        "lab_host": "lab-a",
        "pid": 1111,
        "started": "2026-09-30T10:00:00+00:00",
        "boot_id": BOOT,
    }
    assert lk.release(sh, lease) == "released"
    assert not (run_dir / "run" / "gmemlab.lock").exists()
    assert lk.release(sh, lease) == "gone"


def test_second_run_fails_at_once_naming_the_holder(run_dir: Path) -> None:
    first = make(run_dir)
    first.acquire(LocalShell(), "run-1", BOOT)
    second = make(run_dir, lab_host="lab-b", pid=2222)
    with pytest.raises(hlock.HostBusy) as err:
        second.acquire(LocalShell(), "run-2", BOOT)
    assert "tdx-1 is in use: run run-1 of alice on lab-a (pid 1111)" in err.value.message
    assert "lab run --wait" in err.value.message


def test_waiting_run_gets_the_host_when_it_is_released(run_dir: Path) -> None:
    first = make(run_dir)
    lease = first.acquire(LocalShell(), "run-1", BOOT)
    clock = Clock()
    said: list[str] = []
    second = make(run_dir, lab_host="lab-b", clock=clock, said=said)
    shell = LocalShell()
    real_sleep = clock.sleep

    def release_then_sleep(s: float) -> None:
        real_sleep(s)
        if len(clock.slept) == 2:
            first.release(LocalShell(), lease)

    second.sleep = release_then_sleep
    got = second.acquire(shell, "run-2", BOOT, wait_s=600)
    assert got.owner.run_id == "run-2"
    assert clock.slept == [15.0, 15.0]
    assert said == [
        "tdx-1: waiting for run run-1 of alice on lab-a (pid 1111), since 2026-09-30T10:00:00+00:00"
    ]


def test_waiting_gives_up_at_the_deadline(run_dir: Path) -> None:
    make(run_dir).acquire(LocalShell(), "run-1", BOOT)
    clock = Clock()
    second = make(run_dir, lab_host="lab-b", clock=clock)
    with pytest.raises(hlock.HostBusy):
        second.acquire(LocalShell(), "run-2", BOOT, wait_s=40)
    assert clock.slept == [15.0, 15.0, 10.0]


def test_lock_from_an_earlier_boot_is_stale(run_dir: Path) -> None:
    make(run_dir, boot_id="old-boot").acquire(LocalShell(), "run-1", "old-boot")
    said: list[str] = []
    lease = make(run_dir, lab_host="lab-b", said=said).acquire(LocalShell(), "run-2", BOOT)
    assert lease.owner.run_id == "run-2"
    assert said == [
        "tdx-1: taking over a stale lock: the host rebooted since it was taken "
        f"(boot id old-boot -> {BOOT})"
    ]


def test_dead_holder_on_this_lab_machine_is_stale(run_dir: Path) -> None:
    make(run_dir, pid=1111).acquire(LocalShell(), "run-1", BOOT)
    said: list[str] = []
    lease = make(run_dir, pid=2222, alive=False, said=said).acquire(LocalShell(), "run-2", BOOT)
    assert lease.owner.pid == 2222
    assert "its process 1111 on this machine (lab-a) is gone" in said[0]


def test_dead_pid_on_another_lab_machine_is_not_presumed_dead(run_dir: Path) -> None:
    make(run_dir, lab_host="lab-a").acquire(LocalShell(), "run-1", BOOT)
    with pytest.raises(hlock.HostBusy):
        make(run_dir, lab_host="lab-b", alive=False).acquire(LocalShell(), "run-2", BOOT)


def test_kexec_marker_holds_the_host_until_the_run_retakes(run_dir: Path) -> None:
    cmdline = "root=PARTUUID=x ro gmemlab.run=run-1 panic=30"
    other = make(run_dir, lab_host="lab-b", cmdline=cmdline, uptime=40.0)
    with pytest.raises(hlock.HostBusy, match="run run-1, which kexec'd a test kernel"):
        other.acquire(LocalShell(), "run-2", BOOT)
    # The run named by the marker takes it again after its kexec ...
    owner = make(run_dir, cmdline=cmdline, uptime=40.0)
    before = hlock.Lease(owner.path, owner.owner("run-1", "old-boot"))
    lease = owner.retake(LocalShell(), before, BOOT)
    assert lease.owner.boot_id == BOOT
    # ... and then the lock file, not the marker, names it.
    with pytest.raises(hlock.HostBusy, match="run run-1 of alice"):
        other.acquire(LocalShell(), "run-2", BOOT)


def test_kexec_marker_without_a_lock_long_after_boot_is_stale(run_dir: Path) -> None:
    cmdline = "ro gmemlab.run=run-1"
    said: list[str] = []
    lk = make(run_dir, lab_host="lab-b", cmdline=cmdline, uptime=3600.0, said=said)
    assert lk.acquire(LocalShell(), "run-2", BOOT).owner.run_id == "run-2"
    assert said == [
        "tdx-1: taking over a stale lock: run run-1, which kexec'd a test kernel and has "
        "not re-locked for 3600s"
    ]


def test_retake_fails_when_another_run_took_the_host(run_dir: Path) -> None:
    make(run_dir, lab_host="lab-b", pid=9).acquire(LocalShell(), "run-2", BOOT)
    mine = make(run_dir)
    lease = hlock.Lease(mine.path, mine.owner("run-1", "old-boot"))
    with pytest.raises(hlock.HostBusy, match="lost the host lock during the kexec"):
        mine.retake(LocalShell(), lease, BOOT)


def test_own_lock_from_before_a_reboot_is_replaced(run_dir: Path) -> None:
    """A /run that is not a tmpfs keeps the pre-kexec lock: the run replaces its own."""
    mine = make(run_dir)
    old = mine.acquire(LocalShell(), "run-1", "old-boot")
    assert old.owner.boot_id == BOOT  # the script told the real boot id; it was rewritten
    lease = mine.retake(LocalShell(), old, BOOT)
    assert json.loads(Path(mine.path).read_text())["boot_id"] == BOOT
    assert mine.release(LocalShell(), lease) == "released"


def test_release_leaves_someone_elses_lock(run_dir: Path) -> None:
    mine = make(run_dir)
    lease = mine.acquire(LocalShell(), "run-1", BOOT)
    Path(mine.path).write_text(make(run_dir, lab_host="lab-b").owner("run-2", BOOT).line())
    said: list[str] = []
    mine.say = said.append
    assert mine.release(LocalShell(), lease).startswith("other: run run-2 of alice on lab-b")
    assert Path(mine.path).exists() and "not releasing" in said[0]


def test_unreadable_lock_is_busy_not_stale(run_dir: Path) -> None:
    lk = make(run_dir)
    Path(lk.path).write_text("garbage\n")
    with pytest.raises(hlock.HostBusy, match="unreadable lock"):
        lk.acquire(LocalShell(), "run-1", BOOT)


def test_no_write_access_is_infra_error(tmp_path: Path) -> None:
    lk = make(tmp_path)  # no run/ folder: the guard cannot be created
    with pytest.raises(InfraError, match=r"cannot write .*gmemlab\.lock\.guard"):
        lk.acquire(LocalShell(), "run-1", BOOT)


def test_release_never_raises() -> None:
    class Gone:
        def run(self, *a: object, **k: object) -> object:
            raise OSError("Socket is closed")

    lk = hlock.HostLock(say=lambda _t: None)
    lease = hlock.Lease(lk.path, lk.owner("run-1", BOOT))
    assert lk.release(Gone(), lease) == "failed: Socket is closed"  # type: ignore[arg-type]


def test_only_one_of_many_concurrent_takers_wins(run_dir: Path) -> None:
    winners: list[str] = []
    losers: list[str] = []

    # Made before the threads start: make() (re)writes the fake /proc files, and a
    # thread rewriting boot_id while another reads it would fake a host reboot.
    locks = [make(run_dir, lab_host=f"lab-{i}", pid=1000 + i) for i in range(8)]

    def take(i: int) -> None:
        lk = locks[i]
        try:
            winners.append(lk.acquire(LocalShell(), f"run-{i}", BOOT).owner.run_id)
        except hlock.HostBusy:
            losers.append(f"run-{i}")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert json.loads((run_dir / "run" / "gmemlab.lock").read_text())["run_id"] == winners[0]


def test_unsafe_run_id_is_refused() -> None:
    with pytest.raises(ValueError):
        hlock.HostLock(say=lambda _t: None).owner("run 1; reboot", BOOT)


@pytest.mark.parametrize(
    "stdout, state, payload",
    [
        ("boot_id b\nuptime 12.5\nacquired\n", "acquired", ""),
        ("boot_id b\nuptime 12.5\nheld\n{}\n", "held", "{}"),
        ("boot_id b\nuptime 1\nkexec\nrun-1\n", "kexec", "run-1"),
        ("error: flock (util-linux) is missing\n", "error", "flock (util-linux) is missing"),
        ("", "error", "no answer"),
    ],
)
def test_parse_reply(stdout: str, state: str, payload: str) -> None:
    reply = hlock.parse_reply(stdout)
    assert (reply.state, reply.payload) == (state, payload)
