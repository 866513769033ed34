"""Kind command: an argv run in the guest (test-only suites: a deliberate failure, a long
sleep), one result from its exit status."""

from __future__ import annotations

import shlex

from harness.errors import InfraError
from harness.results import Outcome
from harness.suites.base import KSFT_SKIP, PAYLOAD, Suite, skip_reason


def run(s: Suite) -> None:
    if not s.spec.argv:
        raise InfraError(f"suite {s.name}: kind command needs argv", "add argv: [...] in lab.yaml")
    name = shlex.join(s.spec.argv)
    log = s.dir / "command.log"
    ran = s.exec(list(s.spec.argv), s.spec.timeout_s, log, PAYLOAD)
    rel = s.ctx.recorder.relative(log)
    if ran.lost:
        s.lost(name, ran, log, [])
    elif ran.timed_out:
        s.add_timeout(name, f"still running after {s.spec.timeout_s} s", ran, rel)
    elif ran.exit_code == 0:
        s.add(name, Outcome.PASS, seconds=ran.seconds, log=rel)
    elif ran.exit_code == KSFT_SKIP:
        s.add(name, Outcome.SKIP, skip_reason(ran.stdout), seconds=ran.seconds, log=rel)
    else:
        s.add_ended(name, Outcome.FAIL, f"exit status {ran.exit_code}", ran, rel)
