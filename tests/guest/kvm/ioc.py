"""The asm-generic _IOC ioctl-number encoding (x86_64 uses the generic layout).

Numbers are computed here rather than pasted as hex so that a wrong size or
direction shows up as a mismatch in the unit tests instead of a silent ENOTTY.
"""

IOC_NRBITS = 8
IOC_TYPEBITS = 8
IOC_SIZEBITS = 14
IOC_DIRBITS = 2

IOC_NRSHIFT = 0
IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS

IOC_NONE = 0
IOC_WRITE = 1
IOC_READ = 2


def ioc(direction: int, typ: int, nr: int, size: int) -> int:
    """Encode an ioctl number; refuses fields that would not fit their bits."""
    if not 0 <= size < (1 << IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size {size} does not fit {IOC_SIZEBITS} bits")
    if not 0 <= nr < (1 << IOC_NRBITS) or not 0 <= typ < (1 << IOC_TYPEBITS):
        raise ValueError(f"ioctl type/nr out of range: {typ:#x}/{nr:#x}")
    return (
        (direction << IOC_DIRSHIFT)
        | (typ << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


def io(typ: int, nr: int) -> int:
    return ioc(IOC_NONE, typ, nr, 0)


def ior(typ: int, nr: int, size: int) -> int:
    return ioc(IOC_READ, typ, nr, size)


def iow(typ: int, nr: int, size: int) -> int:
    return ioc(IOC_WRITE, typ, nr, size)


def iowr(typ: int, nr: int, size: int) -> int:
    return ioc(IOC_READ | IOC_WRITE, typ, nr, size)


def decode(number: int) -> tuple[int, int, int, int]:
    """Split an ioctl number into (direction, type, nr, size)."""
    return (
        (number >> IOC_DIRSHIFT) & ((1 << IOC_DIRBITS) - 1),
        (number >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1),
        (number >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1),
        (number >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1),
    )
