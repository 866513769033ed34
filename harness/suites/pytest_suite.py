"""Kind pytest: the guest ioctl suite (tests/guest), read back through its JUnit file."""

from __future__ import annotations

import re

from harness import junit
from harness.config import SuiteSpec
from harness.names import slug
from harness.results import Outcome, TestResult
from harness.suites.base import OUTPUT, PAYLOAD, Suite, tail

# The guest suite's folder in this repository when lab.yaml names no path.
DEFAULT_PATH = "tests/guest"

# A `pytest -v` progress line: "guest/test_x.py::TestA::test_b[p] PASSED   [ 10%]".
_PROGRESS = re.compile(
    r"^(?P<id>\S+?::.+?) (?P<word>PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)(?: |$)"
)
_WORDS = {
    "PASSED": Outcome.PASS,
    "FAILED": Outcome.FAIL,
    "SKIPPED": Outcome.SKIP,
    "ERROR": Outcome.ERROR,
    "XFAIL": Outcome.SKIP,
    "XPASS": Outcome.FAIL,
}


def junit_name(nodeid: str) -> str:
    """A pytest node id as the JUnit report names it (classname::name), so results read
    from the progress lines match those read from junit.xml."""
    parts = [p for p in nodeid.split("::") if p != "()"]
    parts[0] = re.sub(r"\.py$", "", parts[0].replace("/", "."))
    return f"{'.'.join(parts[:-1])}::{parts[-1]}" if len(parts) > 1 else parts[0]


def progress_results(output: str) -> list[TestResult]:
    """The verdicts pytest -v printed so far (for a run stopped before its JUnit file)."""
    rows: list[TestResult] = []
    for line in output.splitlines():
        m = _PROGRESS.match(line.strip())
        if m:
            word = m["word"]
            reason = "" if word == "PASSED" else f"pytest said {word} (no JUnit: interrupted)"
            rows.append(TestResult("", junit_name(m["id"]), _WORDS[word], reason))
    return rows


def guest_path(spec: SuiteSpec) -> str:
    """The folder pytest runs, relative to the repo here and to PAYLOAD in the guest."""
    return spec.path or DEFAULT_PATH


def targets(spec: SuiteSpec) -> list[str]:
    """What pytest is given: the suite's folder, or the tests a selection narrowed it to
    (harness/selection.py): node ids under the folder, else one -k expression."""
    path = guest_path(spec)
    ids = [t for t in spec.tests if ".py" in t]
    exprs = [t for t in spec.tests if ".py" not in t]
    argv = [f"{path}/{t}" for t in ids] or [path]
    if exprs:
        argv += ["-k", " or ".join(f"({e})" for e in exprs)]
    return argv


def run(s: Suite) -> None:
    path = guest_path(s.spec)
    out = f"{OUTPUT}/{slug(s.name)}"
    xml = f"{out}/junit.xml"
    log = s.dir / "pytest.log"
    argv = [
        "sh",
        "-c",
        'mkdir -p "$1" && shift && exec "$@"',
        "sh",
        out,
        "python3",
        "-m",
        "pytest",
        *targets(s.spec),
        "-p",
        "no:cacheprovider",
        "-rs",
        "-v",
        f"--junitxml={xml}",
    ]
    ran = s.exec(argv, s.spec.timeout_s, log, PAYLOAD, test=path, partial=progress_results)
    rel = s.ctx.recorder.relative(log)
    if ran.lost:
        s.lost(path, ran, log, [])
        return
    text = s.ctx.remote.read_text(xml)
    if text is not None:
        (s.dir / "junit.xml").write_text(text)
        try:
            parsed = junit.parse(text, s.name, log=rel)
        except junit.JUnitError as exc:
            s.add(path, Outcome.ERROR, f"unreadable JUnit from pytest: {exc}", log=rel)
            return
        for r in parsed:
            s.run.results.append(r)
            s.ctx.recorder.add(r)
        # The suite records its feature probe as JUnit properties: environment facts.
        probed = {
            f"guest probe: {k.removeprefix('gmemlab.')}": v
            for k, v in junit.properties(text).items()
        }
        if probed:
            s.ctx.recorder.environment(**probed)
            s.run.note = "the guest suite's feature probe is under Environment"
    if ran.timed_out:
        s.add_timeout(path, f"pytest did not finish within {s.spec.timeout_s} s", ran, rel)
    elif text is None:
        s.add_ended(
            path, Outcome.MISSING, f"pytest wrote no JUnit file (exit {ran.exit_code})", ran, rel
        )
    elif ran.exit_code not in (0, 1):
        # 2 interrupted, 3 internal error, 4 usage error, 5 nothing collected.
        s.add(
            path,
            Outcome.ERROR,
            f"pytest exited {ran.exit_code}",
            excerpt=tail(ran.stdout + ran.stderr),
            log=rel,
        )
