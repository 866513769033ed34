"""A run as KCIDB JSON: how results leave one machine for the kernel community's dashboards.

One checkout (the tree's commit and, for a series applied from mail, its patches'
Message-IDs), one build (config set, config hash, status) and one test per result,
validated against the KCIDB schema of the `kcidb-io` package before anything is
written. Submission (`kcidb-submit`, with the submitter's credentials) is the user's
step, not the lab's: README.md, "KCIDB".

Statuses: pass -> PASS, fail -> FAIL, crash -> FAIL (misc says it was a crash), error
and timeout -> ERROR, missing -> MISS, skip -> SKIP. Log URLs are the artifact root
(the URL the run folder is published under) joined with each log's path in the run
folder; without a root, logs are named in misc only (KCIDB takes absolute URLs only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from harness.arch import X86_64
from harness.errors import LabError, UserError
from harness.results import Outcome, RunRecord, TestResult, load_summary

DEFAULT_ORIGIN = "gmemlab"
# KCIDB's rules: origin [a-z0-9_]+; test path segments [a-zA-Z0-9_-]+ joined by '.'.
_ORIGIN = re.compile(r"^[a-z0-9_]+$")
_PATH_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_MAX_EXCERPT = 16384

STATUS: dict[Outcome, str] = {
    Outcome.PASS: "PASS",
    Outcome.FAIL: "FAIL",
    Outcome.CRASH: "FAIL",
    Outcome.ERROR: "ERROR",
    Outcome.TIMEOUT: "ERROR",
    Outcome.MISSING: "MISS",
    Outcome.SKIP: "SKIP",
}
_NOTES = {
    Outcome.CRASH: "the kernel crashed (panic, oops, BUG, KASAN or WARN on the console)",
    Outcome.TIMEOUT: "the test did not finish within its timeout",
    Outcome.MISSING: "expected but no result was produced",
}
# Results of this suite are the build's own (a tree that does not compile), not tests.
BUILD_SUITE = "build"


def test_path(suite: str, name: str) -> str:
    """gmemlab.<suite>.<test>, each part cut to KCIDB's characters; a test's own
    hierarchy (pytest's module.Class::test, a kselftest's x86/name) becomes dots."""
    name = re.sub(r"\.py(?=::|$)", "", name)  # a pytest node id's module file
    parts = ["gmemlab", suite, *re.split(r"::|/|\.", name)]
    cleaned = [_PATH_UNSAFE.sub("_", p).strip("_") for p in parts]
    return ".".join(p for p in cleaned if p)


def _text(value: str, limit: int | None = None) -> str:
    text = value.replace("\0", "")
    return text[-limit:] if limit is not None else text


def _time(iso: str) -> str | None:
    """summary.json's local time as an RFC 3339 date-time (with its UTC offset)."""
    try:
        when = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (when if when.tzinfo else when.astimezone()).isoformat()


def _url(root: str | None, relative: str) -> str | None:
    if not root:
        return None
    return root.rstrip("/") + "/" + urllib.parse.quote(relative)


def _message_id(raw: str) -> str | None:
    value = raw.strip().strip("<>").strip()
    return value if "@" in value else None


def load_manifest(run: RunRecord, manifest: Path | None) -> dict[str, Any]:
    """The build's manifest.json: the one given, else the one the run used, if it is
    still there (a CI's report job may have only the run folder: then {})."""
    path = manifest or Path(str(run.environment.get("manifest", "")))
    if manifest is None and not (str(path) not in ("", ".") and path.is_file()):
        return {}
    return read_json(path, "--manifest", "pass a build's manifest.json")


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON object from a file the user named (`what`: the option), or a UserError."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path}: unreadable ({exc})", fix) from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: not a JSON object", fix)
    return data


def patches_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-patch records of a series applied from mail (`mbox` kernels), if any."""
    source = manifest.get("source") or {}
    found = manifest.get("patches") or source.get("patches") or []
    return [p for p in found if isinstance(p, dict)]


def _checkout(
    run: RunRecord, manifest: dict[str, Any], origin: str, extra: dict[str, Any]
) -> dict[str, Any]:
    source = manifest.get("source") or {}
    env = run.environment
    commit = str(source.get("commit") or env.get("kernel_commit") or "")
    ident = commit or f"run-{run.run_id}"
    if source.get("dirty"):
        ident += f"+{str(source.get('diff_sha256') or 'dirty')[:16]}"
    # A series that did not apply has no build manifest: the run recorded its patches.
    patches = patches_of(manifest) or [p for p in run.series if isinstance(p, dict)]
    checkout: dict[str, Any] = {"origin": origin, "valid": True}
    misc: dict[str, Any] = {"kernel": env.get("kernel") or manifest.get("kernel")}
    if _SHA1.match(commit):
        checkout["git_commit_hash"] = commit
    elif commit:
        misc["source_version"] = commit  # a Debian package version, not a commit
    describe = source.get("describe") or env.get("kernel_describe")
    if describe:
        checkout["git_commit_name"] = str(describe)
        checkout["comment"] = str(describe)
    url = str(extra.get("repository_url") or source.get("origin") or "")
    if url.startswith("https://"):
        checkout["git_repository_url"] = url
    if extra.get("branch"):
        checkout["git_repository_branch"] = str(extra["branch"])
    for key in ("merge_base", "target_branch"):
        if extra.get(key):
            misc[key] = extra[key]
    if source.get("base"):
        misc["series_base"] = source["base"]
    if source.get("dirty"):
        misc["dirty"] = True
        misc["diff_sha256"] = source.get("diff_sha256")
    if patches:
        ids = [_message_id(str(p.get("message_id", ""))) for p in patches]
        first = next((m for m in ids if m), None)
        if first:
            checkout["message_id"] = first
        hashes = [str(p.get("sha256", "")) for p in patches]
        if all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes):
            joined = "".join(f"{h}\n" for h in hashes)
            checkout["patchset_hash"] = hashlib.sha256(joined.encode()).hexdigest()
            ident += f"+{checkout['patchset_hash'][:16]}"
        else:
            ident += "+" + hashlib.sha256("\n".join(m or "" for m in ids).encode()).hexdigest()[:16]
        checkout["valid"] = all(p.get("status", "applied") == "applied" for p in patches)
        subject = str(patches[0].get("subject", ""))
        if subject:
            checkout["comment"] = _text(subject)
        misc["patches"] = [
            {k: p[k] for k in ("index", "subject", "message_id", "status") if k in p}
            for p in patches
        ]
    checkout["id"] = f"{origin}:{ident}"
    started = _time(run.started)
    if started:
        checkout["start_time"] = started
    checkout["misc"] = {k: v for k, v in misc.items() if v is not None}
    return checkout


def _build_status(run: RunRecord, build_results: list[TestResult]) -> str:
    if any(r.outcome in (Outcome.FAIL, Outcome.CRASH) for r in build_results):
        return "FAIL"  # the tree did not compile: a finding about the kernel
    stage = run.stages.get("build", {}).get("status")
    if stage == "ok":
        return "PASS"
    return "ERROR" if stage in ("failed", "interrupted") else "MISS"


def _build(
    run: RunRecord,
    manifest: dict[str, Any],
    checkout: dict[str, Any],
    build_results: list[TestResult],
    origin: str,
) -> dict[str, Any]:
    env = run.environment
    config = manifest.get("config") or {}
    config_hash = str(config.get("hash") or env.get("config_hash") or "")
    local = checkout["id"].split(":", 1)[1]
    suffix = config_hash[:16] if config_hash else f"run-{run.run_id}"
    build: dict[str, Any] = {
        "id": f"{origin}:{local}:{suffix}",
        "checkout_id": checkout["id"],
        "origin": origin,
        "architecture": X86_64.name,
        "status": _build_status(run, build_results),
    }
    name = manifest.get("config_name") or env.get("config")
    if name:
        build["config_name"] = str(name)
    if manifest.get("compiler"):
        build["compiler"] = _text(str(manifest["compiler"]))
    if checkout.get("start_time"):
        build["start_time"] = checkout["start_time"]
    seconds = run.stages.get("build", {}).get("seconds")
    if isinstance(seconds, int | float):
        build["duration"] = float(seconds)
    reproduce = manifest.get("reproduce") or {}
    if reproduce.get("make"):
        build["command"] = _text(str(reproduce["make"]))
    problems = [r for r in build_results if r.outcome is not Outcome.PASS]
    if problems:
        build["log_excerpt"] = _text(problems[0].excerpt or problems[0].reason, _MAX_EXCERPT)
    misc: dict[str, Any] = {
        "config_hash": config_hash or None,
        "config_base": config.get("base"),
        "fragments": [f.get("name") for f in config.get("fragments", []) if isinstance(f, dict)]
        or None,
        "selftests": {k: v.get("status") for k, v in (manifest.get("selftests") or {}).items()}
        or None,
    }
    build["misc"] = {k: v for k, v in misc.items() if v is not None}
    return build


def _environment(run: RunRecord) -> dict[str, Any]:
    env = run.environment
    keys = ("accelerator", "cpu_model", "qemu_version", "nested", "guest_kernel", "boot_seconds")
    misc = {k: env[k] for k in keys if k in env}
    comment = f"QEMU VM ({env.get('accelerator', 'unknown accelerator')})"
    return {"comment": comment, "misc": misc}


def _test(
    r: TestResult,
    run: RunRecord,
    build_id: str,
    test_id: str,
    origin: str,
    artifact_root: str | None,
    environment: dict[str, Any],
) -> dict[str, Any]:
    test: dict[str, Any] = {
        "id": test_id,
        "build_id": build_id,
        "origin": origin,
        "path": test_path(r.suite, r.name),
        "status": STATUS[r.outcome],
        "duration": float(r.seconds),
        "environment": environment,
    }
    if r.reason:
        test["comment"] = _text(r.reason)
    if r.excerpt:
        test["log_excerpt"] = _text(r.excerpt, _MAX_EXCERPT)
    started = _time(run.started)
    if started:
        test["start_time"] = started
    misc: dict[str, Any] = {
        "outcome": r.outcome.value,
        "suite": r.suite,
        "name": r.name,
        "cell": run.cell,
        "run_id": run.run_id,
    }
    if r.outcome in _NOTES:
        misc["note"] = _NOTES[r.outcome]
    if r.log:
        misc["log"] = r.log
        url = _url(artifact_root, r.log)
        if url:
            test["log_url"] = url
    console = f"{run.cell}/console.log"
    console_url = _url(artifact_root, console)
    if console_url:
        test["output_files"] = [{"name": "console.log", "url": console_url}]
    test["misc"] = misc
    return test


def export(
    run_dir: Path,
    origin: str = DEFAULT_ORIGIN,
    artifact_root: str | None = None,
    manifest: Path | None = None,
    checkout_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run folder as one KCIDB document (validated; raises LabError if it is not)."""
    if not _ORIGIN.match(origin):
        raise UserError(f"--origin {origin!r}: KCIDB origins are [a-z0-9_]+", "e.g. gmemlab")
    if artifact_root is not None and not re.match(r"^[a-z][a-z0-9+.-]*://", artifact_root):
        raise UserError(
            f"--artifact-root {artifact_root!r}: not an absolute URL",
            "pass the URL the run folder is published under",
        )
    if not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: no summary.json", "pass a run folder (results/<run-id>)")
    run = load_summary(run_dir)
    data = load_manifest(run, manifest)
    checkout = _checkout(run, data, origin, checkout_info or {})
    build_results = [r for r in run.results if r.suite == BUILD_SUITE]
    build = _build(run, data, checkout, build_results, origin)
    environment = _environment(run)
    tests: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for r in run.results:
        if r.suite == BUILD_SUITE:
            continue
        local = f"{run.run_id}:{run.cell}:{r.suite}:{r.name}"
        seen[local] = seen.get(local, 0) + 1
        if seen[local] > 1:  # pytest writes a second case for a teardown error
            local += f"#{seen[local]}"
        tests.append(
            _test(r, run, build["id"], f"{origin}:{local}", origin, artifact_root, environment)
        )
    document = {
        "version": {"major": 5, "minor": 3},
        "checkouts": [checkout],
        "builds": [build],
        "tests": tests,
    }
    validate(document)
    return document


def validate(document: dict[str, Any]) -> None:
    """Check against the KCIDB schema (kcidb-io); a failure names the field."""
    try:
        import jsonschema
        from kcidb_io import schema
    except ImportError:
        raise UserError(
            "the kcidb-io package is not installed",
            "pip install 'gmemlab[kcidb]' (make venv installs it)",
        ) from None
    try:
        schema.V5_3.validate(document)
    except jsonschema.exceptions.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise LabError(f"the KCIDB document is not valid at {where}: {exc.message}") from None
