"""Where and how a chapter runs: device, seed, execution profile and the trained-weight cache.

Every chapter starts with the same three lines::

    PROFILE = runtime.profile()      # "smoke" | "book" | "paper"   (ICLBOOK_PROFILE)
    SEED = runtime.seed()            # an int                        (ICLBOOK_SEED)
    DEVICE = runtime.device()        # cuda if available, else cpu   (ICLBOOK_DEVICE)

and reads its sizes from one config per profile kept in the chapter's library module, so nothing
else in the chapter changes between profiles.

Environment variables
---------------------
ICLBOOK_PROFILE   smoke (seconds, code paths only) | book (default) | paper (the paper's scale, GPU)
ICLBOOK_SEED      base seed of every random draw (default 0)
ICLBOOK_DEVICE    force a torch device, e.g. "cpu" or "cuda:1"
ICLBOOK_CACHE     folder of the trained-weight cache (default ~/.cache/iclbook)
ICLBOOK_RETRAIN   1 to ignore cached weights and train again (the new weights replace the old)
ICLBOOK_PROGRESS  0 to hide progress bars
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

import iclbook

PROFILES = ("smoke", "book", "paper")
DEFAULT_PROFILE = "book"
DEFAULT_SEED = 0


def profile() -> str:
    """The execution profile, from ``ICLBOOK_PROFILE`` (default ``"book"``).

    Raises ValueError for a name outside :data:`PROFILES`, so that a typo never silently runs
    the wrong scale.
    """
    name = os.environ.get("ICLBOOK_PROFILE", DEFAULT_PROFILE).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"ICLBOOK_PROFILE={name!r} is not one of {PROFILES}")
    return name


def seed() -> int:
    """The base seed, from ``ICLBOOK_SEED`` (default 0)."""
    raw = os.environ.get("ICLBOOK_SEED", str(DEFAULT_SEED)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"ICLBOOK_SEED={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"ICLBOOK_SEED must be >= 0, got {value}")
    return value


def device() -> torch.device:
    """CUDA when available, else CPU; ``ICLBOOK_DEVICE`` overrides both."""
    forced = os.environ.get("ICLBOOK_DEVICE", "").strip()
    if forced:
        dev = torch.device(forced)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"ICLBOOK_DEVICE={forced!r} but CUDA is not available here")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` CPU threads for torch, then restore the previous count. Models of a
    few thousand parameters train faster on one thread than on two (the ops are too small to
    split; ``benchmarks/README.md``)."""
    if n < 1:
        raise ValueError(f"need n >= 1 threads, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(value: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU ``torch.Generator`` seeded
    with the same value, for code that prefers explicit generators (the library does)."""
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return generator(value)


def generator(value: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``value``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(value))
    return gen


def progress_enabled() -> bool:
    """Progress bars are shown unless ``ICLBOOK_PROGRESS=0``."""
    return os.environ.get("ICLBOOK_PROGRESS", "1").strip() not in ("0", "false", "no")


def describe() -> str:
    """One line for a chapter's parameters cell: profile, seed, device, library and torch."""
    return (
        f"profile={profile()}  seed={seed()}  device={device()}  "
        f"iclbook={iclbook.__version__}  torch={torch.__version__}"
    )


# ---------------------------------------------------------------------------------------------
# Trained-weight cache
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Folder of the trained-weight cache: ``ICLBOOK_CACHE`` or ``~/.cache/iclbook``."""
    return Path(os.environ.get("ICLBOOK_CACHE", Path.home() / ".cache" / "iclbook")).expanduser()


def library_digest() -> str:
    """A short hash of the library's own source files: any edit to the library changes it, so a
    cached model is never reused by code that would have trained it differently."""
    h = hashlib.sha256(iclbook.__version__.encode())
    root = Path(iclbook.__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _plain(obj: Any) -> Any:
    """A JSON-able view of a config (dataclasses, tuples, torch dtypes...)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def cache_key(chapter: str, name: str, config: Any, **extra: Any) -> str:
    """Hash of (chapter, name, config, profile, seed, library source, extra) naming a cache entry."""
    payload = {
        "chapter": chapter,
        "name": name,
        "config": _plain(config),
        "profile": profile(),
        "library": library_digest(),
        "extra": _plain(extra),
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(
    chapter: str,
    name: str,
    config: Any,
    build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
    **extra: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """Load trained weights and their training history from the cache, or build and store them.

    ``build()`` trains and returns ``(state, history)``: a dict of tensors (a ``state_dict``, or
    several under prefixed keys) and a JSON-able history. The entry is keyed by
    :func:`cache_key`, so a different config, profile, seed (pass it in ``extra``) or library
    source never reuses stale weights. ``ICLBOOK_RETRAIN=1`` trains again and overwrites.

    Returns ``(state, history, hit)`` where ``hit`` tells whether the cache was used. Loading uses
    ``torch.load(..., weights_only=True)``. A cache folder that cannot be written only costs the
    saving, never the result.
    """
    key = cache_key(chapter, name, config, **extra)
    path = cache_dir() / f"{chapter}-{name}-{key}.pt"
    retrain = os.environ.get("ICLBOOK_RETRAIN", "0").strip() in ("1", "true", "yes")
    if path.exists() and not retrain:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["state"], json.loads(blob["history"]), True
    state, history = build()
    state = {k: v.detach().cpu() for k, v in state.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": state, "history": json.dumps(history)}, tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a half-written entry
    except OSError as err:  # read-only home, full disk: keep going without the cache
        print(f"iclbook: could not write the weight cache at {path}: {err}")
    return state, history, False
