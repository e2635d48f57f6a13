"""JSON lines: cut across chunk boundaries, offsets exact, bad and overlong lines skipped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broadcaster.sources.lines import JsonLines, Line


def test_lines_split_across_chunks_with_exact_offsets() -> None:
    lines = JsonLines(max_line=100)
    assert lines.feed(b'{"a":') == []
    assert lines.feed(b" 1}\n[2") == [Line(1, 9, data={"a": 1})]
    assert lines.feed(b"]\n") == [Line(2, 13, data=[2])]
    assert lines.buffered == 0


def test_blank_lines_are_passed_over_but_counted() -> None:
    lines = JsonLines(max_line=100)
    assert lines.feed(b"\n  \n1\r\n") == [Line(3, 7, data=1)]


def test_bad_json_is_reported_not_raised() -> None:
    (line,) = JsonLines(max_line=100).feed(b"nope\n")
    assert (line.number, line.end, line.data) == (1, 5, None)
    assert line.error is not None
    assert "line 1 is not strict JSON" in line.error


def test_overlong_line_is_skipped_without_being_buffered() -> None:
    lines = JsonLines(max_line=8)
    (too_long,) = lines.feed(b'"0123456789')
    assert (too_long.error, too_long.end) == ("line 1 is longer than 8 bytes", 11)
    assert lines.buffered == 0
    assert lines.feed(b"abcdef") == []
    assert lines.buffered == 0
    assert lines.feed(b'"\n2\n') == [Line(2, 21, data=2)], "offsets count skipped bytes"


def test_finish_returns_a_last_line_without_newline() -> None:
    lines = JsonLines(max_line=100, offset=50, line_number=9)
    assert lines.feed(b"1\n2") == [Line(10, 52, data=1)]
    assert lines.finish() == [Line(11, 53, data=2)]
    assert lines.finish() == []


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=20), st.data())
def test_any_chunking_gives_the_same_lines(values: list[int], data: st.DataObject) -> None:
    """However the bytes are cut into chunks, the lines and their offsets are the same."""
    text = b"".join(b"%d\n" % v for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    lines = JsonLines(max_line=100)
    got: list[Line] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        got += lines.feed(text[start:end])
    assert [line.data for line in got] == values
    assert [line.end for line in got] == [
        len(b"".join(b"%d\n" % v for v in values[: i + 1])) for i in range(len(values))
    ]
