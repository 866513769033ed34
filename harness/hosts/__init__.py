"""Bare-metal hosts: probe, lock, kexec deploy and restore (DESIGN.md's harness/hosts.py).

A host target is a machine from lab.yaml's `hosts:` reached over SSH with the user's own
SSH config and known_hosts. The modules, in the order a run uses them:

    target.py  HostTarget: the settings of one host (filled from lab.yaml by the runner)
    shell.py   HostShell: the few remote operations used here, and the SSH adapter
    probe.py   one remote script -> HostProbe (CPU, kernel, KVM VM types, TDX, SEV, kexec)
    lock.py    one run per host: /run/gmemlab.lock, stale detection, retake after kexec
    console.py a local console command (IPMI SOL, serial server) captured to console.log
    deploy.py  kexec the built kernel, wait for it, verify it; restore the default kernel
    stage.py   HostSession: the above in order, with restore and release in a finally
"""
