"""`python -m submission weights [fetch]`: where each weight file the selected methods need is, and getting it.

`weights_report` searches every backbone and CLIP tower the methods need under a preset exactly as a run does
(`methods.features.search_weight_file`) and says, per file, where it was
found (or every place searched), its SHA-256 and its licence. `fetch` downloads the missing ones with the
providers' own functions into the caches that search reads (torch.hub for torchvision's files, open_clip's
`download_pretrained` for CLIP towers), checking published digests; offline it stops at once and says, per
file, how to provide it.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from methods.base import WeightFile
from methods.declared_weights import search_weight_file
from methods.weight_files import published_digest, sha256_file, WeightSearch, WeightsInvalid, WeightsMissing
from methods.registry import MethodSpecError, build_config, list_methods
from submission.errors import HarnessError

FETCH_COMMAND = "python -m submission weights fetch"


@dataclass(frozen=True)
class NeededWeight:
    """One weight file the selected methods need: its `--weights` name, the CLIP tag (None for a backbone), the
    method specs that need it, and the search result."""

    name: str
    tag: str | None
    needed_by: tuple[str, ...]
    search: WeightSearch

    @property
    def found(self) -> Path | None:
        return self.search.found


def _needs(specs: tuple[str, ...], preset: str) -> dict[tuple[str, str | None], list[str]]:
    """(weight name, CLIP tag or None) -> the specs that need it, in the order first needed."""
    needs: dict[tuple[str, str | None], list[str]] = {}
    for spec in specs or tuple(entry.name for entry in list_methods()):
        try:
            entry, config = build_config(spec, preset)
        except MethodSpecError as error:
            raise HarnessError(str(error)) from None
        for need in entry.requirements(config).weights:
            needs.setdefault((need.name, need.tag), []).append(spec)
    return needs


def weights_report(specs: tuple[str, ...] = (), preset: str = "paper",
                   weights: dict[str, Path] | None = None) -> list[NeededWeight]:
    """Every weight file the methods (default: all registered) need under `preset`, each searched as a run does."""
    weights = dict(weights or {})
    needs = _needs(specs, preset)
    unknown = sorted(set(weights) - {name for name, _ in needs})
    if unknown:
        raise HarnessError(f"--weights {unknown[0]}: not a weight file the selected methods need under preset "
                           f"{preset!r} (they need: {', '.join(name for name, _ in needs) or 'none'})")
    rows = []
    for (name, tag), needed_by in needs.items():
        try:
            search = search_weight_file(WeightFile(name, tag), weights.get(name))
        except WeightsInvalid as error:  # an explicit path that is not a file
            raise HarnessError(str(error)) from None
        rows.append(NeededWeight(name, tag, tuple(needed_by), search))
    return rows


def print_report(rows: list[NeededWeight], preset: str, console: Console) -> None:
    """One table row per weight file, then what is missing and how to get it."""
    table = Table(title=f"Weight files, preset {preset}", title_justify="left", show_lines=True)
    table.add_column("weight", no_wrap=True)
    table.add_column("needed by")
    table.add_column("status", no_wrap=True)
    table.add_column("file (or every place searched)", overflow="fold", ratio=1)
    table.add_column("SHA-256", no_wrap=True)
    table.add_column("licence", no_wrap=True)
    for row in rows:
        name = row.name if row.tag is None else f"{row.name}\n{row.tag}"
        if row.found is not None:
            where, digest = escape(str(row.found)), sha256_file(row.found)
            published = published_digest(row.found)
            status = ("[green]found[/green]" if not published or digest.startswith(published) else
                      f"[red]found, but not the\npublished SHA-256\n{published}[/red]")
            status += "\n(--weights)" if row.search.explicit else ""
        else:
            status, where, digest = "[red]MISSING[/red]", escape("\n".join(row.search.searched)), "—"
        licence = row.search.licence.rsplit(": ", 1)[-1].rstrip(".")  # the licence's name; the full text in LICENCES
        table.add_row(escape(name), escape("\n".join(row.needed_by)), status, where, digest, escape(licence))
    console.print(table)
    missing = [row for row in rows if row.found is None]
    if not missing:
        console.print(f"{len(rows)} of {len(rows)} weight files found", highlight=False)
        return
    console.print(f"[red]{len(missing)} of {len(rows)} weight files missing[/red]; methods that need them are "
                  f"skipped by the pre-flight. To get them:", highlight=False)
    for row in missing:
        console.print(f"  {escape(row.search.how_to_get())}", highlight=False, soft_wrap=True)
    downloadable = any(row.search.place is not None for row in missing)
    if downloadable:
        console.print(f"With internet: {FETCH_COMMAND} --preset {preset}", highlight=False, soft_wrap=True)


def offline_reason(hosts: list[str]) -> str | None:
    """Why downloads cannot work right now (HF_HUB_OFFLINE set, or a host unreachable), or None."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    for host in dict.fromkeys(hosts):
        if not _reachable(host):
            return f"no network: {host} cannot be reached"
    return None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:443 opens within `timeout` seconds (DNS included)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download_host(row: NeededWeight) -> str:
    if row.tag is not None:  # open_clip prefers the Hugging Face hub when the tag has a hub id
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(row.search.url).hostname or ""


def fetch(rows: list[NeededWeight], console: Console) -> int:
    """Download every missing file that has a download; 0 when all are then present, 2 (with one line per file
    that could not be got, and how to provide it) otherwise."""
    from methods.backbones import fetch_backbone_weights
    from methods.clip_towers import fetch_clip_weights

    missing = [row for row in rows if row.found is None]
    if not missing:
        console.print(f"nothing to fetch: all {len(rows)} weight files are present", highlight=False)
        return 0
    downloadable = [row for row in missing if row.search.place is not None or row.tag is not None]
    failures = [(row, "no download: comes with a package") for row in missing if row not in downloadable]
    reason = offline_reason([_download_host(row) for row in downloadable]) if downloadable else None
    if reason:
        failures = [(row, f"offline ({reason})") for row in downloadable] + failures
    else:
        for row in downloadable:
            label = row.name if row.tag is None else f"{row.name} ({row.tag})"
            source = (f"torch.hub from {row.search.url}" if row.tag is None else
                      "open_clip's download_pretrained (the Hugging Face hub when the tag has a hub id)")
            console.print(f"fetching {escape(label)} with {escape(source)}", highlight=False, soft_wrap=True)
            try:
                path = fetch_backbone_weights(row.name) if row.tag is None else fetch_clip_weights(row.name, row.tag)
            except (WeightsMissing, OSError, RuntimeError) as error:  # WeightsInvalid: a digest that does not match
                failures.append((row, " ".join(str(error).split())))
                continue
            console.print(f"  {escape(label)}: {escape(str(path))} sha256 {sha256_file(path)}", highlight=False,
                          soft_wrap=True)
    for row, why in failures:
        console.print(f"[red]error:[/red] {escape(why)}: {escape(row.search.how_to_get())}", highlight=False,
                      soft_wrap=True)
    return 2 if failures else 0
