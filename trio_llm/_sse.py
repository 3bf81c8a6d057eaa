"""Server-sent events: bytes off the wire in, whole events out.

A streamed answer (``"stream": true``) is a ``text/event-stream`` body: lines of ``field:
value``, an empty line ending each event (the WHATWG HTML "event stream" format)::

    event: content_block_delta
    data: {"type": "content_block_delta", ...}

    data: [DONE]

``SSEDecoder`` is pure and incremental: feed it the body's chunks as they arrive (cut
anywhere, even inside a UTF-8 character or between ``\\r`` and ``\\n``), get back the events
each chunk completed. At the end of the body an event with no empty line after it is dropped,
as the format says: a stream cut mid-event yields nothing of that event. What the events
*mean* is each API's business (the stream decoders next to each provider).

We parse the bytes ourselves rather than through ``httpx-sse``: it reads an
``httpx.Response`` line by line through httpx's text decoding, while our HTTP layer hands over
raw chunks from the transport; the format is small, and a pure parser is easy to test.
"""

from __future__ import annotations

import re
from typing import Final, final

import attrs

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


@attrs.frozen(kw_only=True, slots=True)
class ServerSentEvent:
    """One event of a stream.

    Attributes:
        event: the ``event:`` field (``message`` when the event names none).
        data: the ``data:`` lines, joined with newlines.
        id: the ``id:`` field, if any.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None


@final
class SSEDecoder:
    """Turns the chunks of an event-stream body into ``ServerSentEvent``s, incrementally."""

    __slots__ = ("_buffer", "_data", "_event", "_id")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that ``chunk`` completes (often none, sometimes several)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[ServerSentEvent] = []
        if b"\r" not in buffer:
            # What every server we know sends: lines ended by "\n" alone. One split, not a
            # search per line (a streamed answer is a chunk or two per token).
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()
            for line in lines:
                self._line(line, events)
            return events
        start = 0
        end = len(buffer)
        while True:
            match = _LINE_END.search(buffer, start)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == end:
                break  # may be the first half of "\r\n": wait for the next chunk
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def close(self) -> None:
        """The body ended: forget an unfinished event (the format drops it)."""
        self._buffer = b""
        self._reset()

    def _reset(self) -> None:
        self._event = ""
        self._data = []
        self._id = None

    def _line(self, raw: bytes, events: list[ServerSentEvent]) -> None:
        if not raw:
            if self._data:
                events.append(
                    ServerSentEvent(
                        event=self._event or "message", data="\n".join(self._data), id=self._id
                    )
                )
            self._reset()
            return
        if raw[:6] == b"data: ":
            self._data.append(raw[6:].decode("utf-8", "replace"))
            return
        if raw[:1] == b":":
            return  # a comment (servers send them to keep the connection alive)
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # `retry:` and unknown fields are ignored: we never reconnect a stream.
