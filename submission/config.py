"""The run's configuration, parsed from the command line or built from Python, and checked when it is built."""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from methods.common import PRECISIONS  # frozen networks on CUDA: fp32, or auto = bf16 autocast
from submission.errors import HarnessError
from submission.option_checks import choice, is_int, names, numbers

DEFAULT_SEEDS = (42, 0, 1234)
DEFAULT_SHOTS = (4,)
FORMATS = ("loco", "mvtec", "folder")
DEVICES = ("auto", "cpu", "cuda")
PROCEDURAL_SPLITS = ("test", "dev")  # as submission.datasets.procedural.PROCEDURAL_SPLITS
METRICS = ("all", "image")  # all: image and pixel metrics; image: image metrics only (no pixel AUROC, AUPRO, AU-sPRO)
MIN_IMAGE_SIZE = 32
SEED_RANGE = (-(2**63), 2**64)  # what torch.manual_seed accepts

EXECUTORS = ("local", "ray", "slurm")
SLURM_CLUSTERS = ("slurm", "local", "debug")  # submitit's: a Slurm cluster, or its stand-ins on this machine
EXTRA = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # executor -> (module, pip extra)


@dataclass(frozen=True)
class ExecutorConfig:
    """Which executor runs the cells and how many workers it uses; never changes what a cell computes."""

    name: str = "local"  # see EXECUTORS
    workers: int | None = None  # ray: actors (default: one per GPU of the cluster, else one per
    # `cpus_per_worker` cores); slurm: array jobs (default: one per category). Not used by local
    cpus_per_worker: int | None = None  # CPU cores reserved for each worker; None: the run's thread count
    retries: int = 2  # a cell whose worker dies (or array job fails) is tried again up to this many times
    ray_address: str | None = None  # join this Ray cluster (`auto`, `ray://head:10001`); None: start a local one
    slurm_partition: str | None = None
    slurm_time_min: int = 240  # wall-clock limit of each array job
    slurm_cluster: str = "slurm"  # see SLURM_CLUSTERS: `local` runs the array as processes here (trying it out)

    def validate(self) -> None:
        """Raise a one-line `HarnessError` naming the first option that cannot be used (a missing extra too)."""
        choice("--executor", self.name, EXECUTORS)
        for option, value in (("--slurm-time", self.slurm_time_min), ("--workers", self.workers),
                              ("--cpus-per-worker", self.cpus_per_worker)):
            if value is not None:
                numbers(option, (value,), low=1)
        numbers("--retries", (self.retries,), low=0)
        if self.workers is not None and self.name == "local":
            raise HarnessError(f"--workers {self.workers}: only with --executor ray or slurm")
        if self.ray_address is not None and self.name != "ray":
            raise HarnessError(f"--ray-address {self.ray_address}: only with --executor ray")
        if self.slurm_partition is not None and self.name != "slurm":
            raise HarnessError(f"--slurm-partition {self.slurm_partition}: only with --executor slurm")
        choice("--slurm-cluster", self.slurm_cluster, SLURM_CLUSTERS)
        if self.name in EXTRA:
            module, extra = EXTRA[self.name]
            if importlib.util.find_spec(module) is None:
                raise HarnessError(f"--executor {self.name}: the {module} package is not installed "
                                   f"(pip install 'fewshot-ad-harness[{extra}]', or pip install -e '.[{extra}]')")
        if self.name == "slurm" and self.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise HarnessError("--executor slurm: no Slurm here (sbatch not found); --slurm-cluster local runs the "
                               "job array as processes on this machine")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; `runner.run(config)` does the rest.

    data=None means the embedded procedural dataset (format loco), in its realisation `procedural_split`:
    `test` (the reported one, the default) or `dev` (the one every setting is chosen on; read only when asked).
    `procedural_split` also picks the realisation whose other categories RegAD `source=procedural` meta-trains on
    (never the target category, so a run and its meta-training may share a realisation).
    preset=None means `offline` without --data and `paper` with it.
    methods=() means every registered method.
    """

    data: Path | None = None
    format: str = "loco"
    categories: tuple[str, ...] = ()
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    methods: tuple[str, ...] = ()
    preset: str | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    image_size: int = 256
    device: str = "auto"
    out: Path | None = None
    save_maps: bool = False
    batch_size: int = 16
    pretrained: bool = True  # False: random backbone weights (tests only)
    shard: tuple[int, int] | None = None  # (i, n): run only cells i, i+n, i+2n, ... of the grid
    precision: str = "fp32"  # see PRECISIONS; no effect on CPU. fp32 by default: on an H200, bf16 autocast moved
    # image AUROC by more than 0.005 on the same cells and was not faster (BENCHMARKS.md, precision_cuda)
    procedural_split: str = "test"  # see PROCEDURAL_SPLITS and the docstring
    metrics: str = "all"  # see METRICS; "image" leaves the pixel columns empty (the VAND score only, faster)
    cache_gib: float | None = None  # bound of the run's content cache (backbone features, CLIP encodings) in GiB;
    # None: methods.backbones.DEFAULT_CACHE_BYTES. Entries past it are evicted least recently used first
    decode_workers: int | None = None  # threads decoding and resizing images; None: min(8, CPU count); 1: serial
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where the cells run (never what they compute)
    anomaly_shots: int = 0  # m labelled anomalies per cell, drawn from and removed from its test set
    # (submission.anomaly_shots); 0 = the VAND protocol. One m per run folder
    plugins: tuple[str, ...] = ()  # files or modules that register outside methods (`--plugin`), imported first
    threads: int | None = None  # torch intra-op threads of every worker, set before each cell under every
    # executor (a method that trains follows the thread count); None: the run folder's recorded value on a
    # resume, else this machine's torch default. Recorded in config.json

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line `HarnessError` naming the first option a run cannot use (the CLI's checks too:
        one place). Reads file metadata only; method options and weight files are the pre-flight's."""
        from methods.registry import PRESETS

        if self.data is not None and not Path(self.data).is_dir():
            raise HarnessError(f"--data {self.data}: dataset folder is missing")
        choice("--format", self.format, FORMATS)
        names("--categories", self.categories)
        numbers("--shots", self.shots, low=1)
        numbers("--seeds", self.seeds, low=SEED_RANGE[0], below=SEED_RANGE[1])
        names("--methods", self.methods)
        names("--plugin", self.plugins)
        if self.preset is not None:
            choice("--preset", self.preset, PRESETS)
        self._check_weights()
        numbers("--image-size", (self.image_size,), low=MIN_IMAGE_SIZE)
        choice("--device", self.device, DEVICES)
        choice("--precision", self.precision, PRECISIONS)
        choice("--procedural-split", self.procedural_split, PROCEDURAL_SPLITS)
        choice("--metrics", self.metrics, METRICS)
        numbers("--batch-size", (self.batch_size,), low=1)
        numbers("--anomaly-shots", (self.anomaly_shots,), low=0)
        for name in ("save_maps", "pretrained"):
            if not isinstance(getattr(self, name), bool):
                raise HarnessError(f"{name}={getattr(self, name)!r}: must be True or False")
        if self.out is not None:  # a file where the run folder (or a folder above it) should be
            for folder in (Path(self.out), *Path(self.out).parents):
                if folder.exists():
                    if not folder.is_dir():
                        raise HarnessError(f"--out {self.out}: {folder} exists and is not a folder")
                    break
        if self.cache_gib is not None and (isinstance(self.cache_gib, bool) or not isinstance(self.cache_gib, (int, float))
                                           or not 0 <= self.cache_gib < float("inf")):
            raise HarnessError(f"--cache-gib {self.cache_gib!r}: expected a number of GiB >= 0")
        if self.decode_workers is not None:
            numbers("--decode-workers", (self.decode_workers,), low=1)
        if self.threads is not None:
            numbers("--threads", (self.threads,), low=1)
        if not isinstance(self.executor, ExecutorConfig):
            raise HarnessError(f"executor={self.executor!r}: expected an ExecutorConfig")
        self.executor.validate()
        if self.shard is not None:
            shard = tuple(self.shard) if isinstance(self.shard, (tuple, list)) else ()
            if len(shard) != 2 or not all(map(is_int, shard)) or not 0 <= shard[0] < shard[1]:
                raise HarnessError(f"--shard {self.shard!r}: expected (i, n) with 0 <= i < n")

    def _check_weights(self) -> None:
        """--weights: known backbone or open_clip model names, and files that exist (never a silent fallback)."""
        if not isinstance(self.weights, dict):
            raise HarnessError(f"--weights {self.weights!r}: expected a mapping NAME -> PATH")
        if not self.weights:
            return
        from methods.backbones import BACKBONES  # only with --weights: open_clip takes seconds to import
        from methods.clip_towers import clip_model_names

        for name, path in self.weights.items():
            if name not in BACKBONES and name not in clip_model_names():
                raise HarnessError(f"--weights: unknown backbone {name!r}; known: {', '.join(BACKBONES)} "
                                   "or an open_clip model name (e.g. ViT-B-16-plus-240)")
            if not isinstance(path, (str, Path)) or not Path(path).is_file():
                raise HarnessError(f"--weights {name}={path}: no such file")

    @property
    def resolved_preset(self) -> str:
        """The preset that runs: explicit, else offline for the embedded data and paper for --data."""
        return self.preset or ("offline" if self.data is None else "paper")
