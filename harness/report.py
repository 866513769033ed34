"""report.html and report.md from a run's summary, rendered with jinja2.

What a reviewer reads first: the verdict and a line saying what the kernel is (does it
carry the series? the guest suite's feature probe), then the comparison when there is
one (an A/B run: what the series breaks that its base passes), then the failures with
their excerpts. Skips follow grouped by reason (one line per reason with its count, the
tests behind a <details>), so 97 skips for one missing feature read as one line; then
each suite's results, the full feature probe, the environment and the timings. The
HTML carries its own CSS and nothing else, so it opens in a browser with no network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.results import SEVERITY, Outcome, RunRecord, TestResult

_PROBLEMS = (Outcome.CRASH, Outcome.FAIL, Outcome.TIMEOUT, Outcome.ERROR, Outcome.MISSING)
# The guest suite records its feature probe as environment keys with this prefix
# (harness/suites/pytest_suite.py: JUnit properties "gmemlab.<name>").
PROBE_PREFIX = "guest probe: "


def template_env(autoescape: bool) -> jinja2.Environment:
    """The templates' environment, shared by every page the lab renders (compare too)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    return env


@dataclass(frozen=True)
class Lead:
    """A section placed first, right under the verdict: an A/B comparison (the
    caller renders it: harness.history_report.comparison_md/html)."""

    md: str
    html: Markup
    # One line for the header: e.g. "A/B against mainline: 2 regressions".
    headline: str = ""
    regressed: bool = False


@dataclass(frozen=True)
class Feature:
    name: str
    value: str
    # "yes", "no" or "" (not a yes/no fact): the CSS class and the Markdown marker.
    state: str = ""


@dataclass(frozen=True)
class Features:
    """The probed kernel features, as a reviewer asks about them."""

    # Does the kernel carry the series (in-place conversion through the guest_memfd
    # ioctl)? None when the probe did not say.
    series: bool | None
    headline: str
    rows: tuple[Feature, ...]
    # Every probe key as recorded, for the full table.
    raw: tuple[tuple[str, str], ...]


def _truth(value: object) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    return None


def _yes_no(value: object, why: object = None) -> tuple[str, str]:
    truth = _truth(value)
    if truth is None:
        return str(value), ""
    text = "yes" if truth else "no"
    if why not in (None, "", "0"):
        text += f" ({why})"
    return text, "yes" if truth else "no"


def _compact(value: object) -> str:
    """JSON-looking probe values on one short line ({"default": 3} stays readable)."""
    text = str(value)
    try:
        return json.dumps(json.loads(text), separators=(", ", ": "), sort_keys=True)
    except ValueError:
        return text


def kernel_features(environment: dict[str, Any]) -> Features | None:
    """The guest probe's findings from a run's environment, or None if it never ran."""
    probe = {
        k.removeprefix(PROBE_PREFIX): v
        for k, v in environment.items()
        if k.startswith(PROBE_PREFIX)
    }
    if not probe:
        return None
    rows: list[Feature] = []

    def yes_no(name: str, key: str, why: str | None = None) -> None:
        if key in probe:
            text, state = _yes_no(probe[key], probe.get(why) if why else None)
            rows.append(Feature(name, text, state))

    def plain(name: str, key: str) -> None:
        value = probe.get(key)
        if value not in (None, "", "null", "[]", "{}"):
            rows.append(Feature(name, _compact(value)))

    yes_no("in-place conversion: KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd", "attrs2_gmem",
           "attrs2_gmem_errno")  # fmt: skip
    yes_no("KVM_SET_MEMORY_ATTRIBUTES2 on a VM", "attrs2_vm", "attrs2_vm_errno")
    plain("content modes accepted", "content_modes")
    plain("kvm.gmem_in_place_conversion", "gmem_in_place_conversion_param")
    plain("kvm.vm_memory_attributes", "vm_memory_attributes_param")
    yes_no("guest_memfd", "guest_memfd")
    plain("guest_memfd flags (per VM type)", "gmem_flags")
    plain("VM types", "vm_types")
    plain("per-VM memory attributes (per VM type)", "vm_attributes")
    yes_no("vCPUs run", "vcpus_run", "vcpus_run_reason")
    yes_no("GUP_TEST", "gup_test")
    plain("NUMA nodes", "numa_nodes")
    plain("probe errors", "probe_errors")
    series = _truth(probe["attrs2_gmem"]) if "attrs2_gmem" in probe else None
    kernel = probe.get("kernel") or environment.get("guest_kernel") or "the kernel"
    if series is None:
        headline = f"{kernel}: the probe did not say whether it carries the series"
    elif series:
        headline = f"{kernel} carries the series: KVM_SET_MEMORY_ATTRIBUTES2 works on a guest_memfd"
    else:
        why = probe.get("attrs2_gmem_errno") or "absent"
        headline = (
            f"{kernel} does not carry the series: KVM_SET_MEMORY_ATTRIBUTES2 on a "
            f"guest_memfd answers {why}"
        )
    raw = tuple((k, _compact(v)) for k, v in sorted(probe.items()))
    return Features(series, headline, tuple(rows), raw)


@dataclass(frozen=True)
class SkipGroup:
    suite: str
    reason: str
    tests: tuple[str, ...]


def skip_groups(results: list[TestResult]) -> list[SkipGroup]:
    """Skips by (suite, reason), the biggest group first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.outcome is Outcome.SKIP:
            groups.setdefault((r.suite, r.reason or "(no reason given)"), []).append(r.name)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [SkipGroup(suite, reason, tuple(tests)) for (suite, reason), tests in ordered]


def context(record: RunRecord, lead: Lead | None = None) -> dict[str, Any]:
    order = {o: i for i, o in enumerate(SEVERITY)}
    problems = sorted(
        (r for r in record.results if r.outcome in _PROBLEMS),
        key=lambda r: order[r.outcome],
    )
    suites: dict[str, list[TestResult]] = {}
    for r in record.results:
        suites.setdefault(r.suite, []).append(r)
    for name in record.suites:
        suites.setdefault(name, [])
    ran = {
        name: [r for r in rows if r.outcome is not Outcome.SKIP] for name, rows in suites.items()
    }
    skipped = {name: sum(r.outcome is Outcome.SKIP for r in rows) for name, rows in suites.items()}
    environment = {k: v for k, v in record.environment.items() if not k.startswith(PROBE_PREFIX)}
    return {
        "r": record,
        "lead": lead,
        "features": kernel_features(record.environment),
        "problems": problems,
        "skips": skip_groups(record.results),
        "suites": suites,
        "ran": ran,
        "skipped": skipped,
        "environment": environment,
        "outcomes": [o.value for o in SEVERITY],
        "stage_total": sum(s.get("seconds", 0.0) for s in record.stages.values()),
    }


def render(record: RunRecord, run_dir: Path, lead: Lead | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md into run_dir; returns their paths. A lead (an
    A/B comparison) becomes the first section of both."""
    ctx = context(record, lead)
    html = run_dir / "report.html"
    md = run_dir / "report.md"
    html.write_text(template_env(autoescape=True).get_template("report.html.j2").render(ctx))
    md.write_text(template_env(autoescape=False).get_template("report.md.j2").render(ctx))
    return html, md
