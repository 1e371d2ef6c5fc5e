"""`python -m submission run | methods | synth`: parse arguments into dataclasses and call the library."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from submission.config import DEFAULT_SEEDS, DEFAULT_SHOTS, RunConfig
from submission.errors import HarnessError


def _weights_pair(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--weights {text!r}: expected NAME=PATH")
    return name, Path(path)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n with 0 <= i < n")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m submission", description="Few-shot anomaly detection harness")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run methods over categories x k x seeds and write a run folder")
    run.add_argument("--data", type=Path, help="dataset root (default: the embedded procedural dataset)")
    run.add_argument("--format", choices=("loco", "mvtec", "folder"), default="loco")
    run.add_argument("--categories", nargs="+", default=[])
    run.add_argument("--shots", nargs="+", type=int, default=list(DEFAULT_SHOTS))
    run.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    run.add_argument("--methods", nargs="+", default=[], help="NAME[:key=value,...]; default: every registered method")
    run.add_argument("--preset", choices=("paper", "offline"), help="default: offline without --data, paper with it")
    run.add_argument("--weights", nargs="+", type=_weights_pair, default=[], metavar="NAME=PATH")
    run.add_argument("--image-size", type=int, default=256)
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--out", type=Path, help="the run folder (default: runs/<timestamp>)")
    run.add_argument("--save-maps", action="store_true", help="write float32 TIFF maps in the LOCO evaluator's layout")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--shard", type=_shard, help="i/n: run every n-th cell starting at i (merge with leaderboard merge)")

    commands.add_parser("methods", help="list registered methods and the weights each preset needs")

    package = commands.add_parser("package", help="bundle one method of a finished run for an evaluator")
    package.add_argument("run_dir", type=Path)
    package.add_argument("--method", required=True, help="the variant spec as in results.csv")
    package.add_argument("--dist", type=Path, default=Path("dist"))

    verify = commands.add_parser("verify", help="check a bundle's checksums and its entry point's scores")
    verify.add_argument("archive", type=Path)

    synth = commands.add_parser("synth", help="write the procedural LOCO-like dataset")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=256)
    return parser


def command_run(args: argparse.Namespace, console: Console) -> int:
    from leaderboard.show import show
    from methods.backbones import BACKBONES
    from submission.runner import run

    import open_clip

    unknown = [name for name, _ in args.weights if name not in BACKBONES and name not in open_clip.list_models()]
    if unknown:
        raise HarnessError(f"--weights: unknown backbone {unknown[0]!r}; known: {', '.join(BACKBONES)} "
                           "or an open_clip model name (e.g. ViT-B-16-plus-240)")
    if args.image_size < 32:
        raise HarnessError(f"--image-size {args.image_size}: must be at least 32")
    config = RunConfig(
        data=args.data, format=args.format, categories=tuple(args.categories), shots=tuple(args.shots),
        seeds=tuple(args.seeds), methods=tuple(args.methods), preset=args.preset, weights=dict(args.weights),
        image_size=args.image_size, device=args.device, out=args.out, save_maps=args.save_maps,
        batch_size=args.batch_size, shard=args.shard,
    )
    run_dir = run(config, console)
    show(run_dir, console)
    return 0


def command_methods(console: Console) -> int:
    from methods import list_methods

    for entry in list_methods():
        def weights(cfg) -> str:
            names = [*entry.backbones(cfg), *filter(None, [getattr(cfg, "clip_model", None)])]
            return ", ".join(names) or "no weights"

        needs = "; ".join(f"{preset}: {weights(cfg)}" for preset, cfg in entry.presets.items())
        flags = [flag for flag, on in (("trains", entry.trains), ("auxiliary categories", entry.uses_auxiliary),
                                       ("fitted members", entry.needs_fitted)) if on]
        console.print(f"[bold]{entry.name}[/bold] — {entry.summary} [dim](weights {needs}"
                      f"{'; ' + ', '.join(flags) if flags else ''})[/dim]")
    return 0


def command_synth(args: argparse.Namespace, console: Console) -> int:
    from submission.datasets.procedural import ProceduralConfig, generate

    config = ProceduralConfig(seed=args.seed, image_size=args.image_size)
    root = generate(args.out, config)
    console.print(f"procedural dataset written to {root} ({asdict(config)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input ends with a one-line error and exit code 2."""
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)  # logs keep whole tables
    try:
        if args.command == "run":
            return command_run(args, console)
        if args.command == "methods":
            return command_methods(console)
        if args.command == "package":
            from submission.packaging import package

            console.print(f"bundle written: {package(args.run_dir, args.method, args.dist)}")
            return 0
        if args.command == "verify":
            from submission.verify import verify

            report = verify(args.archive)
            console.print(f"verified {args.archive}: checksums ok; {report.cell}: bundle {report.bundle} vs run "
                          f"{report.stored}; unseen image: bundle {report.fresh_bundle:.6f} vs installed "
                          f"{report.fresh_installed:.6f}")
            return 0
        return command_synth(args, console)
    except HarnessError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished cells are in results.csv; rerun with the same --out to resume[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
