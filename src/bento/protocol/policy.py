"""Node policies and function needs: one vocabulary for what a function may do.

The operator writes a :class:`NodePolicy` (TOML, published in the box's descriptor);
a function declares its :class:`Needs` in its manifest. A box admits a function only if
every need fits the policy (:func:`violations` lists each one that does not), and the
sandbox then enforces the *needs*, not the policy: a function gets what it asked for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SyscallProfile(StrEnum):
    """Groups of system calls a function may use (see bento.sandbox.seccomp)."""

    COMPUTE = "compute"  # memory, files in the sandbox, time, threads, pipes, the Bento channel
    PROCESSES = "processes"  # fork and exec (of the few binaries the sandbox holds)
    NETWORK = "network"  # sockets of its own (TCP/UDP; never raw or packet sockets)
    # A headless Chromium (Browser's --engine chromium): with processes, the few calls it
    # needs beyond them, and a sandbox of its own shape (bento.sandbox.spec). An operator
    # offers it by listing it; the box then also needs chromium and the playwright package.
    CHROMIUM = "chromium"


class Model(BaseModel):
    # defer_build: each schema is built when first used, so a command builds only its own.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class InstanceLimits(Model):
    """What one instance may use."""

    memory_mb: int = Field(default=256, ge=16, description="memory (cgroup, else address space)")
    cpu_seconds: int = Field(default=60, ge=1, description="CPU time before the instance is killed")
    wall_seconds: int = Field(default=600, ge=1, description="wall-clock time before it is killed")
    processes: int = Field(default=32, ge=1, description="processes and threads at once")
    open_files: int = Field(default=256, ge=16, description="open file descriptors")
    scratch_mb: int = Field(default=64, ge=1, description="size of its RAM-only /tmp")
    output_mb: int = Field(default=1024, ge=1, description="bytes it may send to its client, in MB")


class NetworkPolicy(Model):
    allowed: bool = Field(default=False, description="connections through the broker at all")
    listen: bool = Field(default=False, description="accepting connections")
    listen_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list,
        max_length=64,
        description="ports a function may name when it listens; any other listener gets an ephemeral port",
    )
    private_destinations: bool = Field(
        default=False,
        description="loopback, private and other non-global addresses as destinations (a test network)",
    )
    max_listeners: int = Field(
        default=16, ge=1, le=1024, description="listeners the server keeps for one function's onion services"
    )
    max_lookups: int = Field(
        default=4, ge=1, le=256, description="name lookups one function has under way (more wait their turn)"
    )
    # Destinations are always also bounded by the relay's own exit policy, read live from tor.


class TorPolicy(Model):
    """Tor for functions: circuits and onion services in the box's client-only tor."""

    circuits: bool = Field(default=False, description="building circuits and opening streams over them")
    max_circuits: int = Field(
        default=8, ge=0, le=256, description="circuits one function (all its instances) may hold at once"
    )
    max_circuits_per_minute: int = Field(
        default=60, ge=1, le=10_000, description="circuits one function may build in any minute"
    )
    max_streams: int = Field(default=256, ge=1, le=65_536, description="streams one function may have open")
    onion_services: bool = Field(default=False, description="publishing onion services")
    max_onion_services: int = Field(
        default=2, ge=0, le=64, description="onion services one function may have published"
    )
    call_boxes: bool = Field(default=False, description="calling Bento boxes (their onion services)")


class StoragePolicy(Model):
    allowed: bool = Field(default=False, description="encrypted per-function storage")
    max_mb: int = Field(default=0, ge=0)


class CoverPolicy(Model):
    """Link cover: session streams the box keeps at a constant cell rate (docs/api.md, "Link cover")."""

    max_rate: int = Field(default=1000, ge=1, description="cells per second, each way, for one session")
    max_total_rate: int = Field(default=5000, ge=1, description="cells per second of all covered streams")
    max_linger: float = Field(default=300.0, ge=0, description="seconds of cover after a session ended")


class NodePolicy(Model):
    """The operator's rules for every function on this box."""

    instance: InstanceLimits = Field(default_factory=InstanceLimits, description="the most one instance gets")
    instances_per_function: int = Field(default=64, ge=1)
    instances_total: int = Field(default=256, ge=1)
    total_memory_mb: int = Field(default=4096, ge=16, description="all of Bento's instances together")
    total_cpu_share: float = Field(default=1.0, gt=0, description="CPU cores all of Bento may use at once")
    max_upload_bytes: int = Field(default=10 << 20, gt=0)
    syscall_profiles: list[SyscallProfile] = Field(default_factory=lambda: [SyscallProfile.COMPUTE])
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    tor: TorPolicy = Field(default_factory=TorPolicy)
    storage: StoragePolicy = Field(default_factory=StoragePolicy)
    cover: CoverPolicy | None = Field(
        default=None, description="link cover of session streams; absent: this box covers none"
    )
    packages: list[str] = Field(
        default_factory=list,
        description='distributions offered read-only to functions ("bento": the client and its dependencies)',
    )

    @model_validator(mode="after")
    def _chromium_is_whole(self) -> NodePolicy:
        if SyscallProfile.CHROMIUM in self.syscall_profiles:
            lacking = [p for p in ("processes",) if p not in self.syscall_profiles]
            lacking += [f"the package {p!r}" for p in ("playwright",) if p not in self.packages]
            if lacking:
                raise ValueError(
                    f"offering the chromium profile needs {' and '.join(lacking)} too: functions drive "
                    "chromium with Playwright, and chromium is many processes"
                )
        return self


class Needs(Model):
    """What a function asks for (the ``needs`` table of its manifest). Defaults are modest."""

    memory_mb: int = Field(default=128, ge=16)
    cpu_seconds: int = Field(default=10, ge=1)
    wall_seconds: int = Field(default=120, ge=1)
    processes: int = Field(default=8, ge=1)
    open_files: int = Field(default=64, ge=16)
    scratch_mb: int = Field(default=16, ge=1)
    output_mb: int = Field(default=256, ge=1)
    instances: int = Field(default=8, ge=1, description="instances of this function at once")
    syscall_profiles: list[SyscallProfile] = Field(default_factory=lambda: [SyscallProfile.COMPUTE])
    network: bool = False
    listen: bool = False
    # Counts (a manifest's ``true`` reads as 1): circuits held at once, services published.
    tor_circuits: int = Field(default=0, ge=0, description="circuits at once (0: none)")
    onion_services: int = Field(default=0, ge=0, description="onion services it publishes (0: none)")
    call_boxes: bool = Field(default=False, description="deploys and calls functions on other boxes")
    storage_mb: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _chromium_runs_processes(self) -> Needs:
        profiles = set(self.syscall_profiles)
        if SyscallProfile.CHROMIUM in profiles and SyscallProfile.PROCESSES not in profiles:
            raise ValueError(
                "the chromium syscall profile needs the processes profile too (chromium is many processes)"
            )
        return self


_PER_INSTANCE = (
    "memory_mb",
    "cpu_seconds",
    "wall_seconds",
    "processes",
    "open_files",
    "scratch_mb",
    "output_mb",
)


def violations(needs: Needs, policy: NodePolicy) -> list[str]:
    """Every way ``needs`` exceeds ``policy``, in words; empty if the function is admissible."""
    found = []
    for name in _PER_INSTANCE:
        wanted, allowed = getattr(needs, name), getattr(policy.instance, name)
        if wanted > allowed:
            found.append(f"{name}: asks for {wanted}, the box allows at most {allowed}")
    if needs.instances > policy.instances_per_function:
        found.append(f"instances: asks for {needs.instances}, at most {policy.instances_per_function}")
    if needs.memory_mb > policy.total_memory_mb:
        found.append(
            f"memory_mb: {needs.memory_mb} is more than all of Bento may use ({policy.total_memory_mb})"
        )
    for profile in needs.syscall_profiles:
        if profile not in policy.syscall_profiles:
            allowed_profiles = ", ".join(p.value for p in policy.syscall_profiles)
            found.append(f"syscall profile {profile.value!r} is not allowed (allowed: {allowed_profiles})")
    flags = (
        (needs.network, policy.network.allowed, "network: the box allows no network access"),
        (needs.listen, policy.network.listen, "listen: the box allows no listening sockets"),
        (needs.tor_circuits, policy.tor.circuits, "tor_circuits: the box allows no circuits"),
        (needs.onion_services, policy.tor.onion_services, "onion_services: the box allows no onion services"),
        (needs.call_boxes, policy.tor.call_boxes, "call_boxes: the box allows no calls to other boxes"),
    )
    found.extend(message for wanted, allowed, message in flags if wanted and not allowed)
    counts = (
        (needs.tor_circuits, policy.tor.circuits, policy.tor.max_circuits, "tor_circuits"),
        (needs.onion_services, policy.tor.onion_services, policy.tor.max_onion_services, "onion_services"),
    )
    found.extend(
        f"{name}: asks for {wanted}, the box allows at most {most}"
        for wanted, allowed, most, name in counts
        if allowed and wanted > most
    )
    if needs.storage_mb and not policy.storage.allowed:
        found.append("storage_mb: the box allows no storage")
    elif needs.storage_mb > policy.storage.max_mb:
        found.append(f"storage_mb: asks for {needs.storage_mb}, at most {policy.storage.max_mb}")
    return found
