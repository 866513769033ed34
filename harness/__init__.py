"""gmemlab: a QEMU/KVM test lab for the guest_memfd in-place conversion series."""
