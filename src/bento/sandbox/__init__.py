"""Confining a function instance: bubblewrap namespaces, a seccomp allow-list, rlimits, cgroups.

Nothing here is hand-rolled: bubblewrap makes the namespaces and the minimal root,
libseccomp compiles the system-call filter, util-linux's prlimit and setpriv set
resource limits and drop to an unprivileged uid, and the kernel's cgroups cap memory,
processes and CPU where the host lets us use them.
"""
