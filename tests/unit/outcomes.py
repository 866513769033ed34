"""One-letter names of the outcomes, for the tables of expected results in the tests."""

from harness.results import Outcome

P, F, S, E = Outcome.PASS, Outcome.FAIL, Outcome.SKIP, Outcome.ERROR
C, T, M = Outcome.CRASH, Outcome.TIMEOUT, Outcome.MISSING
