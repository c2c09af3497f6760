"""memberlist wire codec: messages <-> bytes exactly as go-msgpack 0.5.x writes them (docs/wire.md).

Sans-I/O.  ``encode``/``decode`` handle one message (type byte + body);
``WireCodec`` adds the outer layers of a UDP packet or TCP stream message
(compression, CRC, encryption, label) with a node's configuration.  This module is the
one import for all of it; the parts are one concept each:

* fields.py: ``DecodeError`` and the validated readers of an untrusted msgpack map;
* encoders.py / decoders.py: one message each way;
* layers.py: compound, compression, CRC and label, one layer at a time;
* wirecodec.py: ``WireCodec``, which stacks the layers in Go's order, with encryption (crypto.py).

Every decode entry point raises only ``DecodeError`` with a short ``reason``
(a counter key): peers are untrusted, and the node must drop bad input and
count it, never crash on it.

Validated once, at decode, so the state machines never hold what they could not send on
(issue 11: one alive whose name was not UTF-8 once made every push/pull reply
unencodable, pool-wide):

* text (node names, ``From``, ``Error``) must be UTF-8: the message is refused
  ("bad_utf8").  Go strings are byte strings, so a Go node may legally carry such a
  name; we do not admit that member (it cannot be served over gRPC either, whose strings
  are UTF-8), refuse gossip about it, skip its row in a push/pull (the rest merges), and
  still answer its probes (a probe's sender name is only a lookup hint, see
  ``fields.read_hint``);
* ``Vsn`` must be 6 bytes ("bad_vsn") and ``Meta`` at most 512 bytes ("meta_too_large"),
  as Go sends them: both are re-encoded in every push/pull we send;
* wrappers nest only as memberlist nests them (``WireCodec._handle``), and inflate to at
  most ``MAX_PACKET_INFLATE`` bytes per packet, ``MAX_INFLATE_RATIO`` x per stream.
"""

from __future__ import annotations

from .decoders import decode, decode_push_pull, decode_user_stream
from .encoders import encode, encode_user_stream
from .fields import MAX_PUSH_NODES, VSN_LEN, DecodeError
from .layers import (
    MAX_INFLATE_RATIO,
    MAX_PACKET_INFLATE,
    CompressionAlgo,
    label_header,
    make_compound,
    split_compound,
    strip_label,
)
from .wirecodec import WireCodec

__all__ = [
    "MAX_INFLATE_RATIO",
    "MAX_PACKET_INFLATE",
    "MAX_PUSH_NODES",
    "VSN_LEN",
    "CompressionAlgo",
    "DecodeError",
    "WireCodec",
    "decode",
    "decode_push_pull",
    "decode_user_stream",
    "encode",
    "encode_user_stream",
    "label_header",
    "make_compound",
    "split_compound",
    "strip_label",
]
