"""Reading lab.yaml: the file, the YAML, and pydantic's errors as lab.yaml key paths.

Every way the file can be wrong (missing, too big, not UTF-8, not YAML, a key given
twice, an unknown key, a bad value) is a UserError naming the file, the key path and
the expected form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness import names
from harness.config.lab import LabConfig
from harness.errors import UserError
from harness.paths import REPO_ROOT

DEFAULT_LAB_FILE = REPO_ROOT / "lab.yaml"
# A lab file is a page of YAML; anything this big is a mistake (or /dev/zero).
MAX_LAB_FILE_BYTES = 1 << 20


def _key_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc as lab.yaml's key path; an odd key (a hostile name) is quoted."""
    out = ""
    for i, part in enumerate(loc):
        if part == "[key]" and i == len(loc) - 1:
            out += " (the name)"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif names.SAFE_NAME.fullmatch(part) and ".." not in part:
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid lab configuration"]
    for item in err.errors():
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against README.md, 'lab.yaml')"
        loc = _key_path(item["loc"])
        if not loc:
            # Cross-reference problems: each line already starts with its key path.
            lines += [f"  {line}" for line in msg.splitlines()]
        else:
            lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently; in review, the first one is what a reader
    sees, so a duplicate could hide the value that is really used.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> object:
    """The lab file's YAML; every way it can be unreadable is a UserError naming it."""
    fix_path = "pass --lab FILE (a lab.yaml) or run from the checkout"
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a lab file", fix_path)
        if not path.exists():
            raise UserError(f"{path}: no such lab file", fix_path)
        if not path.is_file():
            raise UserError(f"{path}: not a regular file", fix_path)
        if path.stat().st_size > MAX_LAB_FILE_BYTES:
            raise UserError(
                f"{path}: {path.stat().st_size} bytes, more than a lab file can be "
                f"({MAX_LAB_FILE_BYTES} bytes)",
                fix_path,
            )
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})",
            "save lab.yaml as UTF-8",
        ) from None
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read the lab file: {exc.strerror or exc}",
            "check the file's permissions, or pass --lab FILE",
        ) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        detail = str(exc).replace('"<unicode string>"', str(path))
        fix = (
            "keep one of the two keys"
            if "duplicate key" in detail
            else "fix the syntax at the place named"
        )
        raise UserError(f"{path}: not valid YAML: {detail}", fix) from None
    except RecursionError:
        raise UserError(
            f"{path}: nested too deeply to be a lab file", "see README.md, lab.yaml"
        ) from None


def load(path: Path | None = None) -> LabConfig:
    """Read and validate lab.yaml; any problem is a UserError naming file and key."""
    path = (path or DEFAULT_LAB_FILE).absolute()
    raw = _read(path)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise UserError(
            f"{path}: expected a mapping (kernels:, configs:, ...) at the top level, got {kind}",
            "see README.md, lab.yaml",
        )
    if "root" in raw:
        # root is where lab.yaml was read from; the file cannot move it elsewhere.
        raise UserError(
            f"{path}: invalid lab configuration\n  root: unknown key (check its spelling "
            "against README.md, 'lab.yaml')",
            "fix lab.yaml at the keys named",
        )
    try:
        return LabConfig.model_validate({**raw, "root": path.resolve().parent})
    except ValidationError as exc:
        raise UserError(
            format_validation_error(path, exc), "fix lab.yaml at the keys named"
        ) from None
