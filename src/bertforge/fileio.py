"""Atomic file writes: everything bertforge writes goes to a temporary name, then is renamed.

A crash (or SIGKILL) in the middle of a write leaves either the old file or no file, never a
half-written one. Directories (checkpoints, shard sets) are made complete by writing a marker
file last; readers treat a directory without its marker as absent.

The output guard, `prepare_output`, is what every writing command calls before any work: the
output must be writable, and an output that already holds a finished result (a model, a run,
a vocab, a file) is refused unless the user passed `--overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Literal, Mapping, Sequence

from bertforge.errors import BertforgeError


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit, fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def temporary_path_for(path: str | Path) -> Path:
    """A fresh temporary path beside `path`, for writers (torch.save, safetensors) that need a name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(temporary)


def commit_file(temporary: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file over its final name."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(Path(path).parent)


def replace_directory(temporary_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written directory into place, replacing any old one."""
    temporary_dir, final_dir = Path(temporary_dir), Path(final_dir)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, trash)
        os.replace(temporary_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temporary_dir, final_dir)
    _fsync_directory(final_dir.parent)


# -- the output guard ---------------------------------------------------------------------------

OVERWRITE_HELP = "replace an output that already holds a finished result (refused without it)"
"""The one help text of every writing command's `--overwrite`."""

RUN_OUTPUTS = ("final", "results.json", "checkpoints", "metrics.jsonl", "tensorboard", "curves.png",
               "dev_predictions.jsonl", "test_predictions.jsonl")
"""What a training run writes into its run directory (a new run starts without them)."""

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "model.onnx")
"""Files that make a directory a model directory."""


def run_state(directory: Path) -> str | None:
    """What an earlier training run left in `directory`, as words for an error, or None."""
    found = [name + "/" * (directory / name).is_dir() for name in ("final", "results.json") if (directory / name).exists()]
    if found:
        return f"a finished run ({', '.join(found)})"
    if (directory / "checkpoints").is_dir() and any((directory / "checkpoints").iterdir()):
        return "the checkpoints of an earlier run (checkpoints/)"
    return None


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists (what the writer will create under)."""
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _probe_writable(directory: Path, path: Path) -> None:
    """Create and remove a file in `directory`: the only test that holds for root and
    read-only mounts alike (os.access answers yes to root on a read-only directory)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".bertforge-probe.", dir=directory)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BertforgeError(f"cannot write here: cannot create files in {directory} ({reason})", path=path) from None
    os.close(fd)
    os.unlink(probe)


def start_run(directory: str | Path, *, resume: bool) -> None:
    """Clear what an earlier run left in a run directory (RUN_OUTPUTS) unless resuming, so a new
    run's metrics, checkpoints and final model are its own. Called after `prepare_output` has
    allowed the directory (nothing finished there, or --overwrite)."""
    if resume:
        return
    directory = Path(directory)
    for name in RUN_OUTPUTS:
        entry = directory / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif os.path.lexists(entry):
            entry.unlink()


def prepare_output(path: str | Path, *, kind: Literal["file", "directory"],
                   finished: Sequence[str] | Callable[[Path], str | None] = (), overwrite: bool = False,
                   what: str = "result", never: Mapping[str, str] | None = None, inputs: Sequence[Path | str] = (),
                   whole: bool = False, hint: str = "pass --overwrite to replace it") -> Path:
    """Check, before any work, that `path` can be written and that writing it loses nothing.

    Every writing command calls this first, so that a bad output fails at once, on one line
    (a `BertforgeError` naming the path), before any model is loaded. Nothing is written.

    - kind: "file" (an existing file is a finished result: refused without `overwrite`; a
      directory, a device or a pipe there is an error) or "directory" (an existing file there
      is an error).
    - finished: for a directory, the entries that mark a finished result (any one present:
      refused without `overwrite`), or a function that describes what the directory holds
      (None: nothing finished).
    - never: marker -> what it means, for directories the command must not write into even
      with `overwrite` (a vocab written into a model directory would not match its weights).
    - inputs: paths the command reads; the output may be none of them nor hold one (a
      replaced output would take the input with it).
    - whole: the command replaces the whole directory; with `overwrite` only a directory that
      holds a finished result (or nothing) is replaced, never one holding other files.

    The parent chain is checked as the writer will see it: the closest existing ancestor must
    be a directory in which a file can be created (a read-only mount, `/dev/null/x` or a file
    where a directory is needed fail here, not after the work).
    """
    path = Path(path)
    _check_inputs(path, inputs)
    if os.path.lexists(path):
        if kind == "file":
            _check_existing_file(path, overwrite, hint)
        else:
            _check_existing_directory(path, finished, overwrite, what, never or {}, whole, hint)
        _probe_writable(path.parent if kind == "file" else path, path)
        return path
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise BertforgeError(f"cannot write here: {anchor} is not a directory", path=path)
    _probe_writable(anchor, path)
    return path


def _check_inputs(path: Path, inputs: Sequence[Path | str]) -> None:
    target = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == target:
            raise BertforgeError(f"is also the input; the output must differ from the input ({source})", path=path)
        if target in source.parents:
            raise BertforgeError(f"holds the input {source}; the output must differ from the input and not "
                                 f"contain it", path=path)


def _check_existing_file(path: Path, overwrite: bool, hint: str) -> None:
    if path.is_dir():
        raise BertforgeError("is a directory; expected a file name", path=path)
    if not path.is_file():
        raise BertforgeError("exists and is not a regular file (a device, pipe or broken link); "
                             "choose a file name", path=path)
    if not overwrite:
        raise BertforgeError(f"already exists; {hint}", path=path)


def _check_existing_directory(path: Path, finished: Sequence[str] | Callable[[Path], str | None], overwrite: bool,
                              what: str, never: Mapping[str, str], whole: bool, hint: str) -> None:
    if not path.is_dir():
        raise BertforgeError("exists and is not a directory; expected a directory", path=path)
    for marker, meaning in never.items():
        if (path / marker).exists():
            raise BertforgeError(f"holds {meaning} ({marker}); choose another directory "
                                 f"(--overwrite does not apply here)", path=path)
    if callable(finished):
        holds = finished(path)
    else:
        present = [name for name in finished if (path / name).exists()]
        holds = f"a finished {what} ({', '.join(present)})" if present else None
    if holds is not None and not overwrite:
        raise BertforgeError(f"holds {holds}; {hint}", path=path)
    if whole and holds is None and any(not entry.name.startswith(".") for entry in path.iterdir()):
        raise BertforgeError(f"holds files that are not a {what}; choose an empty or new directory "
                             f"(the whole directory is replaced)", path=path)


def prepare_run_directory(path: str | Path, *, overwrite: bool, resume: bool, resume_hint: str,
                          inputs: Sequence[Path | str | None] = ()) -> Path:
    """`prepare_output` for a training run directory: a finished run, or an unfinished one's
    checkpoints, is refused unless the run starts over (`overwrite`) or continues (`resume`);
    `resume_hint` is how the command spells resuming (`--resume`, `trainer.resume=true`)."""
    if overwrite and resume:
        raise BertforgeError(f"--overwrite starts the run over and {resume_hint} continues it; pass one of them",
                             path=path)
    return prepare_output(path, kind="directory", finished=run_state, overwrite=overwrite or resume,
                          inputs=[source for source in inputs if source is not None],
                          hint=f"pass --overwrite to start over, or {resume_hint} to continue it")
