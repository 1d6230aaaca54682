"""Fingerprints of what a scan reads: its config text, its model file and its data, recorded when a run
starts so that a resume can refuse to mix the trials of two different scans into one report.

Files are fingerprinted by size and a SHA-256 of their first and last MiB (cheap on multi-GB data; a
change confined to the middle of a large file goes unnoticed); folders by their sorted listing of
relative names and sizes. Modification times are left out: copying a run folder and its inputs elsewhere
keeps them valid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nc_engine.config.settings import Config
from nc_engine.errors import RunFolderError

CHUNK = 1 << 20
WHAT = {"config": "the run's config.toml", "model": "the model file", "data": "the data"}


def text_print(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def path_print(path: Path) -> str:
    """size + head/tail hash of a file, or the listing of a folder; "missing" when it is not there."""
    try:
        if path.is_dir():
            listing = sorted(
                f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}" for p in path.rglob("*") if p.is_file()
            )
            return "listing:" + hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest()
        digest = hashlib.sha256()
        size = path.stat().st_size
        with path.open("rb") as f:
            digest.update(f.read(CHUNK))
            if size > CHUNK:
                f.seek(max(CHUNK, size - CHUNK))
                digest.update(f.read(CHUNK))
        return f"size:{size}:sha256:{digest.hexdigest()}"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None


def scan_prints(cfg: Config, config_text: str) -> dict[str, str]:
    """The fingerprints of a scan whose run folder holds `config_text` as config.toml."""
    return {
        "config": text_print(config_text),
        "model": path_print(cfg.resolve_path(cfg.model.path)),
        "data": path_print(cfg.resolve_path(cfg.data.path)),
    }


def check_prints(run: Path, recorded: dict[str, str] | None, now: dict[str, str], cfg: Config) -> None:
    """Refuse a resume whose config, model or data differ from the ones the scan started on."""
    if recorded is None:
        return  # a run folder from before fingerprints were recorded: nothing to compare
    for key, label in WHAT.items():
        if key in recorded and recorded[key] != now[key]:
            where = {
                "config": run / "config.toml",
                "model": cfg.resolve_path(cfg.model.path),
                "data": cfg.resolve_path(cfg.data.path),
            }[key]
            raise RunFolderError(
                f"{run}: {label} changed since the scan started ({where}); a resume must continue "
                "the same scan: start a new one instead"
            )
