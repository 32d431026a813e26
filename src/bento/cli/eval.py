"""``bento eval wf``: the website-fingerprinting evaluation (the paper's Table 1)."""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bento.cli.output import console, emit_json, step

T = TypeVar("T")
QUICK = {"folds": 3, "df_epochs": 10, "kfp_trees": 200}
DATA = Path("data/wf")
WAN_CONSENSUS_LIFETIME = 300  # clients then fetch no directory documents during visits


def add_eval(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="eval_command", required=True, metavar="EVALUATION")
    wf = kinds.add_parser("wf", help="website fingerprinting on the client's link (Table 1)")
    steps = wf.add_subparsers(dest="wf_command", required=True, metavar="STEP")

    collect = steps.add_parser(
        "collect", help="append whole rounds of captured visits to the dataset, until a deadline"
    )
    collect.add_argument("dataset", type=Path, nargs="?", default=DATA, help=f"(default {DATA})")
    where = collect.add_mutually_exclusive_group()
    where.add_argument("--testnet", type=Path, default=None, help="a running testnet's directory")
    where.add_argument(
        "--wan",
        action="store_true",
        help="start a testnet of this run's own with wide-area latency and a Bento box, stop it after",
    )
    collect.add_argument("--sites", type=int, default=100, help="corpus sites to visit (default 100)")
    collect.add_argument(
        "--visits", type=int, default=None, help="stop once the dataset holds this many rounds"
    )
    collect.add_argument(
        "--conditions",
        nargs="+",
        default=["tor", "browser-0mb", "browser-1mb", "browser-7mb", "browser-deadlines"],
        help="(default: plain Tor, Browser with 0, 1 and 7 MB of padding, and with deadlines; "
        "also browser-cover, and browser-deadlines-20: 20 s a page, in rounds of its own)",
    )
    collect.add_argument(
        "--parallel", type=int, default=2, help="victims visiting at once, each its own tor (default 2)"
    )
    collect.add_argument(
        "--until", type=_clock, default=None, metavar="HH:MM", help="stop by then (local time)"
    )
    collect.add_argument("--minutes", type=float, default=None, help="stop within this many minutes")
    collect.add_argument("--json", action="store_true", help="print the rounds written as JSON")
    collect.set_defaults(handler=cmd_collect)

    report = steps.add_parser(
        "report", help="run the attacks missing on the dataset (resumable), then the table and a plot"
    )
    report.add_argument("dataset", type=Path, nargs="?", default=DATA, help=f"(default {DATA})")
    report.add_argument("--conditions", nargs="+", default=None, help="default: every condition collected")
    report.add_argument(
        "--attacks", nargs="+", default=["kfp", "df", "tiktok"], choices=["kfp", "df", "tiktok"]
    )
    report.add_argument("--folds", type=int, default=5, help="strict closed-world folds (default 5)")
    report.add_argument(
        "--epochs", type=int, default=30, help="DF training epochs (default 30, as published)"
    )
    report.add_argument(
        "--patience",
        type=int,
        default=0,
        metavar="N",
        help="DF: after --epochs, train on while validation accuracy improved in the last N epochs "
        "(to convergence; at most 300); 0 (default): exactly --epochs",
    )
    report.add_argument("--trees", type=int, default=500, help="k-FP forest size (default 500)")
    report.add_argument("--quick", action="store_true", help="3 folds, 10 epochs, 200 trees")
    report.add_argument(
        "--visits", type=int, default=None, help="attack the first N visits of each site only (default all)"
    )
    report.add_argument(
        "--growth",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also attack the first N visits of each site, for each N: accuracy against visits",
    )
    report.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="where table1.png, cost.png and growth.png go (default: the dataset's directory)",
    )
    report.add_argument(
        "--trained-only",
        action="store_true",
        help="train nothing: the table and plots of the results on disk (a run going on elsewhere)",
    )
    report.add_argument(
        "--first-folds",
        type=int,
        default=None,
        metavar="N",
        help="train only the first N folds of each condition and attack now (breadth first: DF on a "
        "CPU gives every condition a figure in hours, not days); the others in a later run",
    )
    report.add_argument("--json", action="store_true", help="print the results as JSON")
    report.set_defaults(handler=cmd_report)


def _clock(text: str) -> datetime.time:
    try:
        return datetime.time.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day HH:MM") from None


def deadline(until: datetime.time | None, minutes: float | None, now: float) -> float | None:
    """The earlier of ``until`` (its next occurrence, local time) and ``minutes`` from ``now``.

    >>> noon = datetime.datetime(2026, 12, 7, 12, 0).timestamp()
    >>> deadline(datetime.time(12, 20), None, noon) - noon
    1200.0
    >>> deadline(datetime.time(12, 20), 5, noon) - noon
    300.0
    """
    out = []
    if until is not None:
        today = datetime.datetime.fromtimestamp(now).date()
        at = datetime.datetime.combine(today, until).timestamp()
        out.append(at if at > now else at + 86_400)
    if minutes is not None:
        out.append(now + 60 * minutes)
    return min(out) if out else None


def cmd_collect(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import os
    import tempfile

    from rich.progress import Progress

    from bento.cli.output import errors
    from bento.eval import rounds
    from bento.testnet import Testnet, TestnetConfig, default_directory, latency

    stop_by = deadline(args.until, args.minutes, time.time())
    with contextlib.ExitStack() as stack:
        lifetime = None
        if args.wan:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bento-wf-testnet-")))
            lifetime = WAN_CONSENSUS_LIFETIME
            config = TestnetConfig(
                directory=home,
                bento_boxes=1,
                bootstrap_timeout=300.0,
                corpus_sites=max(100, args.sites),
                hop_delay_ms=latency.WAN_HOP_MS,
                web_delay_ms=latency.WAN_WEB_MS,
                owner_pid=os.getpid(),  # its tors go when this process goes, however it goes
                consensus_lifetime=lifetime,
            )
            net = stack.enter_context(Testnet.start(config, progress=step))
        else:
            net = Testnet.attach(args.testnet or default_directory())
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bento-wf-victims-")))
        bar = stack.enter_context(Progress(console=errors, disable=args.json, transient=True))
        task = bar.add_task("visits", total=None)

        def say(message: str) -> None:
            if message.startswith("round ") and " visits (" in message:
                bar.update(task, description=message)  # one visit made: the bar, not a line
                if int(message.split()[2]) % 50:
                    return  # and a line now and then, for a log in the background
            step(message)

        work_done = rounds.collect(
            net,
            args.dataset,
            args.conditions,
            args.sites,
            work=work,
            options=rounds.options_of(net, lifetime),
            visits=args.visits,
            deadline=stop_by,
            parallel=args.parallel,
            say=say,
        )
        try:
            outcome = asyncio.run(_stopped_by_signals(work_done))
        except (KeyboardInterrupt, asyncio.CancelledError):
            errors.print("stopped; every whole round is kept: run the same command to add more")
            return 130
    if args.json:
        emit_json({"rounds": [r.model_dump() for r in outcome.rounds], "stopped": outcome.stopped})
    else:
        console.print(f"{len(outcome.rounds)} rounds added to {args.dataset}; stopped: {outcome.stopped}")
    return 0


async def _stopped_by_signals(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until done, or until SIGTERM or SIGHUP cancels it as Ctrl-C would: a
    collection left in the background (where SIGINT is ignored) is stopped cleanly, its
    victims' tors and captures with it."""
    import asyncio
    import signal

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(number, task.cancel)
    return await work


def cmd_report(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from bento.errors import BentoError
    from bento.eval import dataset, experiment, report

    conditions = args.conditions or dataset.conditions(args.dataset)
    if not conditions:
        raise BentoError(f"no rounds in {args.dataset}", fix="collect them first: bento eval wf collect")
    settings = experiment.Settings(
        folds=args.folds,
        df_epochs=args.epochs,
        df_patience=args.patience,
        kfp_trees=args.trees,
        visits=args.visits,
    )
    if args.quick:
        settings = experiment.Settings(**QUICK, visits=args.visits)

    def attack(chosen: experiment.Settings) -> list[experiment.Result]:
        """The attacks on the chosen visits: trained where missing (as asked), else read back."""
        train, first_folds = not args.trained_only, args.first_folds
        return experiment.run(
            args.dataset, conditions, args.attacks, chosen, say=step, train=train, first_folds=first_folds
        )

    try:
        results = attack(settings)
    except ValueError as exc:
        raise BentoError(str(exc)) from None
    figures = args.figures or args.dataset
    plot = report.plot(results, figures / "table1.png")
    report.cost_plot(results, args.dataset, figures / "cost.png")
    text = report.markdown(results, args.dataset, collected=conditions, folds=settings.folds)
    grown = []
    collected = max((r.visits for r in results), default=0)
    for visits in sorted(n for n in set(args.growth) if n < collected):  # all of them: the table's
        fewer = replace(settings, visits=visits, folds=min(settings.folds, visits))
        try:
            grown += attack(fewer)
        except ValueError as exc:
            raise BentoError(f"--growth {visits}: {exc}") from None
    if grown:
        grown += results
        text += "\nAccuracy against visits per site:\n\n" + report.growth_markdown(grown)
        report.growth_plot(grown, figures / "growth.png")
    (args.dataset / "table1.md").write_text(text)
    if args.json:
        emit_json({"results": [asdict(r) for r in results], "plot": str(plot)})
    else:
        console.print(text)
        console.print(f"plot: {plot}")
    return 0
