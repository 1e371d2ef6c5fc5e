"""The run's configuration, parsed from the command line or built from Python."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEEDS = (42, 0, 1234)
DEFAULT_SHOTS = (4,)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; `runner.run(config)` does the rest.

    data=None means the embedded procedural dataset (format loco).
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

    @property
    def resolved_preset(self) -> str:
        """The preset that runs: explicit, else offline for the embedded data and paper for --data."""
        return self.preset or ("offline" if self.data is None else "paper")
