"""Source kind `mbox`: a series from mail applied onto another lab.yaml kernel.

`kernels: NAME: {mbox: {file: PATH, base: OTHER}}` (or `message_id:` instead of
`file:`, fetched with b4). The base is prepared as its own kind, then
harness/patchset.py applies the series in a worktree of its own; the tree's build
identity is the base's identity plus the mbox's sha256. A patch that does not apply
raises a TreeError (the cell fails, exit 1), never an infrastructure error.
"""

from __future__ import annotations

from pathlib import Path

from harness import patchset
from harness.config import KernelSource, LabConfig
from harness.source.tree import SourceTree


def prepare(lab: LabConfig, name: str, spec: KernelSource) -> SourceTree:
    assert spec.mbox is not None
    m = spec.mbox
    if m.file is not None:
        mbox_file = m.file if m.file.is_absolute() else lab.root / m.file
    else:
        assert m.message_id is not None
        mbox_file = patchset.fetch(m.message_id)
    # The registry lives in the package's __init__, which imports this module.
    from harness.source import prepare_source

    base = prepare_source(lab, m.base)
    tree = patchset.apply_series(base, mbox_file)
    return SourceTree(
        name=name,
        kind="mbox",
        path=tree.path,
        commit=tree.commit,
        describe=f"{base.describe}+{tree.applied} patches",
        origin=f"{Path(mbox_file).name} onto {m.base} ({base.origin})",
        base=base.identity,
        mbox_sha256=tree.mbox_sha256,
        patches=tree.patches,
        build_root=tree.build_root,
    )
