"""Atomic file writes: every file goes to a temporary name in its folder and is renamed into place,
so a crash or a full disk never leaves half a file under the real name."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from nc_engine.errors import first_line


def regular_file_problem(path: Path, expected: str) -> str | None:
    """Why `path` is not a regular file one can read to the end (a device such as /dev/zero or a FIFO would
    be read forever), as the end of a one-line message; None when it is one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return f"is a folder; expected {expected}"
    if not stat.S_ISREG(mode):
        return f"is not a regular file (a device, FIFO or socket); expected {expected}"
    return None


def foreign_entry(root: Path) -> str | None:
    """The first entry under `root` that is neither a plain file nor a folder (a symbolic link, FIFO,
    device or socket), as a one-line message; None when there is none. A folder someone else hands over
    could send writes outside itself through a link, or hang a reader on a FIFO."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        return f"{entry.path}: is a symbolic link; expected only plain files and folders"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif not entry.is_file(follow_symlinks=False):
                        return f"{entry.path}: is not a regular file (a FIFO, device or socket)"
        except OSError as exc:
            return f"{folder}: cannot list it ({exc.strerror or exc})"
    return None


def escapes_folder(folder: Path, name: str, allowed: Path | None = None) -> str | None:
    """Why the file `name`, named by a file inside `folder`, would be read from outside it (an absolute
    path, `..`, or a symbolic link leading out), as a one-line message; None when it stays inside. A link
    into `allowed` (a Hugging Face cache's blobs) is fine."""
    path = folder / name
    try:
        real, inside = path.resolve(), folder.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        return f"{path}: cannot be resolved ({exc})"
    if real == inside or inside in real.parents:
        return None
    if allowed is not None and allowed.resolve() in real.parents:
        return None
    return f"{path}: leads outside {folder} (to {real}); expected every file the folder names to be inside it"


def open_append(path: Path) -> IO[str]:
    """`path` opened for appending text, created if missing; never through a symbolic link, never a FIFO
    or device, never a file with other names (hard links): appending there would change a file elsewhere."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(exc.errno, f"{path} is a symbolic link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise OSError(f"{path} is not a plain file of its own (a device, FIFO or hard link)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def memory_bytes() -> int:
    """This machine's memory (for caps on what a file may make us allocate); 16 GiB when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 16 << 30


BOMB_FLOOR = 256 << 20  # members smaller than this decompress to too little to matter
BOMB_RATIO = 200  # images and labels compress 2-10x; a 3.8 MB file that inflates to 4.7 GB is 1,236x


def npz_problem(path: Path, keys: list[str] | None = None, limit_bytes: int | None = None) -> str | None:
    """Why the named arrays of an .npz cannot be read as declared, found from their headers alone (numpy
    allocates what a header declares before it reads a byte): a shape larger than the member holds, or
    arrays needing more than half of this machine's memory (a decompression bomb). None when they can.
    `keys` None: every array in the file; `limit_bytes`: a lower cap, for a file whose size is known."""
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            wanted = [n.removesuffix(".npy") for n in members if n.endswith(".npy")] if keys is None else keys
            for key in wanted:
                info = members.get(f"{key}.npy")
                if info is None:
                    continue  # numpy says which array is missing
                if info.file_size > BOMB_FLOOR and info.file_size > BOMB_RATIO * max(1, info.compress_size):
                    ratio = info.file_size // max(1, info.compress_size)
                    return f"array {key!r} inflates {ratio:,}x to {info.file_size:,} bytes (a decompression bomb)"
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                    declared = math.prod(shape) * dtype.itemsize
                    if declared > info.file_size - f.tell():
                        held = info.file_size
                        return f"array {key!r} declares shape {shape} ({declared:,} bytes) but holds {held:,}"
                total += declared
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"not a readable .npz file ({first_line(exc)})"
    if total > memory_bytes() // 2:
        return f"its arrays would take {total / 2**30:.1f} GiB, more than half of this machine's memory"
    if limit_bytes is not None and total > limit_bytes:
        return f"its arrays would take {total:,} bytes; a file of this kind holds at most {limit_bytes:,}"
    return None


class JsonFileProblem(ValueError):
    """Why a file is not a readable JSON object, as the end of a one-line message."""


MAX_NESTING = 200  # a nested Keras model config reaches a few dozen levels; a hostile file may nest 100,000


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and dicts nest deeper than `limit`, found without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def parse_json(text: str | bytes) -> Any:
    """JSON from a file nc-tui did not necessarily write: ValueError (never RecursionError) when it is not
    JSON or nests deeper than MAX_NESTING, so that no later walk over it can overflow the stack."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels") from None
    if too_deep(data):
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    return data


def parse_toml(text: str) -> dict[str, Any]:
    """TOML as parse_json reads JSON: tomllib.TOMLDecodeError for deep nesting too."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError(f"nested deeper than {MAX_NESTING} levels") from None
    if too_deep(data):
        raise tomllib.TOMLDecodeError(f"nested deeper than {MAX_NESTING} levels")
    return data


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or JsonFileProblem: unreadable, not JSON, or JSON but not an object."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JsonFileProblem(f"not a readable JSON file ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise JsonFileProblem(f"expected a JSON object, got a {type(data).__name__}")
    return data


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null; numpy scalars as Python numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Run `write` on a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(json_safe(data), indent=1) + "\n")


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    write_atomic(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]  # stubs: **arrays might fill allow_pickle


def write_raw_npz(path: Path, **arrays: np.ndarray) -> None:
    """For float state written while a scan runs: noise-like floats barely compress, and deflate is slow."""
    write_atomic(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # stubs: **arrays might fill allow_pickle


def write_png(path: Path, array: np.ndarray) -> None:
    """[0, 1] floats -> 8-bit PNG; (H, W) grey or (C, H, W)."""
    a = np.clip(np.rint(np.asarray(array, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    write_atomic(path, lambda f: Image.fromarray(a).save(f, format="PNG"))


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    write_text(path, buffer.getvalue())


class JsonLines:
    """An append-only JSON-lines file (events.jsonl), flushed one whole line at a time. Opened on the first
    write (no empty file when nothing is said); a torn last line left by a crash is dropped then, and a
    line that fails to write (disk full) is cut off again, so every line in the file is whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, record: dict) -> None:
        if self._file is None:
            drop_torn_tail(self.path)
            self._file = open_append(self.path)
        start = self._file.tell()
        try:
            self._file.write(json.dumps(json_safe(record)) + "\n")
            self._file.flush()
        except OSError:
            _truncate(self.path, start)
            raise

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the failed write was already cut off; nothing more can be saved


def _truncate(path: Path, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        pass  # best effort: a reader drops a torn last line anyway


def drop_torn_tail(path: Path, chunk: int = 1 << 16) -> None:
    """Cut a file back to its last newline: an append interrupted by a crash leaves half a line. Reads
    backwards from the end (events.jsonl can be large). Only a plain file is cut, never through a link."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(f"{path} is not a plain file (a symbolic link, FIFO or device)")
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                block = f.read(pos - start)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                pos = start
            else:
                keep = 0
    except FileNotFoundError:
        return
    if keep < end:
        os.truncate(path, keep)
