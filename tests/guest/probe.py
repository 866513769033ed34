#!/usr/bin/env python3
"""Print the KVM / guest_memfd features of this machine as JSON.

Usage: python3 tests/guest/probe.py [--no-vcpu]
The lab uses this to probe hosts; exit status 0 even without /dev/kvm (the
JSON then says kvm: false and why).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kvm.probe import probe


def main(argv: list[str]) -> int:
    print(probe(run_vcpus="--no-vcpu" not in argv).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
