"""Packing: many embedding inputs into one request, a stage between the producer and the workers.

::

    producer ─► [item] ─► packer ─► [item, item, ...] ─► workers (one request per pack)

A pack holds items whose requests differ only in their ``input`` (same model, same
``dimensions``...), up to the provider's ``PackLimits`` (inputs per request, estimated tokens
per request). The packer takes what the producer has ready, without waiting for more: when the
source is slower than the workers, packs leave part-full rather than late. The channel to the
workers holds no packs of its own (capacity 0), so while every worker is busy the producer's
items pile up in its channel, and the next pack is a full one.

Anything that cannot be packed (an item that failed coercion, a chat request) goes on alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._providers import PackLimits

if TYPE_CHECKING:
    from ._models import Request
    from ._run import Item

__all__ = ["pack_items"]

#: Checkpoints the packer waits for the producer's next item before it sends a part-full pack:
#: the producer is handing items over one per checkpoint, or is waiting for its source.
_PATIENCE = 3


def _packable(item: Item) -> bool:
    return item.request is not None and item.request.is_embedding


def _same_pack(a: Request, b: Request) -> bool:
    """Whether two requests can share one request body: every field but ``input`` equal."""
    if len(a.params) != len(b.params):
        return False
    return all(k == "input" or b.params.get(k, _MISSING) == v for k, v in a.params.items())


_MISSING = object()


async def pack_items(
    items: trio.MemoryReceiveChannel[list[Item]],
    packs: trio.MemorySendChannel[list[Item]],
    limits: PackLimits,
    estimate: Callable[[Request], int],
) -> None:
    """Read single items from ``items`` and send them on to ``packs`` in packs; closes both."""
    async with items, packs:
        carry: Item | None = None
        ended = False
        while True:
            if carry is not None:
                first, carry = carry, None
            elif ended:
                return
            else:
                try:
                    (first,) = await items.receive()
                except trio.EndOfChannel:
                    return
            if not _packable(first):
                await packs.send([first])
                continue
            assert first.request is not None
            pack = [first]
            tokens = estimate(first.request)
            idle = 0
            while len(pack) < limits.max_inputs and not ended:
                try:
                    (item,) = items.receive_nowait()
                except trio.WouldBlock:
                    if idle >= _PATIENCE:
                        break
                    idle += 1
                    await trio.lowlevel.checkpoint()
                    continue
                except trio.EndOfChannel:
                    ended = True
                    break
                idle = 0
                if not _packable(item):
                    carry = item
                    break
                assert item.request is not None
                cost = estimate(item.request)
                if tokens + cost > limits.max_tokens or not _same_pack(first.request, item.request):
                    carry = item
                    break
                pack.append(item)
                tokens += cost
            await packs.send(pack)
