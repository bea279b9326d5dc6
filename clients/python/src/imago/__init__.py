"""Python client of the imago message broker.

- :class:`Producer`: ``send`` / ``send_async`` with tags, keys, properties and checksums.
- :class:`Consumer`: consumer groups (cluster or broadcast), long polling, tag filters,
  committed offsets, rebalances.
- :class:`Client` (alias :class:`Admin`): stats, version, offsets, get, commit, fetch, reset.

Errors are in :mod:`imago.errors` and re-exported here.
"""

from ._wire import Message, SendResult
from .client import Admin, Assignment, Client
from .consumer import Consumer, default_member_id
from .errors import (
    BadRequest,
    BrokerError,
    Conflict,
    CorruptRecord,
    Forbidden,
    ImagoConnectionError,
    ImagoError,
    ImagoTimeout,
    InsufficientStorage,
    InternalError,
    LineTooLong,
    Moved,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RecordCorrupt,
    RequestTimeout,
    Unavailable,
    Unimplemented,
)
from .producer import Producer, partition_for_key

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "Assignment",
    "BadRequest",
    "BrokerError",
    "Client",
    "Conflict",
    "Consumer",
    "CorruptRecord",
    "Forbidden",
    "ImagoConnectionError",
    "ImagoError",
    "ImagoTimeout",
    "InsufficientStorage",
    "InternalError",
    "LineTooLong",
    "Message",
    "Moved",
    "NotFound",
    "PayloadTooLarge",
    "Producer",
    "ProtocolError",
    "RecordCorrupt",
    "RequestTimeout",
    "SendResult",
    "Unavailable",
    "Unimplemented",
    "default_member_id",
    "partition_for_key",
]
