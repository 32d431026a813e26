"""A collection: whole rounds appended to the dataset until a deadline or a number of visits.

A round is one visit of every site under every condition. Its visits are interleaved, site
by site, each site's conditions one after the other in an order that turns from site to
site, so that every condition sees the same moments of the network (a testnet whose host
gets busy slows all conditions alike, not the one collected last). The round is kept in
memory and written whole (:func:`bento.eval.dataset.write_round`): a run that is killed
loses at most the round in progress.

A run stops before a round it cannot finish by its deadline (its length estimated from the
last rounds), and cancels a round still running at the deadline: a session's collection
ends when it must, with only whole rounds on disk.

    >>> [v for v in schedule(["tor", "browser-0mb"], sites=[0, 1], seed=0)]
    [('tor', 0), ('browser-0mb', 0), ('browser-0mb', 1), ('tor', 1)]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.eval import dataset
from bento.eval.collect import Victim, check_conditions
from bento.eval.dataset import Machine, RoundEntry, TestnetOptions
from bento.testnet import Testnet
from bento.testnet.corpus import Site

ATTEMPTS = 2  # a visit that fails twice is recorded as missing from its round
GIVE_UP_AFTER = 10  # failed attempts in a row that stop the run: something is broken
FIRST_GUESS_SECONDS = 6.0  # per visit and victim, before any round was timed (a 2-core host)


@dataclass
class Outcome:
    """What a collection run did."""

    rounds: list[RoundEntry] = field(default_factory=list)
    stopped: str = ""  # why it stopped


def schedule(conditions: Sequence[str], sites: Sequence[int], seed: int) -> list[tuple[str, int]]:
    """The order of a round's visits: site by site, the conditions in a turning order."""
    order = list(sites)
    random.Random(seed).shuffle(order)
    out = []
    for n, site in enumerate(order):
        turn = n % len(conditions)
        out += [(c, site) for c in [*conditions[turn:], *conditions[:turn]]]
    return out


def estimate(entries: Sequence[RoundEntry], visits: int, parallel: int) -> float:
    """Seconds a round of ``visits`` will take: as the slowest of the last three rounds did
    per visit and victim (the host's load changes; better to stop a round early than lose one)."""
    recent = [e.seconds * e.parallel / e.visits for e in entries[-3:] if e.visits]
    per_visit = max(recent) if recent else FIRST_GUESS_SECONDS
    return per_visit * visits / parallel


async def collect(
    testnet: Testnet,
    data: Path,
    conditions: Sequence[str],
    sites: int,
    *,
    work: Path,
    options: TestnetOptions,
    visits: int | None = None,
    deadline: float | None = None,
    parallel: int = 2,
    say: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Append rounds to ``data`` until it holds ``visits`` of each site or ``deadline`` (a
    ``time.time()``) comes. ``work`` holds the victims' tors, captures and keyring."""
    check_conditions(list(conditions))
    if not 1 <= parallel <= 16:
        raise BentoError(f"--parallel must be between 1 and 16, not {parallel}")
    corpus = testnet.corpus
    if corpus is None or sites > len(corpus.sites):
        raise BentoError(f"the testnet's corpus has {len(corpus.sites) if corpus else 0} sites, not {sites}")
    outcome = Outcome()
    machine, commit = await asyncio.to_thread(_machine), await asyncio.to_thread(_commit)
    plan = len(conditions) * sites
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    keyring = Keyring(work / "keyring.json")  # tokens: never in the dataset
    async with contextlib.AsyncExitStack() as stack:
        victims: list[Victim] = []
        while True:
            done = (await asyncio.to_thread(dataset.read_manifest, data)).rounds
            if visits is not None and len(done) >= visits:
                outcome.stopped = f"the dataset holds {len(done)} rounds"
                break
            needs = estimate(done, plan, parallel)
            if deadline is not None and time.time() + needs > deadline:
                left = max(0.0, deadline - time.time()) / 60
                outcome.stopped = f"a round takes about {needs / 60:.0f} min; {left:.0f} min left"
                break
            if not victims:
                victims = [
                    await stack.enter_async_context(Victim(testnet, n, work, keyring))
                    for n in range(parallel)
                ]
            number = len(done)
            say(f"round {number}: {plan} visits, about {needs / 60:.0f} min")
            try:
                async with asyncio.timeout(None if deadline is None else deadline - time.time()):
                    made = await _round(victims, corpus.sites[:sites], conditions, number, say)
            except TimeoutError:
                outcome.stopped = f"the deadline came in round {number}: its visits are dropped"
                break
            entry = RoundEntry(
                number=number,
                file=f"{dataset.ROUNDS}/round-{number:04d}.npz",
                sha256="0" * 64,  # write_round puts the file's in
                started=made.started,
                seconds=made.seconds,
                commit=commit,
                machine=machine,
                testnet=options,
                parallel=parallel,
                conditions=list(conditions),
                sites=sites,
                visits=len(made.visits),
                missing=made.missing,
                load_average=made.load,
            )
            outcome.rounds.append(await asyncio.to_thread(dataset.write_round, data, entry, made.visits))
            say(f"round {number} written: {len(made.visits)} visits in {made.seconds / 60:.1f} min")
    return outcome


@dataclass
class _Made:
    """A round's visits, in the order they began, and how its collection went."""

    visits: list[dataset.Visit]
    missing: list[str]
    started: str
    seconds: float
    load: tuple[float, float]


async def _round(
    victims: list[Victim],
    sites: Sequence[Site],
    conditions: Sequence[str],
    number: int,
    say: Callable[[str], None],
) -> _Made:
    queue: asyncio.Queue[tuple[str, Site]] = asyncio.Queue()
    by_index = {s.index: s for s in sites}
    for condition, index in schedule(conditions, list(by_index), seed=number):
        queue.put_nowait((condition, by_index[index]))
    visits: list[dataset.Visit] = []
    missing: list[str] = []
    failures = 0  # in a row, over all victims
    started, begun = time.monotonic(), datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()[0]

    async def work(victim: Victim) -> None:
        nonlocal failures
        while not queue.empty():
            condition, site = queue.get_nowait()
            for attempt in range(1, ATTEMPTS + 1):
                at = time.monotonic()
                try:
                    records = await victim.visit(condition, site)
                except Exception as exc:  # one visit's failure, whatever it is, is that visit's
                    failures += 1
                    if failures >= GIVE_UP_AFTER:
                        raise BentoError(
                            f"{failures} visits in a row failed; the last: {exc!r:.300}",
                            fix="check the testnet (bento testnet status) and the victims' logs",
                        ) from exc
                    if attempt == ATTEMPTS:
                        missing.append(f"{condition} {site.name}")
                        say(f"{condition} {site.name}: gave up after {ATTEMPTS} attempts: {exc!r:.200}")
                    continue
                failures = 0
                start_ms = round(1000 * (at - started))
                visits.append(dataset.Visit(condition, site.index, start_ms, dataset.batches(records)))
                say(f"round {number}: {len(visits)} visits ({condition} {site.name})")
                break

    try:
        async with asyncio.TaskGroup() as group:
            for victim in victims:
                group.create_task(work(victim))
    except ExceptionGroup as failure:  # a victim that cannot go on stops the run: say why
        raise failure.exceptions[0] from failure
    visits.sort(key=lambda v: v.start_ms)
    seconds = round(time.monotonic() - started, 1)
    return _Made(visits, missing, begun.isoformat(timespec="seconds"), seconds, (load, os.getloadavg()[0]))


def _machine() -> Machine:
    """The host, as a reader of the results needs it (no user names, no addresses)."""
    memory = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as info:
        memory = int(info.readline().split()[1]) / 2**20
    tor = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        said = subprocess.run(["tor", "--version"], capture_output=True, text=True, timeout=10).stdout
        tor = said.splitlines()[0].removesuffix(".")
    return Machine(
        host=platform.node()[:255],
        cpus=os.cpu_count() or 1,
        memory_gib=round(memory, 1),
        kernel=platform.release()[:255],
        tor=tor[:255],
    )


def _commit() -> str:
    """The code's git commit, with ``+dirty`` if it has changes (``unknown`` outside git)."""
    here = Path(__file__).parents[1]  # the bento package
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head[:40] + ("+dirty" if changed else "")


def options_of(testnet: Testnet, consensus_lifetime: int | None = None) -> TestnetOptions:
    """What the manifest says of the testnet a round was collected on."""
    from bento.testnet.state import Role

    state = testnet.state
    relays = [n for n in state.nodes if n.role in (Role.RELAY, Role.EXIT)]
    return TestnetOptions(
        relays=len(relays),
        exits=len(state.by_role(Role.EXIT)),
        bento_boxes=len(state.boxes),
        hop_delay_ms=state.hop_delay_ms,
        web_delay_ms=state.web_delay_ms,
        corpus_seed=state.corpus_seed,
        consensus_lifetime=consensus_lifetime,
    )
