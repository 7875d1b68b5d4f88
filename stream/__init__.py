"""I/O adapters: wire records and codecs, dead letters, the embedded log, serving stores.

Importing this package never imports torch, kafka-python, faust or redis; their adapters
live in their own modules and are imported where used.
"""

from ._codec import (
    MAX_ID_CHARS,
    MAX_RECORD_BYTES,
    MAX_SOFT_LABEL_ITEMS,
    RawRecord,
    RecordLike,
    decode_event,
    decode_many,
    decode_records,
    decode_soft_labels,
    encode_event,
    encode_soft_labels,
)
from ._deadletter import DEFAULT_DLQ_TOPIC, DeadLetter
from ._event import EVENT_TYPES, RATING_POSITIVE_AT, SCHEMA_VERSION, Event, SoftLabels
from ._log import (
    EmbeddedConsumer,
    EmbeddedLog,
    EmbeddedProducer,
    Record,
    murmur2,
    partition_for_key,
)
from ._memory_store import MemoryStore
from ._redis_store import RedisStore, mask_url
from ._store import (
    Store,
    StoreBatch,
    UserView,
    item_table_view,
    offset_key,
    parse_offset_key,
    top_k_from_store,
    user_view,
)

__all__ = [
    "DEFAULT_DLQ_TOPIC",
    "EVENT_TYPES",
    "MAX_ID_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_SOFT_LABEL_ITEMS",
    "RATING_POSITIVE_AT",
    "SCHEMA_VERSION",
    "DeadLetter",
    "EmbeddedConsumer",
    "EmbeddedLog",
    "EmbeddedProducer",
    "Event",
    "MemoryStore",
    "RawRecord",
    "Record",
    "RecordLike",
    "RedisStore",
    "SoftLabels",
    "Store",
    "StoreBatch",
    "UserView",
    "decode_event",
    "decode_many",
    "decode_records",
    "decode_soft_labels",
    "encode_event",
    "encode_soft_labels",
    "item_table_view",
    "mask_url",
    "murmur2",
    "offset_key",
    "parse_offset_key",
    "partition_for_key",
    "top_k_from_store",
    "user_view",
]

from ._store import StaleItemBase

__all__ += ["StaleItemBase"]
