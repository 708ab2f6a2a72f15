"""Sphinx extension of the book: the claims page is read (and so executed) on every build.

The page gathers the chapters' ledger records, which change whenever a chapter re-executes; Sphinx
would otherwise skip re-reading the unchanged page in an incremental build and show old verdicts.
Sphinx reads documents in sorted order, so ``book/claims`` is read after ``book/0*`` chapters.
The page also gets no Colab launch button: it has no paired notebook and nothing to run in Colab.
"""

PAGE = "book/claims"


def _always(app, env, added, changed, removed):
    return [PAGE] if PAGE in env.found_docs else []


def _no_launch_button(app, pagename, templatename, context, doctree):
    """The claims page is a notebook only to the build (it reads the records the chapters wrote):
    it has no paired .ipynb, and in Colab there would be no records to read, so it gets no Colab
    launch button (sphinx-book-theme adds one to every page with a kernelspec, at priority 501)."""
    if pagename == PAGE and "header_buttons" in context:
        context["header_buttons"] = [b for b in context["header_buttons"] if b.get("label") != "launch-buttons"]


def setup(app):
    app.connect("env-get-outdated", _always)
    app.connect("html-page-context", _no_launch_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
