"""Where and how a chapter runs: device, seed and named random streams, execution profile and
the trained-weight cache.

A chapter reads these through :func:`iclbook.chapter.start`, which calls::

    runtime.profile()      # "smoke" | "book" | "paper"   (ICLBOOK_PROFILE)
    runtime.seed()         # an int                        (ICLBOOK_SEED)
    runtime.device()       # cuda if available, else cpu   (ICLBOOK_DEVICE)

and reads its sizes from one config per profile kept in the chapter's library module, so nothing
else in the chapter changes between profiles. Every random draw goes through a named stream
(:class:`Streams`): the chapter's table in its module, the library's in :data:`LIBRARY_STREAMS`.

Environment variables
---------------------
::

    ICLBOOK_PROFILE   smoke (seconds, code paths only) | book (default) | paper (the paper's scale, GPU)
    ICLBOOK_SEED      base seed of every random draw (default 0)
    ICLBOOK_DEVICE    force a torch device, e.g. "cpu" or "cuda:1"
    ICLBOOK_CACHE     folder of the trained-weight cache (default ~/.cache/iclbook)
    ICLBOOK_RETRAIN   1 to ignore cached weights and train again (the new weights replace the old)
    ICLBOOK_PROGRESS  0 to hide progress bars
    ICLBOOK_HTML      1 where the output goes to the HTML book (set by the book's build): figures a
                      reader scrubs with a slider are made as self-contained HTML there, and as
                      static figures elsewhere (Colab, Jupyter, the paired notebooks)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def seeded(value: int, devices: list | None = None) -> Iterator[None]:
    """Run a block with torch's global stream seeded to ``value``, then give the caller's stream
    back untouched (``torch.random.fork_rng`` + ``manual_seed``): how a builder that initialises
    with ``torch.nn`` defaults stays deterministic without resetting anyone else's draws."""
    with torch.random.fork_rng(devices=[] if devices is None else devices):
        torch.manual_seed(int(value))
        yield


def seed_everything(value: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU ``torch.Generator`` seeded
    with the same value, for code that prefers explicit generators (the library does)."""
    random.seed(value)
    np.random.seed(int(value) % 2**32)
    torch.manual_seed(value)
    return generator(value)


def generator(value: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``value``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(value))
    return gen


# ---------------------------------------------------------------------------------------------
# Named random streams
# ---------------------------------------------------------------------------------------------


def stream_seed(name: str, base: int, k: int = 0) -> int:
    """The seed of draw ``k`` of the stream ``name`` derived from the seed ``base``: 63 bits of
    NumPy's ``SeedSequence`` fed with (SHA-256 of the name, base, k). Different (name, base, k)
    give unrelated seeds: the streams of seed 0 and of seed 1 share no draw, and no data stream
    meets a model seed (the old offsets, ``SEED + k`` and ``1000 * SEED + i``, did both)."""
    if int(base) < 0 or int(k) < 0:
        raise ValueError(f"a stream's base seed and index must be >= 0, got {base} and {k}")
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    state = np.random.SeedSequence([tag, int(base), int(k)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) >> 1)


@dataclasses.dataclass(frozen=True)
class Stream:
    """One named random stream (:class:`Streams` gives it its name): ``width`` draws indexed
    ``0 <= k < width`` (a family: one per ensemble member, per mask...), each seeded by
    :func:`stream_seed` from the name, the base seed it derives from (a chapter's seed, a model's
    seed) and ``k``. ``kind`` says which generator it seeds: ``"torch"`` or ``"numpy"``."""

    width: int = 1
    kind: str = "torch"

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"a stream needs width >= 1, got {self}")
        if self.kind not in ("torch", "numpy"):
            raise ValueError(f"a stream's kind is 'torch' or 'numpy', got {self.kind!r}")


class Streams:
    """A table of named random streams derived from one base seed.

    A chapter draws every random object through a name, ``streams.generator("ood-domain")``,
    never through ``generator(SEED + 3)``: the table, kept in the chapter's library module, is the
    one place where the streams are declared, so a reader sees what each draw is for and which
    draws share a stream. Every (name, base seed, index) has its own seed (:func:`stream_seed`):
    two names never share draws, and neither do two chapter seeds, so the seeds 0-4 of the seed
    table are five independent runs. ``prefix`` keeps a table's names apart from another's (the
    library's streams use ``"library/"``); chapters share none, so that chapter 5's first model
    is chapter 3's first member."""

    def __init__(self, base: int, table: dict[str, Stream], prefix: str = "") -> None:
        self.base = int(base)
        if self.base < 0:
            raise ValueError(f"a base seed must be >= 0, got {base}")
        self.table = dict(table)
        self.prefix = prefix

    def _stream(self, name: str, kind: str | None = None) -> Stream:
        try:
            stream = self.table[name]
        except KeyError:
            raise KeyError(f"no random stream named {name!r}; this table has {sorted(self.table)}") from None
        if kind is not None and stream.kind != kind:
            raise TypeError(f"stream {name!r} seeds a {stream.kind} generator, not a {kind} one")
        return stream

    def seed(self, name: str, k: int = 0) -> int:
        """The integer seed of stream ``name`` (index ``k`` of a family of streams)."""
        stream = self._stream(name)
        if not 0 <= k < stream.width:
            raise ValueError(f"index {k} outside this stream's width {stream.width}")
        return stream_seed(self.prefix + name, self.base, k)

    def seeds(self, name: str, n: int) -> list[int]:
        """The first ``n`` seeds of a family (e.g. the seeds of an ensemble's members)."""
        return [self.seed(name, k) for k in range(n)]

    def generator(self, name: str, k: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` of stream ``name``: the same draws every time it is asked for."""
        self._stream(name, "torch")
        return generator(self.seed(name, k), device)

    def numpy(self, name: str, k: int = 0) -> np.random.Generator:
        """A fresh NumPy ``Generator`` of stream ``name``."""
        self._stream(name, "numpy")
        return np.random.default_rng(self.seed(name, k))


#: The library's own streams, derived from a model's seed ``s`` (``stream("batches", s)``).
LIBRARY_STREAMS = {
    "batches": Stream(),  # the training batches of the model of seed s
    "gpt-batches": Stream(),  # chapter 1's GPT baseline: its training batches
    "task": Stream(),  # chapter 3: a run's class means and label vectors
    "eval-sets": Stream(),  # chapter 3: a run's fixed evaluation sets
    "stack-blocks": Stream(width=100),  # chapter 4: block l of a stack of seed s
    "demos": Stream(width=10_000),  # chapter 2: demonstration draw k of an evaluation seed
    # chapter 2: the examples of a task's split; k = split * 104729 + the task's index
    "task-split": Stream(width=4 * 104729),
}


def stream(name: str, seed: int, k: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator of the library stream ``name`` (:data:`LIBRARY_STREAMS`) for the model or run of
    seed ``seed``."""
    return library_streams(seed).generator(name, k, device)


def library_streams(seed: int) -> Streams:
    """The library's streams (:data:`LIBRARY_STREAMS`) of the model or run of seed ``seed``."""
    return Streams(seed, LIBRARY_STREAMS, prefix="library/")


def progress_enabled() -> bool:
    """Progress bars are shown unless ``ICLBOOK_PROGRESS=0``."""
    return os.environ.get("ICLBOOK_PROGRESS", "1").strip() not in ("0", "false", "no")


def html_build() -> bool:
    """Whether the outputs are for the HTML book (``ICLBOOK_HTML=1``, which the book's build sets):
    :func:`iclbook.plots.scrubber` then makes its self-contained slider, elsewhere a static figure."""
    return os.environ.get("ICLBOOK_HTML", "0").strip() in ("1", "true", "yes")


def describe(prof: str | None = None, seed_value: int | None = None) -> str:
    """One line for a chapter's parameters cell: profile, seed, device, library and torch (the
    profile and seed a chapter passes down; the environment's where none is given)."""
    prof = profile() if prof is None else prof
    seed_value = seed() if seed_value is None else seed_value
    return (
        f"profile={prof}  seed={seed_value}  device={device()}  "
        f"iclbook={iclbook.__version__}  torch={torch.__version__}"
    )


# ---------------------------------------------------------------------------------------------
# Trained-weight cache
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Folder of the trained-weight cache: ``ICLBOOK_CACHE`` or ``~/.cache/iclbook``."""
    return Path(os.environ.get("ICLBOOK_CACHE", Path.home() / ".cache" / "iclbook")).expanduser()


def _module_path(name: str) -> Path | None:
    """The source file of the library module ``name`` (``iclbook.x.y``), or None if it is not one."""
    parts = name.split(".")
    if parts[0] != "iclbook":
        return None
    base = Path(iclbook.__file__).parent.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_sources(*modules: str) -> list[Path]:
    """The source files of the library modules ``modules`` and of every library module they
    import, directly or through others (read from their ``import`` statements, not by importing
    them), sorted. ``module_sources("iclbook.patterns.training")`` is what chapter 1's training
    code runs.

    Two kinds of module stay out, because they cannot change a trained weight through their
    source: a package's ``__init__`` that a submodule's import runs on the way (in this library
    it only re-exports names; a module that imports a *name* from a package's ``__init__``,
    ``from iclbook.x import f``, still follows it), and a chapter's ``config`` module, whose values enter the cache key by value
    (:func:`trained_part`), so that moving a threshold there retrains nothing."""

    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None:
            if name in modules:
                raise ValueError(f"{name!r} is not a module of the iclbook library")
            continue
        if name in seen:
            continue
        if name.rpartition(".")[2] == "config" and name not in modules:
            continue  # keyed by value, not by source
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for level, mod, names in _imports(path):
            if level is None:
                todo += names
                continue
            if level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (level - 1)]
                mod = ".".join(anchor + ([mod] if mod else []))
            for a in names:
                # `from iclbook import train` runs the module train (and the package's
                # re-exporting __init__, left out); `from iclbook.x import f` runs x itself
                sub = f"{mod}.{a}"
                todo.append(sub if _module_path(sub) is not None else mod)
    return sorted(set(seen.values()))


_IMPORTS: dict[tuple[str, int, int], list[tuple[int | None, str, list[str]]]] = {}


def _imports(path: Path) -> list[tuple[int | None, str, list[str]]]:
    """The import statements of the file ``path``: ``(None, "", names)`` for ``import a, b`` and
    ``(level, module, names)`` for ``from ... import``. Parsed once per version of the file (its
    modification time and size key the memo), since every cache key reads them."""
    import ast  # noqa: PLC0415

    st = path.stat()
    memo = (str(path), st.st_mtime_ns, st.st_size)
    if memo not in _IMPORTS:
        found: list[tuple[int | None, str, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.append((None, "", [a.name for a in node.names]))
            elif isinstance(node, ast.ImportFrom):
                found.append((node.level, node.module or "", [a.name for a in node.names]))
        _IMPORTS[memo] = found
    return _IMPORTS[memo]


def source_digest(*modules: str) -> str:
    """A short hash of the source that ``modules`` run (:func:`module_sources`), or of every library
    file when none is named: a cached model is reused only by code that would train it the same
    way, and an edit elsewhere in the library (chapter 2's Hugging Face path) leaves it valid."""
    h = hashlib.sha256(iclbook.__version__.encode())
    root = Path(iclbook.__file__).parent
    paths = module_sources(*modules) if modules else sorted(root.rglob("*.py"))
    for path in paths:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Configs: what is trained and what is checked
# ---------------------------------------------------------------------------------------------

#: The metadata mark of a config field that only a check reads (a threshold, the size of an
#: evaluation run after training, a switch of a verdict): :func:`cache_key` leaves it out.
CHECK = "check"


def check(default: Any) -> Any:
    """A config field that no trained weight depends on: a criterion's threshold, the number of
    prompts a measurement draws after training, a grid of finetuning rates tried on frozen
    weights. Declared as ``icl_ratio: float = runtime.check(0.15)``, it reads like any field
    (``cfg.icl_ratio``) but stays out of the weight cache's key, so moving a threshold retrains
    nothing. Every other field is a *trained* field: it keys the weights (sizes, steps, rates,
    checkpoint schedules whose readings are stored with them)."""
    return dataclasses.field(default=default, metadata={"role": CHECK})


def check_fields(config: Any) -> tuple[str, ...]:
    """The names of ``config``'s fields declared with :func:`check`."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        return ()
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("role") == CHECK)


def trained_part(config: Any) -> Any:
    """What of ``config`` the trained weights depend on: a dataclass config as a dict of its
    trained fields (nested dataclasses likewise), anything else as it is. The weight cache hashes
    this, never a check field."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        checks = set(check_fields(config))
        part = {
            f.name: trained_part(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name not in checks
        }
        # derived sizes (``cfg.d``) too: their formulas live in the config module, which the
        # source digest leaves out
        for name in dir(type(config)):
            if not name.startswith("_") and isinstance(getattr(type(config), name), property):
                part[f"@{name}"] = trained_part(getattr(config, name))
        return part
    return config


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


def cache_key(chapter: str, name: str, config: Any, *, uses: str | None = None, **extra: Any) -> str:
    """Hash of (chapter, name, config, source, extra) naming a cache entry. Of the config only its
    trained fields count (:func:`trained_part`): a threshold declared with :func:`check` never
    retrains, and two profiles whose trained fields agree share their weights (the profile's name
    changes no weight, so it is not in the key). ``uses`` is the library module whose code trains the entry (its
    ``__name__``): the key hashes its source and that of the modules it imports
    (:func:`source_digest`); without it, the whole library."""
    payload = {
        "chapter": chapter,
        "name": name,
        "config": _plain(trained_part(config)),
        "library": source_digest(*([uses] if uses else [])),
        "extra": _plain(extra),
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(
    chapter: str,
    name: str,
    config: Any,
    build: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
    *,
    uses: str | None = None,
    **extra: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
    """Load trained weights and their training history from the cache, or build and store them.

    ``build()`` trains and returns ``(state, history)``: a dict of tensors (a ``state_dict``, or
    several under prefixed keys) and a JSON-able history. The entry is keyed by
    :func:`cache_key`, so a different trained config, seed (pass it in ``extra``) or source
    of the training code (``uses``, the module that trains) never reuses stale weights.
    ``ICLBOOK_RETRAIN=1`` trains again and overwrites.

    Returns ``(state, history, hit)`` where ``hit`` tells whether the cache was used. Loading uses
    ``torch.load(..., weights_only=True)``. A cache folder that cannot be written only costs the
    saving, never the result.
    """
    key = cache_key(chapter, name, config, uses=uses, **extra)
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
