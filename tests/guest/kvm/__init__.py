"""Python bindings for the KVM / guest_memfd uapi used by the gmemlab guest suite.

Standard library only: this package is copied into minimal guest images.
"""
