"""lab mutate's line selection and generation: ranges, C function spans on guest_memfd.c
style text, a series' diff, universalmutator's mutants and a reproducible sample."""

from __future__ import annotations

import pytest

from harness.mutate import mutants as mm
from harness.mutate.select import (
    diff_lines,
    enclosing_function,
    function_lines,
    function_spans,
    mask,
    parse_ranges,
)

# Shaped like virt/kvm/guest_memfd.c: a struct, a macro with braces and a continuation,
# comments and strings holding braces, a prototype, a "__" function, a multi-line
# signature, a lock annotation before the body, an ops table initializer. Written with
# spaces, indented with tabs like the kernel.
GMEM = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/kvm_host.h>

struct gmem_file {
    struct kvm *kvm;
    u64 flags;
};

#define kvm_gmem_for_each_file(f, inode) \\
    list_for_each_entry(f, &GMEM_I(inode)->gmem_file_list, entry) {

static long kvm_gmem_punch_hole(struct inode *inode, loff_t offset, loff_t len);

static int __kvm_gmem_create(struct kvm *kvm, loff_t size, u64 flags)
{
    static const char *name = "[kvm-gmem] {";
    int fd;

    /* A "}" in a comment { does not close anything. */
    fd = get_unused_fd_flags(0);
    if (fd < 0)
        return fd;
    return 0;
}

static long kvm_gmem_allocate(struct inode *inode, loff_t offset,
                  loff_t len)
{
    pgoff_t start, index, end;
    char brace = '}';

    start = offset >> PAGE_SHIFT;
    end = (offset + len) >> PAGE_SHIFT;
    for (index = start; index < end; ) {
        index++;
    }
    return 0;
}

static void kvm_gmem_invalidate(struct kvm *kvm) __must_hold(&kvm->mmu_lock)
{
    kvm_flush_remote_tlbs(kvm);
}

static const struct file_operations kvm_gmem_fops = {
    .release    = kvm_gmem_release,
};

int kvm_gmem_create(struct kvm *kvm, struct kvm_create_guest_memfd *args)
{
    u64 flags = args->flags;

    return __kvm_gmem_create(kvm, args->size, flags);
}
""".replace("    ", "\t")


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_parse_ranges() -> None:
    assert parse_ranges("3-5,9") == frozenset({3, 4, 5, 9})
    assert parse_ranges(" 7 ") == frozenset({7})
    for bad in ("5-3", "0-2", "x", "", "1-2-3"):
        with pytest.raises(ValueError):
            parse_ranges(bad)


def test_mask_keeps_offsets_and_blanks_comments_strings_and_directives() -> None:
    masked = mask(GMEM)
    assert len(masked) == len(GMEM)
    assert masked.count("\n") == GMEM.count("\n")
    assert "kvm-gmem" not in masked and "does not close" not in masked
    assert "list_for_each_entry" not in masked  # the #define's continuation line too
    assert "'}'" not in masked
    assert "get_unused_fd_flags" in masked


def test_function_spans_on_guest_memfd_like_text() -> None:
    spans = function_spans(GMEM)
    assert set(spans) == {
        "__kvm_gmem_create",
        "kvm_gmem_allocate",
        "kvm_gmem_invalidate",
        "kvm_gmem_create",
    }
    # A "__" function is a function, not an annotation.
    assert spans["__kvm_gmem_create"] == [
        (line_of(GMEM, "static int __kvm_gmem_create"), line_of(GMEM, "return 0;") + 1)
    ]
    # The multi-line signature starts at the name's line; the body ends at its brace.
    start, end = spans["kvm_gmem_allocate"][0]
    assert start == line_of(GMEM, "static long kvm_gmem_allocate")
    assert GMEM.splitlines()[end - 1] == "}"
    assert end > line_of(GMEM, "for (index = start")
    # The lock annotation's arguments are not taken for the parameter list.
    assert spans["kvm_gmem_invalidate"][0][0] == line_of(GMEM, "kvm_gmem_invalidate(struct")
    # Neither the prototype nor the ops table is a definition.
    assert "kvm_gmem_punch_hole" not in spans


def test_function_lines_and_enclosing_function() -> None:
    lines = function_lines(GMEM, ["kvm_gmem_create"])
    assert line_of(GMEM, "return __kvm_gmem_create") in lines
    assert line_of(GMEM, "fd = get_unused_fd_flags") not in lines
    with pytest.raises(KeyError, match="kvm_gmem_nope"):
        function_lines(GMEM, ["kvm_gmem_create", "kvm_gmem_nope"])
    assert enclosing_function(GMEM, line_of(GMEM, "index++")) == "kvm_gmem_allocate"
    assert enclosing_function(GMEM, line_of(GMEM, ".release")) is None


SERIES_DIFF = """\
diff --git a/virt/kvm/kvm_main.c b/virt/kvm/kvm_main.c
--- a/virt/kvm/kvm_main.c
+++ b/virt/kvm/kvm_main.c
@@ -10,2 +10,3 @@
 a
+b
 c
diff --git a/virt/kvm/guest_memfd.c b/virt/kvm/guest_memfd.c
index 1111111..2222222 100644
--- a/virt/kvm/guest_memfd.c
+++ b/virt/kvm/guest_memfd.c
@@ -20,6 +20,7 @@ static int __kvm_gmem_create(struct kvm *kvm, loff_t size, u64 flags)
 \tint fd;
{SP}
-\tfd = get_unused_fd_flags(0);
+\tfd = get_unused_fd_flags(O_CLOEXEC);
+++ an added line that looks like a file header
 \tif (fd < 0)
 \t\treturn fd;
 \treturn 0;
@@ -40,3 +41,2 @@
 \tstart = 0;
-\tend = 0;
 \treturn 0;
""".replace("{SP}", " ")


def test_diff_lines_are_the_added_lines_in_new_numbering() -> None:
    assert diff_lines(SERIES_DIFF, "virt/kvm/guest_memfd.c") == frozenset({22, 23})
    assert diff_lines(SERIES_DIFF, "virt/kvm/kvm_main.c") == frozenset({11})
    assert diff_lines(SERIES_DIFF, "virt/kvm/other.c") == frozenset()


def test_generate_on_selected_lines_only() -> None:
    wanted = function_lines(GMEM, ["kvm_gmem_allocate"])
    found = mm.generate("virt/kvm/guest_memfd.c", GMEM, wanted)
    assert found, "universalmutator made no mutant of kvm_gmem_allocate"
    assert {m.line for m in found} <= wanted
    assert len({m.id for m in found}) == len(found)
    minus = next(m for m in found if "(offset - len)" in m.mutated)
    assert minus.original == GMEM.splitlines()[minus.line - 1]
    assert minus.diff.startswith("--- a/virt/kvm/guest_memfd.c\n+++ b/virt/kvm/guest_memfd.c")
    assert f"-{minus.original}\n+{minus.mutated}\n" in minus.diff
    # Applying it changes exactly that line.
    new = minus.apply(GMEM).splitlines()
    old = GMEM.splitlines()
    assert len(new) == len(old)
    assert [i + 1 for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b] == [minus.line]
    # Preprocessor lines are never mutated, whole file or not.
    everything = mm.generate("virt/kvm/guest_memfd.c", GMEM)
    directive_lines = {i for i, ln in enumerate(GMEM.splitlines(), 1) if ln.startswith("#")}
    assert not {m.line for m in everything} & directive_lines


def test_inserted_statements_stay_on_one_line() -> None:
    found = mm.generate("f.c", GMEM, frozenset({line_of(GMEM, "index++")}))
    breaks = [m for m in found if "break;" in m.mutated]
    assert breaks and all("\n" not in m.mutated for m in breaks)
    assert all(len(m.apply(GMEM).splitlines()) == len(GMEM.splitlines()) for m in found)


def test_apply_refuses_a_changed_file() -> None:
    m = mm.generate("f.c", GMEM, frozenset({line_of(GMEM, "index++")}))[0]
    with pytest.raises(ValueError, match="expects"):
        m.apply(GMEM.replace("index++", "index += 1"))


def test_ids_are_stable_and_the_sample_reproducible() -> None:
    a = mm.generate("virt/kvm/guest_memfd.c", GMEM)
    b = mm.generate("virt/kvm/guest_memfd.c", GMEM)
    assert [m.id for m in a] == [m.id for m in b]
    assert mm.mutant_id("f.c", 3, "x") == mm.mutant_id("f.c", 3, "x") != mm.mutant_id("f.c", 4, "x")
    first = [m.id for m in mm.shuffled(a, seed=7)]
    assert first == [m.id for m in mm.shuffled(list(reversed(b)), seed=7)]
    assert first != [m.id for m in mm.shuffled(a, seed=8)]
    assert sorted(first) == sorted(m.id for m in a)
