"""The dashboard benchmark's pure helpers: percentiles, the event-stream parser, and which message delivered
which generation."""

from __future__ import annotations

import pytest

from benchmarks.dashboard import SseMessage, SseParser, delivery_times, percentile


def test_percentiles_interpolate_between_the_closest_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile([7.0], 99) == 7.0


def test_a_percentile_of_nothing_or_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_messages_split_across_reads_come_out_whole_with_their_size() -> None:
    snapshot = b'id: 4\nevent: snapshot\ndata: {"generation":4}\n\n'
    delta = b'id: 7\r\nevent: delta\r\ndata: {"generation":7}\r\n\r\n'
    stream = snapshot + b": keepalive\n\n" + delta
    parser = SseParser()
    messages = [m for k in range(0, len(stream), 5) for m in parser.feed(stream[k : k + 5])]
    assert messages == [
        SseMessage("4", "snapshot", '{"generation":4}', len(snapshot)),
        SseMessage("7", "delta", '{"generation":7}', len(delta)),
    ]


def test_data_lines_are_joined_and_an_event_defaults_to_message() -> None:
    assert SseParser().feed(b"data:a\ndata: b\n\n") == [SseMessage(None, "message", "a\nb", 16)]


def test_an_event_is_delivered_by_the_first_message_at_or_past_its_generation() -> None:
    published = {5: 1.0, 6: 1.1, 7: 1.2, 9: 1.5}
    arrivals = [(4, 0.5), (6, 1.3), (7, 1.4), (9, 1.8)]
    assert delivery_times(published, arrivals) == pytest.approx({5: 0.3, 6: 0.2, 7: 0.2, 9: 0.3})


def test_a_generation_no_message_reached_is_left_out() -> None:
    assert delivery_times({3: 1.0, 4: 2.0}, [(3, 1.5)]) == {3: 0.5}


def test_an_event_id_names_its_generation() -> None:
    from benchmarks.dashboard import message_generation

    assert message_generation("3f9a2c1d.42") == 42 and message_generation("42") == 42
    assert message_generation(None) == -1 and message_generation("") == -1
