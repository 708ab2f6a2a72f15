"""Sphinx extension of the book: the claims page is read (and so executed) on every build.

The page gathers the chapters' ledger records, which change whenever a chapter re-executes; Sphinx
would otherwise skip re-reading the unchanged page in an incremental build and show old verdicts.
Sphinx reads documents in sorted order, so ``book/claims`` is read after ``book/0*`` chapters.
"""

PAGE = "book/claims"


def _always(app, env, added, changed, removed):
    return [PAGE] if PAGE in env.found_docs else []


def setup(app):
    app.connect("env-get-outdated", _always)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
