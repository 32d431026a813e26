"""``bento eval wf``: the website-fingerprinting evaluation (the paper's Table 1)."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bento.cli.output import console, emit_json, step

T = TypeVar("T")
QUICK = {"folds": 3, "df_epochs": 10, "kfp_trees": 200}


def add_eval(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="eval_command", required=True, metavar="EVALUATION")
    wf = kinds.add_parser("wf", help="website fingerprinting on the client's link (Table 1)")
    steps = wf.add_subparsers(dest="wf_command", required=True, metavar="STEP")

    collect = steps.add_parser(
        "collect", help="capture traces on a running testnet; resumes where it stopped"
    )
    collect.add_argument("dataset", type=Path, help="the dataset directory (made if missing)")
    collect.add_argument(
        "--testnet", type=Path, default=None, help="its directory (default: bento testnet's)"
    )
    collect.add_argument("--sites", type=int, default=100, help="corpus sites to visit (default 100)")
    collect.add_argument("--visits", type=int, default=20, help="visits per site (default 20)")
    collect.add_argument(
        "--conditions", nargs="+", default=["tor", "browser-0mb", "browser-1mb", "browser-7mb"]
    )
    collect.add_argument(
        "--parallel", type=int, default=1, help="victims visiting at once, each its own tor (default 1)"
    )
    collect.add_argument("--json", action="store_true", help="print the trace counts as JSON")
    collect.set_defaults(handler=cmd_collect)

    attack = steps.add_parser("attack", help="train and test the attacks; resumes where it stopped")
    attack.add_argument("dataset", type=Path, help="the dataset directory (traces/ inside)")
    attack.add_argument("--conditions", nargs="+", default=None, help="default: every condition collected")
    attack.add_argument("--attacks", nargs="+", default=["kfp", "df"], choices=["kfp", "df", "tiktok"])
    attack.add_argument("--folds", type=int, default=5, help="strict closed-world folds (default 5)")
    attack.add_argument(
        "--epochs", type=int, default=30, help="DF training epochs (default 30, as published)"
    )
    attack.add_argument("--trees", type=int, default=500, help="k-FP forest size (default 500)")
    attack.add_argument("--quick", action="store_true", help="3 folds, 10 epochs, 200 trees")
    attack.add_argument(
        "--visits", type=int, default=None, help="attack the first N visits of each site only (default all)"
    )
    attack.add_argument("--json", action="store_true", help="print the results as JSON")
    attack.set_defaults(handler=cmd_attack)

    report = steps.add_parser("report", help="the table beside the paper's, overheads, and a PNG plot")
    report.add_argument("dataset", type=Path)
    report.add_argument(
        "--plot", type=Path, default=None, help="where the PNG goes (default DATASET/table1.png)"
    )
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=cmd_report)


def _conditions(dataset: Path, chosen: list[str] | None) -> list[str]:
    if chosen:
        return chosen
    return sorted(p.name.removesuffix(".jsonl.gz") for p in (dataset / "traces").glob("*.jsonl.gz"))


def cmd_collect(args: argparse.Namespace) -> int:
    import asyncio

    from rich.progress import Progress

    from bento.cli.output import errors
    from bento.eval import collect
    from bento.testnet import Testnet, default_directory

    net = Testnet.attach(args.testnet or default_directory())
    args.dataset.mkdir(parents=True, exist_ok=True)
    with Progress(console=errors, disable=args.json, transient=True) as bar:
        task = bar.add_task("visits", total=None)

        def planned(missing: int) -> None:
            bar.update(task, total=missing)

        def say(message: str) -> None:
            bar.update(task, description=message)
            bar.advance(task)

        work = collect.collect(
            net,
            args.dataset,
            args.conditions,
            args.sites,
            args.visits,
            parallel=args.parallel,
            planned=planned,
            say=say,
        )
        try:
            outcome = asyncio.run(_stopped_by_signals(work))
        except (KeyboardInterrupt, asyncio.CancelledError):
            errors.print("stopped; every trace collected so far is kept: run the same command to go on")
            return 130
    if args.json:
        emit_json({"traces": outcome.counts, "failed": outcome.failed})
    else:
        for condition, count in outcome.counts.items():
            console.print(f"{condition}: {count} traces in {args.dataset / 'traces'}")
        for failure in outcome.failed:
            errors.print(f"not collected: {failure}")
    if outcome.failed:
        errors.print(f"{len(outcome.failed)} visits failed; run the same command again to collect them")
        return 1
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


def cmd_attack(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from bento.errors import BentoError
    from bento.eval import experiment

    conditions = _conditions(args.dataset, args.conditions)
    if not conditions:
        raise BentoError(
            f"no traces in {args.dataset / 'traces'}", fix="collect them first: bento eval wf collect"
        )
    settings = experiment.Settings(
        folds=args.folds, df_epochs=args.epochs, kfp_trees=args.trees, visits=args.visits
    )
    if args.quick:
        settings = experiment.Settings(**QUICK, visits=args.visits)
    try:
        results = experiment.run(args.dataset, conditions, args.attacks, settings, say=step)
    except ValueError as exc:
        raise BentoError(str(exc)) from None
    if args.json:
        emit_json([asdict(r) for r in results])
    else:
        from bento.eval import report

        console.print(report.markdown(results, args.dataset))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from bento.errors import BentoError
    from bento.eval import report
    from bento.eval.experiment import Result

    paths = sorted((args.dataset / "results").glob("*/*/fold-*.json"))
    if not paths:
        raise BentoError(f"no results in {args.dataset / 'results'}", fix="run: bento eval wf attack DATASET")
    results = [Result(**json.loads(p.read_text())) for p in paths]
    plot = report.plot(results, args.plot or args.dataset / "table1.png")
    text = report.markdown(results, args.dataset)
    (args.dataset / "table1.md").write_text(text)
    if args.json:
        cells = report.summarise(results)
        emit_json(
            {
                "results": [
                    {"condition": c, "attack": a, "accuracy": v.mean, "std": v.std, "folds": v.folds}
                    for (c, a), v in sorted(cells.items())
                ],
                "plot": str(plot),
            }
        )
    else:
        console.print(text)
        console.print(f"plot: {plot}")
    return 0
