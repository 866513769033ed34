"""Bare-metal hosts: probe, lock, kexec deploy and restore (DESIGN.md's harness/hosts.py).

A host target is a machine from lab.yaml's `hosts:` reached over SSH with the user's own
SSH config and known_hosts. The modules, in the order a run uses them:

    target.py        HostTarget: the settings of one host (filled from lab.yaml by the runner)
    shell.py         HostShell: the few remote operations used here, and the SSH adapter
    probe.py         the one remote probe script, run over the shell -> HostProbe
    probe_parse.py   the script's output -> HostProbe (pure)
    probe_state.py   HostProbe: CPU, kernel, KVM VM types, TDX, SEV, kexec, as found
    capabilities.py  the rules: can the running kernel / the machine do kvm, kexec,
                     tdx, sev, snp, with the evidence or the reason
    lock.py          one run per host: /run/gmemlab.lock, stale detection, retake after kexec
    console.py       a local console command (IPMI SOL, serial server) captured to console.log
    cmdline.py       the test kernel's command line, root= and initrd, switch/reboot argv
    wait.py          waiting for the host to answer on a new boot (Clock, boot facts)
    deploy.py        kexec the built kernel, wait for it, verify it is the one built
    restore.py       reboot the host into its default kernel (or reset it) afterwards
    stage.py         HostSession: the above in order, with restore and release in a finally
"""
