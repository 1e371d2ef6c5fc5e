"""`python -m submission run | methods | weights | synth`: parse arguments into dataclasses and call the library."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from submission.config import (DEFAULT_SEEDS, DEFAULT_SHOTS, DEVICES, EXECUTORS, METRICS, PRECISIONS, SLURM_CLUSTERS,
                               ExecutorConfig, RunConfig)
from methods.registry import PluginError
from submission.errors import HarnessError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one error line (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise HarnessError(f"{self.prog}: {message} (see --help)")


def _weights_pair(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH")
    return name, Path(path)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"{text!r}: expected i/n with 0 <= i < n")
    return int(index), int(count)


def _plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE",
                        help="a Python file or module that registers methods (repeatable); installed packages "
                             "with a fewshot_ad_harness.methods entry point need none")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m submission", description="Few-shot anomaly detection harness")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run methods over categories x k x seeds and write a run folder")
    run.add_argument("--data", type=Path, help="dataset root (default: the embedded procedural dataset)")
    run.add_argument("--format", choices=("loco", "mvtec", "folder"), default="loco")
    run.add_argument("--categories", nargs="+", default=[])
    run.add_argument("--shots", nargs="+", type=int, default=list(DEFAULT_SHOTS))
    run.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    run.add_argument("--methods", nargs="+", default=[], help="NAME[:key=value,...]; default: every registered method")
    _plugin_option(run)
    run.add_argument("--preset", choices=("paper", "offline"), help="default: offline without --data, paper with it")
    run.add_argument("--weights", nargs="+", type=_weights_pair, default=[], metavar="NAME=PATH")
    run.add_argument("--image-size", type=int, default=256)
    run.add_argument("--device", default="auto", choices=DEVICES)
    run.add_argument("--precision", default="fp32", choices=PRECISIONS,
                     help="frozen networks on CUDA: fp32 (default), or auto = autocast bf16 (fp16 without bf16 support)")
    run.add_argument("--out", type=Path, help="the run folder (default: runs/<timestamp>)")
    run.add_argument("--save-maps", action="store_true", help="write float32 TIFF maps in the LOCO evaluator's layout")
    run.add_argument("--page", action="store_true", help="after the report, write the leaderboard page (a static site: "
                                                         "python -m leaderboard page) into RUN/page and print where")
    run.add_argument("--metrics", choices=METRICS, default="all",
                     help="all: image and pixel metrics (default); image: image AUROC and F1-max only, the "
                          "pixel columns left empty (faster: the VAND score alone)")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--cache-gib", type=float, default=None,
                     help="bound of the run's feature cache in GiB (default 4; least recently used entries go first)")
    run.add_argument("--decode-workers", type=int, default=None,
                     help="threads decoding and resizing images (default min(8, CPU count); 1: serial)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads of every worker, set per cell under every executor (a method that trains "
                          "follows it); default: the run folder's recorded value on a resume, else this machine's")
    run.add_argument("--shard", type=_shard, help="i/n: run every n-th cell starting at i (merge with leaderboard merge)")
    scale = run.add_argument_group("scaling out (README: Scaling out)")
    scale.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="where the cells run: local (this process), ray (actors on a Ray cluster; extra 'ray'), "
                            "slurm (a submitit job array; extra 'slurm'); the results are the same")
    scale.add_argument("--workers", type=int, help="ray: actors (default: one per GPU, else one per --cpus-per-worker "
                                                   "cores); slurm: array jobs (default: one per category)")
    scale.add_argument("--cpus-per-worker", type=int, default=None,
                       help="CPU cores reserved for each worker (default: --threads)")
    scale.add_argument("--retries", type=int, default=2, help="times a cell whose worker died is tried again")
    scale.add_argument("--ray-address", help="join this Ray cluster (auto, ray://head:10001); default: start a local one")
    scale.add_argument("--slurm-partition", help="Slurm partition of the array jobs")
    scale.add_argument("--slurm-time", type=int, default=240, metavar="MINUTES", help="time limit of each array job")
    scale.add_argument("--slurm-cluster", choices=SLURM_CLUSTERS, default="slurm",
                       help="slurm (default), or local: the job array as processes on this machine (to try it)")
    run.add_argument("--anomaly-shots", type=int, default=0, metavar="M",
                     help="M labelled anomalies (images and masks) per cell, drawn by a seeded rule from the test "
                          "anomalies and removed from the cell's test set for every method; only methods that use "
                          "them (bgad) receive them. Default 0: the VAND protocol")
    run.add_argument("--procedural-split", choices=("test", "dev"), default="test",
                     help="realisation of the embedded procedural dataset (the data without --data; RegAD's "
                          "source=procedural): test = the reported one (default), dev = the one for choosing settings")

    listing = commands.add_parser("methods", help="list registered methods and the weights each preset needs")
    _plugin_option(listing)

    weights = commands.add_parser("weights", help="where each weight file is (SHA-256, licence); 'fetch' downloads "
                                                  "the missing ones")
    weights.add_argument("action", nargs="?", choices=("fetch",), help="download what is missing into the caches")
    weights.add_argument("--preset", choices=("paper", "offline"), default="paper")
    weights.add_argument("--methods", nargs="+", default=[], help="NAME[:key=value,...]; default: every registered method")
    weights.add_argument("--weights", nargs="+", type=_weights_pair, default=[], metavar="NAME=PATH")
    _plugin_option(weights)

    check = commands.add_parser("check-method", help="check a method (built-in or plugin) against the method "
                                                     "contract on tiny generated data; exit 0 when all pass")
    check.add_argument("spec", help="NAME[:key=value,...]")
    check.add_argument("--preset", choices=("paper", "offline"), default="offline")
    check.add_argument("--members", nargs="+", default=["patchcore"],
                       help="for a method that fuses others: the members fitted before it (default patchcore)")
    check.add_argument("--device", default="cpu", choices=DEVICES)
    check.add_argument("--no-bundle", action="store_true", help="skip the package + verify round trip")
    _plugin_option(check)

    scaffold = commands.add_parser("new-method", help="write a small installable package for a new method")
    scaffold.add_argument("name")
    scaffold.add_argument("--dir", type=Path, required=True, help="the package folder to create")

    package = commands.add_parser("package", help="bundle one method of a finished run for an evaluator")
    package.add_argument("run_dir", type=Path)
    package.add_argument("--method", required=True, help="the variant spec as in results.csv")
    package.add_argument("--dist", type=Path, default=Path("dist"))

    verify = commands.add_parser("verify", help="check a bundle's checksums and its entry point's scores")
    verify.add_argument("archive", type=Path)

    evaluate = commands.add_parser("evaluate", help="evaluate a bundle on MVTec LOCO as the VAND kit does "
                                                    "(metrics.csv, results.json)")
    evaluate.add_argument("archive", type=Path)
    evaluate.add_argument("--data", type=Path, required=True, help="MVTec LOCO root (or any LOCO-layout root)")
    evaluate.add_argument("--categories", nargs="+", default=[], help="default: the kit's five, else every folder")
    evaluate.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8], help="the kit's k (default 1 2 4 8)")
    evaluate.add_argument("--seeds", nargs="+", type=int, default=[42, 0, 1234])
    evaluate.add_argument("--out", type=Path, default=Path("."), help="where metrics.csv and results.json go")
    evaluate.add_argument("--batch-size", type=int, default=128, help="first batch size (halved on CUDA OOM)")
    evaluate.add_argument("--device", default="auto", choices=DEVICES)

    synth = commands.add_parser("synth", help="write the procedural LOCO-like dataset, or ELPV (real, a dev set) in "
                                              "MVTec AD layout")
    synth.add_argument("--dataset", choices=("procedural", "elpv"), default="procedural",
                       help="elpv: the solar-cell images of PyPI elpv-dataset, one cell type (--elpv-type) as one "
                            "category: 60 train/good, 150 test good, 150 defective, drawn with --seed")
    synth.add_argument("--elpv-type", choices=("mono", "poly"), default="mono")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=256)
    synth.add_argument("--split", choices=("test", "dev"), default="test",
                       help="realisation: test = the reported one (default); dev = a disjoint one for choosing settings")
    return parser


def command_run(args: argparse.Namespace, console: Console) -> int:
    names = [name for name, _ in args.weights]
    if len(set(names)) != len(names):  # a dict would keep only the last
        raise HarnessError(f"--weights: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
    config = RunConfig(  # checks every option (RunConfig.validate), as run(RunConfig) from Python does
        data=args.data, format=args.format, categories=tuple(args.categories), shots=tuple(args.shots),
        seeds=tuple(args.seeds), methods=tuple(args.methods), preset=args.preset, weights=dict(args.weights),
        image_size=args.image_size, device=args.device, precision=args.precision, out=args.out,
        save_maps=args.save_maps, metrics=args.metrics,
        batch_size=args.batch_size, shard=args.shard, procedural_split=args.procedural_split,
        cache_gib=args.cache_gib, decode_workers=args.decode_workers, anomaly_shots=args.anomaly_shots,
        threads=args.threads, plugins=tuple(args.plugin),
        executor=ExecutorConfig(name=args.executor, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                retries=args.retries, ray_address=args.ray_address,
                                slurm_partition=args.slurm_partition, slurm_time_min=args.slurm_time,
                                slurm_cluster=args.slurm_cluster),
    )
    from submission.runner import run  # after the option checks: a bad option imports no method or network

    run_dir = run(config, console)
    code = show_leaderboard(run_dir, console)
    return show_leaderboard(run_dir, console, "page") if args.page and code == 0 else code


def show_leaderboard(run_dir: Path, console: Console, command: str = "show") -> int:
    """`python -m leaderboard show RUN_DIR` in a child process: writes leaderboard.csv, report.md and plots,
    prints the tables (`command` "page": writes RUN_DIR/page/, the static site, and prints where its index.html is).
    A child, not an import: `submission` and `leaderboard` never import each other (they share only the run-folder
    schema and the metrics)."""
    import subprocess

    console.file.flush()
    sys.stdout.flush()
    child = subprocess.run([sys.executable, "-m", "leaderboard", command, str(run_dir)], check=False)
    if child.returncode != 0:
        console.print(f"[red]error:[/red] the leaderboard of {run_dir} could not be written (exit {child.returncode}); "
                      f"the run itself is complete: retry with python -m leaderboard {command} {run_dir}",
                      highlight=False)
    return child.returncode


def command_methods(args: argparse.Namespace, console: Console) -> int:
    from methods import list_methods
    from methods.plugins import load_plugins

    load_plugins(tuple(args.plugin))
    for entry in list_methods():
        required = {preset: entry.requirements(config) for preset, config in entry.presets.items()}
        reasons = {need.unavailable for need in required.values()}
        if len(reasons) == 1 and (reason := next(iter(reasons))):
            needs = f"none: cannot run here: {reason}"  # one reason for every preset, said once
        else:
            needs = "; ".join(f"{preset}: cannot run here: {need.unavailable}" if need.unavailable else
                              f"{preset}: {', '.join(w.name for w in need.weights) or 'no weights'}"
                              for preset, need in required.items())
        flags = [flag for flag, on in (("trains", entry.trains), ("auxiliary categories", entry.uses_auxiliary),
                                       ("fitted members", entry.needs_fitted),
                                       ("labelled anomalies", entry.uses_anomalies),
                                       ("cheap per-cell fit: fused by default", entry.cheap_fit)) if on]
        origin = "" if entry.source == "builtin" else f" [cyan]\\[{escape(entry.source)}][/cyan]"
        console.print(f"[bold]{entry.name}[/bold]{origin} — {entry.summary} [dim](weights {needs}"
                      f"{'; ' + ', '.join(flags) if flags else ''})[/dim]")
    return 0


def command_weights(args: argparse.Namespace, console: Console) -> int:
    """The weights report (exit 0 even when files are missing), or `fetch` (exit 2 when any file cannot be got)."""
    from submission.weights import fetch, print_report, weights_report

    names = [name for name, _ in args.weights]
    if len(set(names)) != len(names):
        raise HarnessError(f"--weights: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
    from methods.plugins import load_plugins

    load_plugins(tuple(args.plugin))
    rows = weights_report(tuple(args.methods), args.preset, dict(args.weights))
    if args.action == "fetch":
        code = fetch(rows, console)
        if code != 0:
            return code
        rows = weights_report(tuple(args.methods), args.preset, dict(args.weights))  # as a run will now find them
    print_report(rows, args.preset, console)
    return 0


def command_synth(args: argparse.Namespace, console: Console) -> int:
    if args.dataset == "elpv":
        from submission.datasets.elpv import ElpvConfig, write_elpv

        folder = write_elpv(args.out, ElpvConfig(cell_type=args.elpv_type, seed=args.seed))
        console.print(f"ELPV written to {folder} (MVTec AD layout: --data {args.out} --format mvtec)", highlight=False)
        return 0
    from submission.datasets.procedural import ProceduralConfig, generate

    config = ProceduralConfig(seed=args.seed, image_size=args.image_size, split=args.split)
    root = generate(args.out, config)
    console.print(f"procedural dataset written to {root} ({asdict(config)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input ends with a one-line error and exit code 2."""
    console = Console() if sys.stdout.isatty() else Console(width=170)  # logs keep whole tables
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return command_run(args, console)
        if args.command == "methods":
            return command_methods(args, console)
        if args.command == "weights":
            return command_weights(args, console)
        if args.command == "check-method":
            from submission.contract import check_method, show

            checks = check_method(args.spec, args.preset, tuple(args.members), args.device, not args.no_bundle,
                                  tuple(args.plugin), on_check=lambda c: console.print(f"[dim]{escape(c.name)}: "
                                                                   f"{'pass' if c.passed else 'FAIL'}[/dim]"))
            return show(checks, args.spec, console)
        if args.command == "new-method":
            from submission.scaffold import new_method

            for path in new_method(args.name, args.dir):
                console.print(f"wrote {path}", highlight=False)
            console.print(f"next: pip install -e {args.dir} && python -m submission check-method {args.name}",
                          highlight=False)
            return 0
        if args.command == "package":
            from submission.packaging import package_bundle

            archive, info = package_bundle(args.run_dir, args.method, args.dist)
            console.print(f"bundle written: {archive}", highlight=False, soft_wrap=True)
            console.print(f"VAND rules: this bundle {escape(info['vand_rules']['statement'])}", highlight=False,
                          soft_wrap=True)
            if info["categories"] is not None:
                console.print(f"serves only: {', '.join(info['categories']) or 'no category'}", highlight=False)
            return 0
        if args.command == "verify":
            from submission.verify import verify

            report = verify(args.archive)
            console.print(f"verified {args.archive}: checksums ok; {report.cell}: bundle {report.bundle} vs run "
                          f"{report.stored}; unseen image: bundle {report.fresh_bundle:.6f} vs installed "
                          f"{report.fresh_installed:.6f}")
            return 0
        if args.command == "evaluate":
            from submission.kit_eval import evaluate, show

            show(evaluate(args.archive, args.data, categories=args.categories, shots=args.shots, seeds=args.seeds,
                          out=args.out, batch_size=args.batch_size, device=args.device, console=console), console)
            return 0
        return command_synth(args, console)
    except (HarnessError, PluginError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)  # one line
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished cells are in results.csv; rerun with the same --out to resume[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
