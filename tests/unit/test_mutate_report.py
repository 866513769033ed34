"""The mutation report: scores side by side, the kill matrix, survivors with their diff
and source, what was not counted; scores.json and load_scores for the history store."""

from __future__ import annotations

import json
from pathlib import Path

from harness.mutate import state as st
from harness.mutate.classify import ANY, BOOT, Verdict
from harness.mutate.mutants import generate
from harness.mutate.notes import Notes
from harness.mutate.notes import load as load_notes
from harness.mutate.report import load_scores, render
from harness.mutate.state import MutantRecord, MutationState, Status
from tests.unit.mutate_fakes import FILE, SOURCE

K, V, U = Verdict.KILLED, Verdict.SURVIVED, Verdict.UNKNOWN


def make_state(run_dir: Path) -> MutationState:
    every = {m.mutated: m for m in generate(FILE, SOURCE)}
    (run_dir / "pristine" / "virt" / "kvm").mkdir(parents=True)
    (run_dir / "pristine" / FILE).write_text(SOURCE)
    picks = [
        ("\tif (pages >= 16)", Status.DONE, {"gmem-ioctl": K, "kselftests": V}),
        ("\treturn pages * extra;", Status.DONE, {"gmem-ioctl": V, "kselftests": V}),
        ("\tif (0==1)", Status.DONE, {"gmem-ioctl": K, "kselftests": K, BOOT: K}),
        ("\tint extra = 1;", Status.DONE, {"gmem-ioctl": U, "kselftests": K}),
        ("\t\treturn pages - 1; continue;", Status.STILLBORN, {}),
        ("\textra = extra - 0;", Status.EQUIVALENT, {}),
        ("\tif (pages > (16-1))", Status.DUPLICATE, {}),
        ("\treturn pages % extra;", Status.READY, {}),
    ]
    state = MutationState(
        tree="/cache/mutate-trees/linux",
        files={FILE: "0" * 64},
        suites=["gmem-ioctl", "kselftests"],
        seed=3,
        sample=4,
        filters={"function": ["kvm_gmem_pages"]},
        order=[every[line].id for line, _, _ in picks],
        baseline={"gmem-ioctl": {"t1": "pass", "t9": "fail"}, "kselftests": {"t1": "pass"}},
    )
    for line, status, verdicts in picks:
        m = every[line]
        rec = MutantRecord(m, status, verdicts=dict(verdicts), run_s=40.0)
        rec.why = {s: f"why {s}" for s in verdicts}
        if status is Status.STILLBORN:
            rec.reason = "guest_memfd.c:9:34: error: continue statement not within a loop"
        if status is Status.DUPLICATE:
            rec.reason = "object file byte-identical to mutant x's"
        state.records[m.id] = rec
    st.save(state, run_dir)
    return state


def test_markdown_report(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    html, md = render(state, tmp_path)
    text = md.read_text()
    assert "**Incomplete:** 4 mutant(s) ran, 1 still to go" in text
    assert "filters function=['kvm_gmem_pages'] \n\nMutants walked: 8 of 8 generated" in text
    # Scores side by side: gmem-ioctl 2 killed of 3 decided, kselftests 2 of 4.
    assert "| gmem-ioctl | 2 | 1 | 1 | 67% |" in text
    assert "| kselftests | 2 | 2 | 0 | 50% |" in text
    assert f"| **{ANY}** | 3 | 1 | 0 | 75% |" in text
    # The matrix: one row per mutant that ran, a boot column because one crashed there.
    assert "| mutant | where | function | mutated line | gmem-ioctl | kselftests | boot |" in text
    assert "| kvm_gmem_pages | `if (pages >= 16)` | K | S |  |" in text
    assert "| `if (0==1)` | K | K | K |" in text
    # Survivors: the diff and the source around the line, the mutated line marked.
    assert "survived kselftests" in text and "survived gmem-ioctl, kselftests" in text
    assert "-\tif (pages > 16)\n+\tif (pages >= 16)" in text
    assert "    8> \tif (pages > 16)" in text
    assert "killed by gmem-ioctl: why gmem-ioctl" in text
    # Not counted, each with its reason.
    assert "gmem-ioctl: why gmem-ioctl;" in text  # the unknown one
    assert "continue statement not within a loop" in text
    assert "`extra = extra - 0;`" in text
    assert "byte-identical to mutant x's" in text
    assert "- gmem-ioctl: t9" in text
    assert html.read_text().count('<td class="S">S</td>') == 3


def test_html_escapes_source_text(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    html, _ = render(state, tmp_path)
    assert "if (pages &gt;= 16)" in html.read_text()


def test_scores_json_and_load_scores(tmp_path: Path) -> None:
    make_state(tmp_path)
    render(st.load(tmp_path) or make_state(tmp_path), tmp_path)
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["complete"] is False
    by_suite = {s["suite"]: s for s in data["scores"]}
    assert by_suite["gmem-ioctl"]["score"] == 2 / 3
    loaded = load_scores(tmp_path)
    assert loaded["kselftests"].killed == 2 and loaded["kselftests"].survived == 2


# --- survivor notes -----------------------------------------------------------------


def write_notes(run_dir: Path, state: MutationState) -> Notes:
    """Notes on the fixture's mutants: [0] killed by gmem-ioctl, survived kselftests;
    [1] survived both; [2] killed by both; [4] stillborn."""
    ids = [r.mutant.id for r in state.walked()]
    path = run_dir / "notes.yaml"
    path.write_text(
        f"""\
{ids[0]}:
  status: killed-by
  test: tests/guest/test_gmem_ioctl.py::test_big[x-1]
  why: "checks <b>16</b> pages"
{ids[1]}:
  status: equivalent
  why: |
    extra is always 1 here
    <script>alert(1)</script>
{ids[2]}:
  status: equivalent
  why: wrong claim
{ids[4]}:
  status: open
"""
    )
    return load_notes(path, set(state.order))


def test_notes_beside_survivors_and_both_scores(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    ids = [r.mutant.id for r in state.walked()]
    notes = write_notes(tmp_path, state)
    html, md = render(state, tmp_path, notes, kernel="linux-7.3", config="lab")
    text = md.read_text()
    # Raw and non-equivalent scores side by side: [1] (survived both) is argued
    # equivalent, so each suite loses one survivor from the second score.
    assert "| suite | killed | survived | unknown | score | argued equivalent |" in text
    assert "| gmem-ioctl | 2 | 1 | 1 | 67% | 1 | 100% | 0 |" in text
    assert "| kselftests | 2 | 2 | 0 | 50% | 1 | 67% | 0 |" in text
    assert f"| **{ANY}** | 3 | 1 | 0 | 75% | 1 | 100% | 0 |" in text
    assert (
        "**Survivors:** 2 survivor(s): 2 accounted for (1 argued equivalent, 1 killed by a "
        "newer test), 0 open." in text
    )
    # The note beside its survivor, before the diff; its text quoted, HTML escaped.
    survivor = text.split(f"### `{ids[0]}`")[1].split("```diff")[0]
    assert "**Note: killed by `tests/guest/test_gmem_ioctl.py::test_big[x-1]`**" in survivor
    assert "> checks &lt;b&gt;16&lt;/b&gt; pages" in survivor
    # The argued equivalent one is in its own section, not among the survivors.
    survivors, rest = text.split("## Survivors")[1].split("## Argued equivalent (1)")
    assert ids[1] not in survivors and f"### `{ids[1]}`" in rest
    assert "> extra is always 1 here\n> &lt;script&gt;" in rest
    # Notes the run contradicts, or on mutants that did not survive.
    assert f"`{ids[2]}` argued equivalent, but killed by gmem-ioctl, kselftests, boot" in rest
    assert f"`{ids[4]}` (open): the mutant is stillborn" in rest
    page = html.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "checks &lt;b&gt;16&lt;/b&gt; pages" in page
    assert "<th>non-equivalent score</th>" in page
    data = json.loads((tmp_path / "scores.json").read_text())
    assert (data["kernel"], data["config"]) == ("linux-7.3", "lab")
    assert data["notes"]["sha256"] == notes.sha256
    assert data["survivors"] == {
        "equivalent": [ids[1]],
        "contradicted": [ids[2]],
        "killed_by": [ids[0]],
        "open": [],
    }
    by_suite = {s["suite"]: s for s in data["non_equivalent_scores"]}
    assert by_suite["kselftests"]["score"] == 2 / 3


def test_an_open_survivor_and_one_without_a_note(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    ids = [r.mutant.id for r in state.walked()]
    path = tmp_path / "notes.yaml"
    path.write_text(f"{ids[1]}: {{status: open, why: needs a test of the fault path}}\n")
    _, md = render(state, tmp_path, load_notes(path, set(state.order)))
    text = md.read_text()
    assert (
        "2 survivor(s): 0 accounted for (0 argued equivalent, 0 killed by a newer test), 2 open"
        in text
    )
    assert "**Note: open.**\n\n> needs a test of the fault path" in text
    assert text.count("**No note:** add a test that kills it") == 1
    assert "## Argued equivalent (0)\n" in text
    assert "| gmem-ioctl | 2 | 1 | 1 | 67% | 0 | 67% | 1 |" in text


def test_without_notes_every_survivor_is_open(tmp_path: Path) -> None:
    text = render(make_state(tmp_path), tmp_path)[1].read_text()
    assert "**Survivors:** 2 survivor(s): 0 accounted for" in text
    assert "no notes file: `--notes FILE`" in text
    assert "## Argued equivalent" not in text and "No note" not in text
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["notes"] is None and data["non_equivalent_scores"] is None
    assert len(data["survivors"]["open"]) == 2
