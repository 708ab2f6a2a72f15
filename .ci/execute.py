"""Execute the book's chapters in parallel into the build's execution cache, before the build.

    python .ci/execute.py --path-output _build/test            # every chapter of _toc.yml
    python .ci/execute.py --path-output _build/test --jobs 2 --threads 1 book/03_induction_cliff.md

``jupyter-book build`` executes the chapters one after another (myst-nb's ``cache`` mode), and the
chapters' small models are bound by per-operation cost, not by FLOPs: one intra-op thread trains
them about as fast as two, so on a 2-core machine one core idles through most of the build. This
driver fills the same jupyter-cache that the build reads (``<path-output>/_build/.jupyter_cache``),
running ``--jobs`` chapters at a time, each kernel with ``--threads`` intra-op threads
(``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``); the build then finds every chapter in
the cache and executes nothing again. It does exactly what myst-nb does for one notebook:

* the notebook is myst-nb's own reading of the ``.md`` (``read_myst_markdown_notebook``), so the
  cache's hash (code cells and kernelspec) is the one the build computes;
* it runs with jupyter-cache's ``single_nb_execution`` in the chapter's folder, with the timeout and
  ``allow_errors`` of ``_config.yml``, and is cached with its execution time, which the book's
  execution page shows;
* a failing cell fails this command (exit 1, the traceback printed) and nothing is cached for that
  chapter, so the strict build that follows executes it again and fails too.

Each executed notebook is also written, with the kernel's per-cell timestamps, to
``<path-output>/_build/executed/`` (``benchmarks/cell_times.py`` reads them: where the time goes).
The kernels run with ``ICLBOOK_HTML=1``: their outputs are for the HTML book, so a figure a reader
scrubs is made as self-contained HTML (:func:`iclbook.plots.scrubber`), not as a static figure.

The longest chapters start first (times from the committed seed run), so two workers finish close
together. Pages whose ``mystnb.execution_mode`` is ``force`` (the claims page, which reads the
records the chapters write) are left to the build, which runs them after the chapters.

``--beside CMD`` runs one more command (``make test``: the unit tests) in the first worker slot
the chapters leave free, once every chapter has started: without it, the last chapter runs alone
on one core while the other idles.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_pages() -> list[Path]:
    """The pages of ``_toc.yml`` that are notebooks (MyST text with a kernelspec), in toc order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    out = []
    for f in files:
        path = ROOT / f"{f}.md"
        if path.exists() and "kernelspec:" in path.read_text().split("\n---", 1)[0]:
            out.append(path)
    return out


def forced(path: Path) -> bool:
    """Whether the page asks to be executed at every build (``mystnb: execution_mode: force``)."""
    front = path.read_text().split("\n---", 1)[0]
    meta = yaml.safe_load(front.lstrip("-\n")) or {}
    return (meta.get("mystnb") or {}).get("execution_mode") == "force"


#: Where the seed table has no time for a chapter: a typical book time (seconds, in the build of
#: 2026-12-06 in benchmarks/README.md). Only the order matters (longest first, so that two workers
#: end close together); a wrong guess costs time, never a result.
TYPICAL_SECONDS = {"01": 305, "02": 229, "03": 353, "04": 123, "05": 100}


def expected_seconds(path: Path) -> float:
    """The page's median time in the committed seed run, else its typical time (0 if unknown)."""
    seeds = ROOT / "book" / "records" / "seeds-book.json"
    try:
        secs = sorted(json.loads(seeds.read_text())["chapters"][path.name[:2]]["seconds"].values())
    except (OSError, KeyError, ValueError):
        secs = []
    return secs[len(secs) // 2] if secs else float(TYPICAL_SECONDS.get(path.name[:2], 0))


def read(path: Path):
    """The notebook myst-nb builds from a MyST text page."""
    from myst_nb.core.read import read_myst_markdown_notebook  # noqa: PLC0415

    return read_myst_markdown_notebook(path.read_text(), add_source_map=True, path=path)


def execute_config() -> dict:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text()).get("execute", {})
    return {"timeout": cfg.get("timeout", 30), "allow_errors": bool(cfg.get("allow_errors", False))}


def run_one(path: str, threads: int) -> tuple[str, object, float, str | None]:
    """Execute one page in a fresh kernel (a worker process): ``(path, notebook, seconds, error)``."""
    from jupyter_cache.executors.utils import single_nb_execution  # noqa: PLC0415

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # the kernel is a child of this process and inherits them
    os.environ["ICLBOOK_HTML"] = "1"  # the outputs are for the HTML book (iclbook.runtime.html_build)
    page = Path(path)
    nb = read(page)
    conf = execute_config()
    result = single_nb_execution(
        nb,
        cwd=str(page.parent),
        allow_errors=conf["allow_errors"],
        timeout=conf["timeout"],
        meta_override=True,
        record_timing=True,  # per-cell times, for benchmarks/cell_times.py
    )
    return path, nb, result.time, (result.exc_string if result.err is not None else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help="MyST pages to execute (default: every notebook page of _toc.yml)")
    parser.add_argument("--path-output", required=True, help="the --path-output the build will use")
    parser.add_argument("--jobs", type=int, default=2, help="chapters executed at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per kernel (default 1)")
    parser.add_argument(
        "--beside",
        metavar="CMD",
        help="a shell command run in the first worker slot the chapters leave free (once the last "
        "chapter has started and a worker has nothing left to take), beside the chapters still "
        "running, with --threads threads as a chapter; its output is printed when it ends, and its "
        "failure fails this command",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be >= 1")

    from jupyter_cache import get_cache  # noqa: PLC0415
    from jupyter_cache.base import CacheBundleIn  # noqa: PLC0415

    pages = [Path(p).resolve() for p in args.pages] if args.pages else toc_pages()
    pages = sorted((p for p in pages if not forced(p)), key=expected_seconds, reverse=True)
    cache = get_cache(str((Path(args.path_output) / "_build" / ".jupyter_cache").resolve()))
    executed = (Path(args.path_output) / "_build" / "executed").resolve()
    todo = []
    for page in pages:
        try:
            cache.match_cache_notebook(read(page))
            print(f"{page.relative_to(ROOT)}: already in the cache", flush=True)
        except KeyError:
            todo.append(page)
    failed, start = [], time.perf_counter()
    print(f"executing {len(todo)} page(s), {args.jobs} at a time, {args.threads} thread(s) each", flush=True)
    beside = None

    def start_beside(unfinished: int) -> None:
        nonlocal beside
        if args.beside and beside is None and unfinished < args.jobs:  # a worker slot is free
            print(f"{unfinished} chapter(s) still running: starting beside them: {args.beside}", flush=True)
            log = tempfile.TemporaryFile(mode="w+")
            env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}  # no jobserver here
            env |= {var: str(args.threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            beside = (subprocess.Popen(args.beside, shell=True, stdout=log, stderr=subprocess.STDOUT, env=env), log)

    start_beside(len(todo))
    with ProcessPoolExecutor(max_workers=min(args.jobs, max(1, len(todo)))) as pool:
        futures = [pool.submit(run_one, str(p), args.threads) for p in todo]
        for done, fut in enumerate(as_completed(futures), 1):
            start_beside(len(todo) - done)
            path, nb, seconds, err = fut.result()
            name = Path(path).relative_to(ROOT)
            if err is not None:
                failed.append(str(name))
                print(f"{name}: FAILED after {seconds:.0f} s\n{err}", flush=True)
                continue
            executed.mkdir(parents=True, exist_ok=True)  # with per-cell times (the cache keeps outputs only)
            nbformat.write(copy.deepcopy(nb), executed / f"{Path(path).stem}.ipynb")
            for cell in nb.cells:  # the cache hashes cell metadata: store it as the build reads it
                cell.metadata.pop("execution", None)
            stage = cache.add_nb_to_project(path)
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, stage.uri, data={"execution_seconds": seconds}), check_validity=False, overwrite=True
            )
            try:  # what the build will look up: a miss here would run the chapter a second time
                cache.match_cache_notebook(read(Path(path)))
            except KeyError:
                failed.append(str(name))
                print(f"{name}: executed, but the build would not find it in the cache", flush=True)
                continue
            print(f"{name}: {seconds:.0f} s", flush=True)
    print(f"wall time {time.perf_counter() - start:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if beside is not None:
        proc, log = beside
        rc = proc.wait()
        log.seek(0)
        print(
            f"--- beside the chapters: {args.beside} (exit {rc}; done {time.perf_counter() - start:.0f} s after the start)"
        )
        print(log.read(), flush=True)
        if rc != 0:
            failed.append(args.beside)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
