"""What a person sees on the terminal during a run: stage lines and the results that
need a look. Everything else (logs, passes, skips) is in the run folder."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from harness.results import Outcome, TestResult


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def result(self, r: TestResult) -> None:
        # Passes and skips are in the report; the terminal shows what needs a look.
        if r.outcome in (Outcome.PASS, Outcome.SKIP):
            return
        reason = f": {r.reason}" if r.reason else ""
        # Named like the report does (suite / test): "missing  later / (suite): not run".
        self.say(f"    {r.outcome.value:8} {r.suite} / {r.name}{reason}"[:200])
