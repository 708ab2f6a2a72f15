"""The shared figure helpers of lib/iclbook/plots.py: the scrubber (frames and a range slider in
self-contained HTML in the book, a static figure elsewhere). `.ci/offline_check.py` drives the
real slider of the built book in headless Chromium; these tests check what it is built from."""

from __future__ import annotations

import base64
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from iclbook import plots, runtime  # noqa: E402


def line_figure():
    fig, ax = plt.subplots(figsize=(3, 2), layout="none")
    (line,) = ax.plot([0, 1], [0, 0])
    ax.set_ylim(0, 3)

    def draw(k: int) -> None:
        line.set_ydata([k, k])

    return fig, draw


def test_the_html_build_flag_reads_the_environment(monkeypatch):
    monkeypatch.delenv("ICLBOOK_HTML", raising=False)
    assert runtime.html_build() is False
    monkeypatch.setenv("ICLBOOK_HTML", "1")
    assert runtime.html_build() is True


def test_the_scrubber_renders_every_frame_into_self_contained_html(monkeypatch):
    monkeypatch.setenv("ICLBOOK_HTML", "1")
    fig, draw = line_figure()
    labels = ["step 0", "step 1 <b>", "step 2"]
    out = plots.scrubber(fig, draw, labels, start=1, alt="a line")
    assert isinstance(out, plots.Scrubber) and len(out.frames) == 3
    assert len(set(out.frames)) == 3 and all(f.startswith(b"\x89PNG") for f in out.frames)
    html = out._repr_html_()
    assert 'type="range"' in html and 'max="2"' in html and 'value="1"' in html
    assert "http" not in html  # nothing fetched
    # the frame shown first is frame 1, and every frame is inline
    first = re.search(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(first) == out.frames[1]
    data = json.loads(re.search(r'class="iclbook-scrubber-data">(.*?)</script>', html, re.S).group(1))
    assert [base64.b64decode(f) for f in data["frames"]] == out.frames and data["labels"] == labels
    assert "<b>" not in html.split("iclbook-scrubber-data")[1].split("</script>")[0]  # the JSON cannot close its tag
    assert "&lt;b&gt;" in html  # the label shown first is escaped
    assert "frames" in repr(out) and len(repr(out)) < 200


def test_outside_the_book_the_scrubber_shows_one_static_frame(monkeypatch, capsys):
    monkeypatch.delenv("ICLBOOK_HTML", raising=False)
    fig, draw = line_figure()
    drawn = []
    assert plots.scrubber(fig, lambda k: drawn.append(k) or draw(k), ["a", "b", "c"], start=2) is None
    assert drawn == [2]
    assert "slider over all 3 frames" in capsys.readouterr().out


def test_the_scrubber_refuses_bad_input():
    fig, draw = line_figure()
    with pytest.raises(ValueError, match="at least one frame"):
        plots.scrubber(fig, draw, [], html_output=True)
    with pytest.raises(ValueError, match="start frame 5"):
        plots.scrubber(fig, draw, ["a"], start=5, html_output=True)
    with pytest.raises(ValueError, match="one label per frame"):
        plots.Scrubber([b"x"], ["a", "b"])
    plt.close("all")
