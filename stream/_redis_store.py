"""RedisStore: the :class:`~kdstream.stream.Store` of the distributed runtime, in Redis.

Keys, all under ``<namespace>:`` (the namespace allows no ``:``, so two never collide)::

    uvec               hash  user -> query vector, float32 little-endian bytes
    seen:<user>        set   items the user interacted with
    lastts             hash  user -> latest event time (kept at the max, by a Lua script)
    offsets            hash  "topic:partition" -> next offset applied (kept at the max)
    versions           hash  model versions, e.g. student, teacher
    pop                str   popularity, float32 blob aligned with the item index
    pop:ver            str   a random token, new with every write of pop (same MULTI/EXEC):
                             readers re-read pop only when it changed (absent: written
                             before versions existed, read whole every time)
    item:ids           list  item ids in index order (the id -> index map's inverse)
    item:idblob        str   the same ids, each followed by "\\n": one GET for readers
    item:index         hash  item id -> index
    item:vec           str   item table, row-major float32 blob (rows beyond its end read as 0)
    item:bias          str   item bias, float32 blob (missing tail reads as 0)
    item:meta          hash  d (dimension), version (bumped by every item change),
                             rewritten (the version of the last whole-table write),
                             epoch (a random token, new whenever the table is created from
                             nothing or rewritten whole: versions compare within an epoch),
                             rowver_floor (item:rowver lacks rows last changed at or below
                             it), source (served tables: the hub version they reflect)
    item:rowver        zset  row index -> the table version of its last change (delta push or
                             partial write), bounded (see rowver_floor)
    user:ids, user:index     the same id map for users
    delta:<token>      str   marks an applied item-delta push (idempotent retries), with a TTL

Design choices, and why:

- A micro-batch is one ``MULTI/EXEC`` (redis-py transactional pipeline) that also carries the
  offsets it covers, so a crash leaves all of a batch or nothing; a connection lost before
  ``EXEC`` makes Redis discard the queued commands. Batches that rewrite item-table fields
  ``WATCH`` ``item:meta`` and retry on conflict, so their shape checks see what they replace.
- Offsets and event times never go backwards: a small Lua script (run inside the transaction)
  writes a field only when the new value is larger.
- Id allocation is one Lua script (atomic on the server): an id already in the map keeps its
  index, a new one gets ``LLEN`` of the list (then is appended), so concurrent processors never
  hand out one index twice.
- Shared item updates from several processors are merged server-side by a Lua script that adds
  float32 delta rows into the ``item:vec`` blob (``GETRANGE``/``SETRANGE`` per row). The
  alternative, one hash field per component with ``HINCRBYFLOAT``, costs ``d`` commands per row
  and a ``HGETALL`` of ``n * d`` fields per pull; the blob keeps pulls a single ``GET``.
  A push carries a token stored with its write, so a client retry after a lost reply does not
  add the same deltas twice. A push may name the table epoch its rows belong to: the same
  script then writes nothing when the table is of another one (wiped and rebuilt since, its
  indices restarted), so deltas never land on the rows of other items.
- Readers cache the item table by ``item:meta`` version: ``item_table()`` costs one ``HGET``
  unless the table changed. A serving process can move that check, and the refresh after
  each item sync (a copy of the whole table), off its requests:
  :meth:`RedisStore.start_item_refresh` runs them in a daemon thread, and requests read its
  snapshot while it is at most ``max_age_s`` old (else the inline path).
- Readers cache popularity (the cold-start scores; 4 MB at a million items) by ``pop:ver``,
  with its :func:`~kdstream.stream._store.popularity_prefix` (the top items, computed once
  per version): a cold-start request costs one GET of the version (and the blob only when it
  changed), none while the item refresher runs, which refreshes it too. The version is a
  random token, not a counter: a counter would restart after a clear and let a reader take a
  new blob for the one it cached. A cached blob is read again after ``POP_CACHE_MAX_AGE_S``
  (30 s) whatever the token says, so a writer older than the token (a rolling upgrade) is
  seen within that bound.
- A processor's item sync costs the rows that changed, not the table: every delta push
  records its rows' new version in the ``item:rowver`` sorted set, and
  :meth:`RedisStore.pull_items_since` reads, in one Lua script (so of one version), the rows
  scored above the caller's version (``ZRANGEBYSCORE``, then a ``GETRANGE`` per row) and the
  ids past the caller's count (``LRANGE``). A whole-table write (``write_batch`` with vectors
  or bias) drops the set and marks ``rewritten``: a pull since an older version then answers
  with the whole table.
- Versions restart when the table is deleted (:meth:`RedisStore.clear`, here or by another
  client), so a version alone cannot tell a reader that the rows it missed are all in
  ``item:rowver``: a pull since ``v`` across a clear and a rebuild past ``v`` would merge
  two tables. Every table therefore carries an ``epoch`` token, set when it is created from
  nothing (``HSETNX`` by the first write) or rewritten whole; a pull since a version of
  another epoch answers with the whole table, and a reader's cache is keyed by
  ``(version, epoch)``.
- ``item:rowver`` costs about 100 bytes of Redis memory per entry, so it is bounded: a
  write that leaves more than ``max(1024, n_items / 8)`` entries drops the oldest down to
  half of that (``ZREMRANGEBYRANK``, in the same script) and raises ``rowver_floor`` to the
  highest version dropped. A puller at ``v >= rowver_floor`` only needs rows changed after
  ``v``, all still in the set; one below the floor gets the whole table.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from kdstream.errors import ConfigError, ModelError, ServiceError
from kdstream.types import FloatArray

from ._item_hub import HubReset
from ._store import (
    RankedPopularity,
    StaleItemBase,
    StoreBatch,
    UserView,
    appended_ids,
    check_item_update,
    offset_key,
    parse_offset_key,
    partial_rows,
    top_k_from_store,
    with_rows,
)

IdKind = Literal["user", "item"]
# a reader's cached item table: (version, ids, vectors, bias, id -> index, epoch)
_Table = tuple[int, list[str], FloatArray, FloatArray, dict[str, int], str]

_log = logging.getLogger(__name__)
# the refresher's longest wait after failed checks (it doubles from every_s up to this)
_REFRESH_BACKOFF_CAP_S = 5.0

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_F32 = np.dtype("<f4")
# Re-read popularity at least this often even when its version token is unchanged: a writer
# older than the token (a processor not yet upgraded in a rolling upgrade) rewrites the blob
# without renewing the token, and its writes would otherwise never reach a cached reader.
POP_CACHE_MAX_AGE_S = 30.0
_DELTA_TOKEN_TTL_S = 24 * 3600


def _same_values(a: FloatArray | None, b: FloatArray | None) -> bool:
    return a is b or (a is not None and b is not None and np.array_equal(a, b))


# KEYS[1] hash; ARGV field1 value1 field2 value2 ...: keep the numeric max per field.
_MAX_FIELDS_LUA = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(ARGV[i + 1]) > tonumber(cur) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

# KEYS: ids list, index hash[, meta hash, id blob]; ARGV: epoch token (a new table's), ids.
# Returns every id's index.
_ALLOCATE_LUA = """
local out = {}
local created = 0
for j = 2, #ARGV do
  local id = ARGV[j]
  local i = j - 1
  local idx = redis.call('HGET', KEYS[2], id)
  if idx then
    out[i] = tonumber(idx)
  else
    local n = redis.call('RPUSH', KEYS[1], id) - 1
    redis.call('HSET', KEYS[2], id, n)
    if #KEYS >= 4 then redis.call('APPEND', KEYS[4], id .. '\\n') end
    out[i] = n
    created = created + 1
  end
end
if created > 0 and #KEYS >= 3 then
  redis.call('HINCRBY', KEYS[3], 'version', 1)
  redis.call('HSETNX', KEYS[3], 'epoch', ARGV[1])
end
return out
"""

# Bounds item:rowver (the caller's `rowver`, `meta`; `n` items): past max(1024, n / 8) entries,
# drop the oldest ones down to half of that and raise item:meta rowver_floor to the highest
# score dropped. A puller at version v >= floor only needs rows scored above v, all still
# there; one below the floor gets the whole table. Amortised: a trim follows cap / 2 adds.
_TRIM_ROWVER_LUA = """
local function trim_rowver(rowver, meta, n)
  local cap = math.max(1024, math.floor(n / 8))
  local size = redis.call('ZCARD', rowver)
  if size <= cap then return end
  local k = size - math.floor(cap / 2)
  local last = redis.call('ZRANGE', rowver, k - 1, k - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', rowver, 0, k - 1)
  local floor = tonumber(last[2])
  local cur = tonumber(redis.call('HGET', meta, 'rowver_floor')) or 0
  if floor > cur then redis.call('HSET', meta, 'rowver_floor', floor) end
end
"""

# KEYS: item:vec, item:bias, item:meta, item:ids, delta token key, item:rowver
# ARGV: d, token ttl, rows (int32 LE blob), deltas (float32 LE blob, m*d), bias deltas ('' or m),
# epoch token (a new table's), '1' to write only rows whose vector and bias are all zero (a
# restore after a reset: rows another client restored first keep theirs) else '', the epoch
# the rows belong to ('' = any table)
# Returns the new table version (each row's score in item:rowver), -1 when this token was
# applied before (checked first: a retry after a lost reply is never reported rejected while
# its token stands), or -2, writing nothing and setting no token, when the table is of
# another epoch than the caller's (or does not exist).
_ADD_DELTAS_LUA = _TRIM_ROWVER_LUA + """
local d = tonumber(ARGV[1])
local rows = ARGV[3]
local deltas = ARGV[4]
local bias = ARGV[5]
local m = #rows / 4
if redis.call('EXISTS', KEYS[5]) == 1 then
  return -1
end
if ARGV[8] ~= '' and redis.call('HGET', KEYS[3], 'epoch') ~= ARGV[8] then
  return -2
end
local cur_d = redis.call('HGET', KEYS[3], 'd')
if cur_d and tonumber(cur_d) ~= d then
  return redis.error_reply('kdstream: deltas have dimension ' .. d .. ', the table ' .. cur_d)
end
local n = redis.call('LLEN', KEYS[4])
local idx = {}
for i = 1, m do
  local r = struct.unpack('<i4', rows, (i - 1) * 4 + 1)
  if r < 0 or r >= n then
    return redis.error_reply('kdstream: row ' .. r .. ' outside the ' .. n .. ' allocated items')
  end
  idx[i] = r
end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
local version = redis.call('HINCRBY', KEYS[3], 'version', 1)
local fmt = '<' .. string.rep('f', d)
local width = 4 * d
local zero = string.rep('\\0', width)
local only_empty = ARGV[7] == '1'
for i = 1, m do
  local off = idx[i] * width
  local cur = redis.call('GETRANGE', KEYS[1], off, off + width - 1)
  if #cur < width then cur = cur .. string.sub(zero, 1, width - #cur) end
  local boff = idx[i] * 4
  local cb = ''
  if only_empty or #bias > 0 then cb = redis.call('GETRANGE', KEYS[2], boff, boff + 3) end
  if not (only_empty and (cur ~= zero or (#cb == 4 and cb ~= '\\0\\0\\0\\0'))) then
    redis.call('ZADD', KEYS[6], version, idx[i])
    local a = {struct.unpack(fmt, cur)}
    local b = {struct.unpack(fmt, deltas, (i - 1) * width + 1)}
    local s = {}
    for j = 1, d do s[j] = a[j] + b[j] end
    redis.call('SETRANGE', KEYS[1], off, struct.pack(fmt, unpack(s)))
    if #bias > 0 then
      local x = 0
      if #cb == 4 then x = struct.unpack('<f', cb) end
      local db = struct.unpack('<f', bias, (i - 1) * 4 + 1)
      redis.call('SETRANGE', KEYS[2], boff, struct.pack('<f', x + db))
    end
  end
end
redis.call('HSETNX', KEYS[3], 'd', d)
redis.call('HSETNX', KEYS[3], 'epoch', ARGV[6])
trim_rowver(KEYS[6], KEYS[3], n)
return version
"""

# KEYS: item:meta, item:ids, item:rowver, item:vec, item:bias; ARGV: version, number of ids,
# the caller's epoch ('' = none). Returns {version, 1} when the caller must pull the whole
# table (another epoch: cleared or rewritten since; rewritten since; the caller's version below
# rowver_floor, its rows trimmed; the table older than the caller's version: emptied), else
# {version, 0, d ('' before any push), rows (int32 LE blob), their vectors (float32 LE, d
# each), their biases (float32 LE), the ids from the count on}.
_PULL_SINCE_LUA = """
local meta = redis.call('HMGET', KEYS[1], 'version', 'd', 'rewritten', 'epoch', 'rowver_floor')
local version = tonumber(meta[1]) or 0
local rewritten = tonumber(meta[3]) or 0
local floor = tonumber(meta[5]) or 0
local since = tonumber(ARGV[1])
local n_ids = tonumber(ARGV[2])
if (meta[4] or '') ~= ARGV[3] or rewritten > since or floor > since or version < since
    or n_ids > redis.call('LLEN', KEYS[2]) then
  return {version, 1}
end
local ids = redis.call('LRANGE', KEYS[2], n_ids, -1)
local rows = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. since, '+inf')
if #rows == 0 or not meta[2] then
  return {version, 0, meta[2] or '', '', '', '', ids}
end
local width = 4 * tonumber(meta[2])
local rb, vb, bb = {}, {}, {}
for i, r in ipairs(rows) do
  local row = tonumber(r)
  rb[i] = struct.pack('<i4', row)
  local v = redis.call('GETRANGE', KEYS[4], row * width, row * width + width - 1)
  if #v < width then v = v .. string.rep('\\0', width - #v) end
  vb[i] = v
  local b = redis.call('GETRANGE', KEYS[5], row * 4, row * 4 + 3)
  if #b < 4 then b = b .. string.rep('\\0', 4 - #b) end
  bb[i] = b
end
return {version, 0, meta[2], table.concat(rb), table.concat(vb), table.concat(bb), ids}
"""

# KEYS: item:meta, item:rowver; ARGV: a new epoch token. A whole-table write: bump the
# version, record it as the rewrite, start a new epoch, drop the per-row versions (a pull since
# an older version must take everything).
_REWRITTEN_LUA = """
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'rewritten', version, 'epoch', ARGV[1])
redis.call('DEL', KEYS[2])
return version
"""


# KEYS: item:vec, item:bias, item:meta, item:rowver, item:ids; ARGV: d, rows (int32 LE blob),
# vectors (float32 LE, d each), biases ('' = unchanged, else float32 LE), source version ('' =
# unknown), epoch token (a new table's). A partial item update of the serving table: SETRANGE
# each row, record its version in item:rowver (readers refresh from it; trimmed), bump the
# version once. Returns the new version.
_WRITE_ROWS_LUA = _TRIM_ROWVER_LUA + """
local d = tonumber(ARGV[1])
local rows = ARGV[2]
local vecs = ARGV[3]
local bias = ARGV[4]
local version = redis.call('HINCRBY', KEYS[3], 'version', 1)
local width = 4 * d
for i = 1, #rows / 4 do
  local r = struct.unpack('<i4', rows, (i - 1) * 4 + 1)
  redis.call('SETRANGE', KEYS[1], r * width, string.sub(vecs, (i - 1) * width + 1, i * width))
  if #bias > 0 then
    redis.call('SETRANGE', KEYS[2], r * 4, string.sub(bias, (i - 1) * 4 + 1, i * 4))
  end
  redis.call('ZADD', KEYS[4], version, r)
end
if #rows > 0 then redis.call('HSET', KEYS[3], 'd', d) end
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[3], 'source')
else
  redis.call('HSET', KEYS[3], 'source', ARGV[5])
end
redis.call('HSETNX', KEYS[3], 'epoch', ARGV[6])
if #rows > 0 then trim_rowver(KEYS[4], KEYS[3], redis.call('LLEN', KEYS[5])) end
return version
"""

# KEYS: one set per user; ARGV: count1, items..., count2, items...: SADD each group.
_ADD_SEEN_LUA = """
local pos = 1
for i = 1, #KEYS do
  local count = tonumber(ARGV[pos])
  redis.call('SADD', KEYS[i], unpack(ARGV, pos + 1, pos + count))
  pos = pos + count + 1
end
return 1
"""


def _split_ids(blob: bytes | None) -> list[str]:
    """Ids of an ``item:idblob`` (each followed by a newline)."""
    if not blob:
        return []
    return blob.decode().split("\n")[:-1]


def _check_ids(ids: Sequence[str], name: str) -> None:
    for i in ids:
        if "\n" in i or not i:
            raise ConfigError(f"{name}: ids must be non-empty and have no newline, got {i!r}")


def _partial(batch: StoreBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A partial item update's ``(rows, vectors, bias)``, checked as MemoryStore does."""
    rows, vecs, bias = partial_rows(batch, _vector)
    if len(rows) and int(rows.max()) >= 2**31:
        raise ConfigError(f"item_rows: expected indices below 2**31, got {int(rows.max())}")
    return rows, vecs, bias


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _check_url(url: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(f"store url: expected a string, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"store url: cannot parse {mask_url(url)!r}: {exc}") from exc
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"store url: expected redis://[:password@]host[:port][/db] or rediss://..., "
            f"got {mask_url(url)!r}"
        )
    if not parts.hostname:
        raise ConfigError(f"store url: no host in {mask_url(url)!r}")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"store url: database must be an integer, got {db!r}")
    if port == 0:
        raise ConfigError(f"store url: port must be in 1..65535, got {port}")


def _vector(array: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """A float32 little-endian copy, checked for shape and finiteness (as MemoryStore)."""
    out = np.asarray(array, dtype=_F32)
    if out.ndim != ndim:
        raise ConfigError(f"{name}: expected a {ndim}-D array, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ModelError(f"{name}: non-finite values; refusing to serve them")
    return np.ascontiguousarray(out)


def _floats(blob: bytes | None, count: int) -> FloatArray:
    """``count`` float32 values from ``blob``, zero-padded (or cut) to length; read-only."""
    raw = b"" if blob is None else blob
    have = len(raw) // 4
    if have >= count:
        out = np.frombuffer(raw, dtype=_F32, count=count)
    else:
        out = np.zeros(count, dtype=_F32)
        out[:have] = np.frombuffer(raw, dtype=_F32, count=have)
        out.setflags(write=False)
    return out


class RedisStore:
    """Serving state in Redis; several processes may share one namespace.

    Parameters
    ----------
    url
        ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS). The
        password never appears in ``repr`` or error messages.
    namespace
        Prefix of every key (letters, digits, ``_ . -``; at most 64 characters).
    client
        A ready ``redis.Redis`` (bytes responses) to use instead of connecting to ``url``;
        tests inject one to fail on purpose.
    timeout_s
        Socket connect and read timeout.
    retries
        Client retries (short exponential backoff) of a command after a connection error;
        then :class:`~kdstream.errors.ServiceError`.

    Examples
    --------
    >>> store = RedisStore("redis://:secret@127.0.0.1:6379/0", namespace="demo")
    >>> store
    RedisStore(url='redis://:***@127.0.0.1:6379/0', namespace='demo')
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        namespace: str = "kd",
        *,
        client: Any | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
    ) -> None:
        _check_url(url)
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
            raise ConfigError(
                f"namespace: expected 1-64 letters, digits, '_', '.' or '-', got {namespace!r}"
            )
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ConfigError(f"timeout_s: expected a number > 0, got {timeout_s!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries: expected an integer >= 0, got {retries!r}")
        self._url = url
        self._retries = retries
        self._masked = mask_url(url)
        self._ns = namespace
        if client is None:
            import redis  # lazy: importing kdstream.stream must not import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
                decode_responses=False,
            )
        self._client = client
        self._max_fields = client.register_script(_MAX_FIELDS_LUA)
        self._allocate = client.register_script(_ALLOCATE_LUA)
        self._add_deltas = client.register_script(_ADD_DELTAS_LUA)
        self._add_seen = client.register_script(_ADD_SEEN_LUA)
        self._pull_since = client.register_script(_PULL_SINCE_LUA)
        self._rewritten = client.register_script(_REWRITTEN_LUA)
        self._write_rows = client.register_script(_WRITE_ROWS_LUA)
        # (version, ids, vectors, bias, id -> index, epoch); replaced whole, so reads need no
        # lock
        self._cache: _Table | None = None
        self._cache_lock = threading.Lock()
        # the background refresher (start_item_refresh): (monotonic time of the version read
        # that confirmed it, table), replaced whole; None while none runs or before its first
        # check
        self._served: tuple[float, _Table] | None = None
        self._refresher: threading.Thread | None = None
        self._refresh_stop = threading.Event()
        self._refresh_max_age_s = 0.0
        self._refresh_every_s: float | None = None  # the period of the last start
        self._refresh_errors = 0
        # popularity by pop:ver token, replaced whole: (token, snapshot, monotonic time of its
        # read); and the refresher's (monotonic time of its check, snapshot), as _served
        self._pop_cache: tuple[bytes, RankedPopularity, float] | None = None
        self.pop_cache_max_age_s = POP_CACHE_MAX_AGE_S
        self._served_pop: tuple[float, RankedPopularity] | None = None

    # -- keys and plumbing ------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self._ns, *parts))

    def __repr__(self) -> str:
        return f"RedisStore(url={self._masked!r}, namespace={self._ns!r})"

    @property
    def namespace(self) -> str:
        """The key prefix."""
        return self._ns

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Map redis-py exceptions to :class:`ServiceError` (ours pass through)."""
        from redis import exceptions as rexc

        try:
            yield
        except rexc.ResponseError as exc:
            message = str(exc)
            if "kdstream:" in message:  # a Lua script's own argument check
                raise ConfigError(message[message.index("kdstream:") + 10 :]) from exc
            raise ServiceError(f"Redis at {self._masked}: {what} failed: {message}") from exc
        except rexc.AuthenticationError as exc:
            raise ServiceError(
                f"Redis at {self._masked}: authentication failed during {what} "
                f"(check the password in the store URL): {exc}"
            ) from exc
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            raise ServiceError(
                f"Redis at {self._masked} is unreachable ({what}): {exc}"
            ) from exc
        except rexc.RedisError as exc:
            raise ServiceError(f"Redis at {self._masked}: {what} failed: {exc}") from exc

    def ping(self) -> None:
        """Raise :class:`ServiceError` unless the server answers (and accepts the password)."""
        with self._errors("PING"):
            self._client.ping()

    def close(self) -> None:
        """Stop the item refresher, if any, and close the client's connections."""
        self.stop_item_refresh()
        with self._errors("close"):
            self._client.close()

    def clear(self) -> int:
        """Delete every key of this namespace; return how many were deleted."""
        deleted = 0
        with self._errors("clear"):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=f"{self._ns}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(self._client.unlink(*batch))
        self._cache = None
        self._served = None
        self._pop_cache = None
        self._served_pop = None
        return deleted

    # -- writes -----------------------------------------------------------------------------

    def write_batch(self, batch: StoreBatch) -> None:
        """Apply ``batch`` as one ``MULTI/EXEC`` transaction, offsets included.

        Everything is validated before the transaction starts, so a rejected batch changes
        nothing; a batch interrupted before ``EXEC`` (crash, lost connection) is discarded
        by Redis whole.
        """
        check_item_update(batch)
        users = {
            str(u): _vector(v, f"user_vectors[{u!r}]", 1) for u, v in batch.user_vectors.items()
        }
        partial = None if batch.item_rows is None else _partial(batch)
        vectors = None if batch.item_vectors is None else _vector(
            batch.item_vectors, "item_vectors", 2
        )
        bias = None if batch.item_bias is None else _vector(batch.item_bias, "item_bias", 1)
        popularity = None if batch.popularity is None else _vector(
            batch.popularity, "popularity", 1
        )
        ids = None if batch.item_ids is None else [str(i) for i in batch.item_ids]
        if ids is not None:
            if len(set(ids)) != len(ids):
                raise ConfigError("item_ids: expected unique ids")
            _check_ids(ids, "item_ids")
        offsets: list[str] = []
        for key, offset in batch.offsets.items():
            parse_offset_key(key)
            if isinstance(offset, bool) or not isinstance(offset, int | np.integer) or offset < 0:
                raise ConfigError(f"offsets[{key!r}]: expected an integer >= 0, got {offset!r}")
            offsets += [key, str(int(offset))]
        stamps: list[str] = []
        for user, ts in batch.last_event_ts.items():
            if not math.isfinite(ts):
                raise ConfigError(f"last_event_ts[{user!r}]: expected finite, got {ts!r}")
            stamps += [str(user), repr(float(ts))]
        versions = {}
        for name, version in batch.versions.items():
            if isinstance(version, bool) or not isinstance(version, int | np.integer):
                raise ConfigError(f"versions[{name!r}]: expected an integer, got {version!r}")
            versions[str(name)] = int(version)
        table_write = (
            ids is not None or vectors is not None or bias is not None or popularity is not None
            or partial is not None
        )
        from redis.exceptions import WatchError

        meta, id_list = self._k("item", "meta"), self._k("item", "ids")
        lost = 0
        with self._errors("write_batch"):
            for _ in range(20):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        if table_write:
                            # shape checks must see the table this batch replaces
                            pipe.watch(meta, id_list)
                        plan = self._plan_table(
                            pipe, batch, ids, vectors, bias, popularity, users, partial
                        )
                        pipe.multi()
                        self._queue_writes(
                            pipe, plan, users, batch.seen, stamps, offsets, versions
                        )
                        if batch.ledger:  # debug ledger: same MULTI/EXEC as the offsets
                            pipe.rpush(self._k("ledger"), *batch.ledger)
                        pipe.execute()
                        return
                    except WatchError as exc:
                        # redis-py reports a connection lost while watching as a WatchError;
                        # Redis discarded the transaction, so a retry is safe (and re-plans)
                        if str(exc).startswith("Watched variable changed"):
                            continue
                        lost += 1
                        if lost > self._retries:
                            raise ServiceError(
                                f"Redis at {self._masked} is unreachable (write_batch): {exc}"
                            ) from exc
            raise ServiceError(
                f"Redis at {self._masked}: write_batch: the item table kept changing "
                "under the batch (20 WATCH conflicts)"
            )

    def _plan_table(
        self,
        pipe: Any,
        batch: StoreBatch,
        ids: list[str] | None,
        vectors: np.ndarray | None,
        bias: np.ndarray | None,
        popularity: np.ndarray | None,
        users: dict[str, np.ndarray],
        partial: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    ) -> dict[str, Any]:
        """Check the batch against the stored table; return what the transaction writes."""
        plan: dict[str, Any] = {}
        if not (ids is not None or vectors is not None or bias is not None or popularity
                is not None or users or partial is not None):
            return plan
        d_raw, n_cur = self._shape(pipe)
        d_cur = None if d_raw is None else int(d_raw)
        if partial is not None and batch.source_since is not None:
            have_raw = pipe.hget(self._k("item", "meta"), "source")  # watched: a partial
            have = None if have_raw is None else int(have_raw)
            if have is None or have < batch.source_since:
                raise StaleItemBase(
                    f"item_rows: the update carries the rows changed after source version "
                    f"{batch.source_since}, the stored table is of source version {have}"
                )
            assert batch.source_version is not None  # check_item_update
            if have > batch.source_version:  # a later table is served: keep it
                self._check_users(users, d_cur)
                return {"skip": True}
        table_write = ids is not None or vectors is not None or bias is not None or (
            partial is not None
        )
        start = batch.item_ids_from
        if start is None and partial is not None:
            start = 0  # a partial update keeps the indices: the list may only grow
        new_ids: list[str] | None = None
        if ids is not None and start is not None:
            new_ids = self._appended_ids(pipe, ids, int(start), n_cur)
            n = n_cur + len(new_ids)
        else:
            n = n_cur if ids is None else len(ids)
        dim = d_cur if vectors is None else vectors.shape[1]
        if partial is not None:
            rows, rvecs, rbias = partial
            k = len(rows)
            if k and int(rows.max()) >= n:
                raise ConfigError(f"item_rows: row {int(rows.max())} outside the {n} items")
            dim = d_cur if d_cur is not None else (rvecs.shape[1] if k else None)
            if k and rvecs.shape[1] != dim:
                raise ConfigError(
                    f"item_row_vectors: expected dimension {dim}, got {rvecs.shape[1]}"
                )
            if dim is None and n:
                raise ConfigError(f"item_ids: {n} ids but no item_vectors were ever written")
            plan["rows"] = (rows, rvecs, rbias, dim or 0)
        elif table_write:
            if vectors is None:
                if n and d_cur is None:
                    raise ConfigError(f"item_ids: {n} ids but no item_vectors were ever written")
                if n != n_cur:
                    raise ConfigError(
                        f"item_vectors: expected {n} rows (one per item id), got {n_cur}"
                    )
            elif vectors.shape[0] != n:
                raise ConfigError(
                    f"item_vectors: expected {n} rows (one per item id), got {vectors.shape[0]}"
                )
            if bias is not None and len(bias) != n:
                raise ConfigError(f"item_bias: expected {n} values, got {len(bias)}")
            if bias is None and (ids is not None or vectors is not None):
                bias_n = int(pipe.strlen(self._k("item", "bias"))) // 4
                if bias_n != n:  # the table grew without a bias: zero prior (as MemoryStore)
                    bias = np.zeros(n, dtype=_F32)
            if ids is not None and new_ids is None:
                plan["ids"] = self._id_edit(pipe, ids, n_cur)
            plan["vectors"], plan["bias"] = vectors, bias
        if new_ids is not None:
            plan["ids"] = (False, n_cur, new_ids)
        if table_write:
            plan["source"] = batch.source_version
        self._check_users(users, dim)
        if popularity is not None:
            if len(popularity) != n:
                raise ConfigError(f"popularity: expected {n} values, got {len(popularity)}")
            plan["popularity"] = popularity
        return plan

    @staticmethod
    def _check_users(users: dict[str, np.ndarray], dim: int | None) -> None:
        for user, vec in users.items():
            if dim is not None and vec.shape[0] != dim:
                raise ConfigError(
                    f"user_vectors[{user!r}]: expected dimension {dim}, got {vec.shape[0]}"
                )

    def _appended_ids(self, pipe: Any, given: list[str], start: int, n_cur: int) -> list[str]:
        """:func:`~kdstream.stream._store.appended_ids` against the stored list (under WATCH)."""
        k = self._k

        def stored(i: int, j: int) -> list[str]:
            return [x.decode() for x in pipe.lrange(k("item", "ids"), i, j - 1)]

        def known(new: list[str]) -> bool:
            return any(f is not None for f in pipe.hmget(k("item", "index"), new))

        return appended_ids(given, start, n_cur, stored, known)

    def _shape(self, pipe: Any) -> tuple[bytes | None, int]:
        """``(d, number of item ids)``, read in immediate mode (under WATCH when watching)."""
        if pipe.watching:
            return pipe.hget(self._k("item", "meta"), "d"), int(pipe.llen(self._k("item", "ids")))
        with self._client.pipeline(transaction=False) as read:
            read.hget(self._k("item", "meta"), "d")
            read.llen(self._k("item", "ids"))
            d, n = read.execute()
        return d, int(n)

    def _id_edit(self, pipe: Any, ids: list[str], n_cur: int) -> tuple[bool, int, list[str]]:
        """``(rewrite, first new index, ids to add)``; appends when the stored ids prefix ``ids``.

        Appending keeps indices that other processes allocated; a rewrite replaces the map.
        """
        if n_cur == 0:
            return False, 0, ids
        if n_cur <= len(ids):
            cache = self._cache
            current, epoch = pipe.hmget(self._k("item", "meta"), "version", "epoch")
            if (cache is not None and current is not None and cache[0] == int(current)
                    and cache[5] == ("" if epoch is None else epoch.decode())):
                stored = cache[1]
            else:
                stored = _split_ids(pipe.get(self._k("item", "idblob")))
            if stored == ids[:n_cur]:
                return False, n_cur, ids[n_cur:]
        return True, 0, ids

    def _queue_writes(
        self,
        pipe: Any,
        plan: dict[str, Any],
        users: dict[str, np.ndarray],
        seen: dict[str, list[str]],
        stamps: list[str],
        offsets: list[str],
        versions: dict[str, int],
    ) -> None:
        k = self._k
        item_changed = rewritten = False
        epoch = uuid.uuid4().hex  # the table's, should this write create or rewrite it
        if plan.get("skip"):
            plan = {}
        if "ids" in plan:
            rewrite, start, new = plan["ids"]
            if rewrite:
                pipe.delete(k("item", "ids"), k("item", "index"), k("item", "idblob"))
                item_changed = rewritten = True
            if new:
                pipe.rpush(k("item", "ids"), *new)
                pipe.append(k("item", "idblob"), "".join(f"{i}\n" for i in new))
                pipe.hset(k("item", "index"), mapping={i: start + j for j, i in enumerate(new)})
                item_changed = True
        if plan.get("vectors") is not None:
            vec = plan["vectors"]
            pipe.set(k("item", "vec"), vec.tobytes())
            pipe.hset(k("item", "meta"), "d", vec.shape[1])
            item_changed = rewritten = True
        if plan.get("bias") is not None:
            pipe.set(k("item", "bias"), plan["bias"].tobytes())
            item_changed = rewritten = True
        source = plan.get("source")
        if "rows" in plan:  # bumps the version once, records the source
            rows, rvecs, rbias, d = plan["rows"]
            self._write_rows(
                keys=[
                    k("item", "vec"),
                    k("item", "bias"),
                    k("item", "meta"),
                    k("item", "rowver"),
                    k("item", "ids"),
                ],
                args=[
                    d,
                    rows.astype("<i4").tobytes(),
                    rvecs.tobytes(),
                    b"" if rbias is None else rbias.tobytes(),
                    "" if source is None else int(source),
                    epoch,
                ],
                client=pipe,
            )
        elif rewritten:
            self._rewritten(keys=[k("item", "meta"), k("item", "rowver")], args=[epoch],
                            client=pipe)
        elif item_changed:
            pipe.hincrby(k("item", "meta"), "version", 1)
            pipe.hsetnx(k("item", "meta"), "epoch", epoch)
        if "rows" not in plan and (rewritten or item_changed):
            if source is None:
                pipe.hdel(k("item", "meta"), "source")
            else:
                pipe.hset(k("item", "meta"), "source", int(source))
        if plan.get("popularity") is not None:
            pipe.set(k("pop"), plan["popularity"].tobytes())
            pipe.set(k("pop", "ver"), uuid.uuid4().hex)  # readers' caches go stale
        if users:
            pipe.hset(k("uvec"), mapping={u: v.tobytes() for u, v in users.items()})
        seen_keys, seen_args = [], []
        for user, items in seen.items():
            if items:
                seen_keys.append(k("seen", str(user)))
                seen_args += [len(items), *(str(i) for i in items)]
        if seen_keys:
            # one command instead of one SADD per user: client-side packing and reply
            # parsing dominate a batch's cost
            self._add_seen(keys=seen_keys, args=seen_args, client=pipe)
        if stamps:
            self._max_fields(keys=[k("lastts")], args=stamps, client=pipe)
        if offsets:
            self._max_fields(keys=[k("offsets")], args=offsets, client=pipe)
        if versions:
            pipe.hset(k("versions"), mapping=versions)

    # -- id maps ----------------------------------------------------------------------------

    def _id_keys(self, kind: str) -> list[str]:
        if kind == "item":
            return [
                self._k("item", "ids"),
                self._k("item", "index"),
                self._k("item", "meta"),
                self._k("item", "idblob"),
            ]
        if kind == "user":
            return [self._k("user", "ids"), self._k("user", "index")]
        raise ConfigError(f"kind: expected 'user' or 'item', got {kind!r}")

    def allocate_ids(self, kind: IdKind, ids: Sequence[str]) -> list[int]:
        """The index of each id, allocating the next free indices to new ones, atomically.

        Ids already mapped keep their index; concurrent callers (threads or processes) never
        get one index for two ids, nor two indices for one id.
        """
        keys = self._id_keys(kind)
        args = [str(i) for i in ids]
        if not args:
            return []
        _check_ids(args, "ids")
        epoch = uuid.uuid4().hex if kind == "item" else ""
        with self._errors(f"allocate_ids({kind})"):
            return [int(i) for i in self._allocate(keys=keys, args=[epoch, *args])]

    def index_of(self, kind: IdKind, ids: Sequence[str]) -> list[int]:
        """The index of each id, ``-1`` for ids never allocated."""
        keys = self._id_keys(kind)
        if not ids:
            return []
        with self._errors(f"index_of({kind})"):
            found = self._client.hmget(keys[1], [str(i) for i in ids])
        return [-1 if f is None else int(f) for f in found]

    def id_of(self, kind: IdKind, index: int) -> str | None:
        """The id at ``index``, or None beyond the allocated ones."""
        keys = self._id_keys(kind)
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
            raise ConfigError(f"index: expected an integer >= 0, got {index!r}")
        with self._errors(f"id_of({kind})"):
            found = self._client.lindex(keys[0], int(index))
        return None if found is None else found.decode()

    # -- shared item table (several processors) ---------------------------------------------

    def push_item_deltas(
        self,
        rows: np.ndarray,
        deltas: np.ndarray,
        bias_deltas: np.ndarray | None = None,
        *,
        token: str | None = None,
        only_empty: bool = False,
        epoch: str = "",
    ) -> int:
        """Add float32 ``deltas`` (m, d) to item rows ``rows`` (m,) server-side; atomic.

        Rows must be allocated (:meth:`allocate_ids`); rows past the stored table start at
        zero. Repeated rows add up. ``token`` makes the push idempotent: a push whose token was
        applied before (within a day) is skipped and returns -1; by default a fresh token
        guards against the client's own retries. ``only_empty``: leave the rows whose vector
        or bias is not all zero as they are (a processor restoring its rows after the table
        was wiped: another one may have restored them first). ``epoch``: the table epoch
        (:meth:`item_table_state`) the rows belong to; when not ``""`` and the table is of
        another one (wiped, rebuilt or rewritten since) or gone, the push writes nothing and
        raises :class:`~kdstream.stream._item_hub.HubReset` (checked in the same script as
        the write: atomic; a push of no rows is not checked). Returns the table version
        after the push.
        """
        if not isinstance(epoch, str):
            raise ConfigError(f"epoch: expected a string, got {epoch!r}")
        rows_arr = np.asarray(rows)
        if rows_arr.ndim != 1 or (rows_arr.size and rows_arr.dtype.kind not in "iu"):
            raise ConfigError(f"rows: expected a 1-D integer array, got {rows_arr.dtype}"
                              f" shape {rows_arr.shape}")
        delta = _vector(deltas, "deltas", 2)
        if delta.shape[0] != rows_arr.shape[0]:
            raise ConfigError(
                f"deltas: expected {rows_arr.shape[0]} rows (one per row index), got "
                f"{delta.shape[0]}"
            )
        if delta.shape[1] == 0:
            raise ConfigError("deltas: expected dimension >= 1, got 0")
        if rows_arr.size and (rows_arr.min() < 0 or rows_arr.max() >= 2**31):
            raise ConfigError(f"rows: expected indices in 0..2**31-1, got {rows_arr.min()}..")
        bias_blob = b""
        if bias_deltas is not None:
            b = _vector(bias_deltas, "bias_deltas", 1)
            if b.shape[0] != rows_arr.shape[0]:
                raise ConfigError(
                    f"bias_deltas: expected {rows_arr.shape[0]} values, got {b.shape[0]}"
                )
            bias_blob = b.tobytes()
        if rows_arr.size == 0:
            return self.item_version()
        tok = token if token is not None else uuid.uuid4().hex
        keys = [
            self._k("item", "vec"),
            self._k("item", "bias"),
            self._k("item", "meta"),
            self._k("item", "ids"),
            self._k("delta", tok),
            self._k("item", "rowver"),
        ]
        args = [
            delta.shape[1],
            _DELTA_TOKEN_TTL_S,
            rows_arr.astype("<i4").tobytes(),
            delta.tobytes(),
            bias_blob,
            uuid.uuid4().hex,
            "1" if only_empty else "",
            epoch,
        ]
        with self._errors("push_item_deltas"):
            version = int(self._add_deltas(keys=keys, args=args))
        if version == -2:
            raise HubReset(f"Redis at {self._masked}: item table is not of epoch {epoch!r} "
                           "(wiped, rebuilt or rewritten since): the push wrote nothing")
        return version

    def item_table_state(self) -> tuple[str, int]:
        """``(epoch, number of item ids)`` of the item table, of one moment (``("", 0)``
        when it does not exist, e.g. after :meth:`clear`)."""
        with self._errors("item_table_state"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hget(self._k("item", "meta"), "epoch")
            pipe.llen(self._k("item", "ids"))
            epoch, n_ids = pipe.execute()
        return ("" if epoch is None else epoch.decode()), int(n_ids)

    def item_version(self) -> int:
        """The item table's version (0 before any item write)."""
        with self._errors("item_version"):
            raw = self._client.hget(self._k("item", "meta"), "version")
        return 0 if raw is None else int(raw)

    def pull_items(self) -> tuple[list[str], FloatArray, FloatArray, int]:
        """``(ids, vectors (n, d), bias (n,), version)`` of the shared item table."""
        cached = self._table()
        return list(cached[1]), cached[2], cached[3], cached[0]

    def _since_keys(self) -> list[str]:
        """The keys of the pull-since script (meta, ids, rowver, vec, bias)."""
        return [self._k("item", name) for name in ("meta", "ids", "rowver", "vec", "bias")]

    def pull_items_since(
        self, version: int, n_ids: int, epoch: str = ""
    ) -> tuple[int, list[str], np.ndarray, FloatArray, FloatArray, int, str]:
        """What changed in the shared item table after ``version``, of one moment.

        Returns ``(start, ids, rows, vectors (k, d), bias (k,), version now, epoch now)``: the
        ids from index ``start`` on (``start = n_ids``) and the rows whose deltas were pushed
        after ``version`` (sorted). ``epoch`` is the one the caller's ``version`` belongs to
        (a previous answer's; ``""``: none). When the table is of another epoch (cleared,
        rebuilt or rewritten whole since), was rewritten since, or ``version`` is below
        ``rowver_floor`` (its changed rows no longer tracked), it is all of it: ``start = 0``
        and every row.
        """
        if isinstance(version, bool) or not isinstance(version, int | np.integer):
            raise ConfigError(f"version: expected an integer, got {version!r}")
        if isinstance(n_ids, bool) or not isinstance(n_ids, int | np.integer) or n_ids < 0:
            raise ConfigError(f"n_ids: expected an integer >= 0, got {n_ids!r}")
        if not isinstance(epoch, str):
            raise ConfigError(f"epoch: expected a string, got {epoch!r}")
        changes = self._changes_since(int(version), int(n_ids), epoch, "pull_items_since")
        if changes is None:
            table = self._table()
            ids = list(table[1])
            return 0, ids, np.arange(len(ids)), table[2], table[3], table[0], table[5]
        now, rows, vectors, bias, ids = changes
        order = np.argsort(rows, kind="stable")
        return int(n_ids), ids, rows[order], vectors[order], bias[order], now, epoch

    def _changes_since(
        self, version: int, n_ids: int, epoch: str, what: str
    ) -> tuple[int, np.ndarray, FloatArray, FloatArray, list[str]] | None:
        """The pull-since script's answer, decoded: ``(version now, rows, their vectors,
        their biases, the ids from n_ids on)``; None when only the whole table can tell."""
        with self._errors(what):
            reply = self._pull_since(keys=self._since_keys(), args=[version, n_ids, epoch])
        if int(reply[1]):
            return None
        d = int(reply[2]) if reply[2] else 0
        rows = np.frombuffer(reply[3], dtype="<i4").astype(np.int64)
        vectors = np.frombuffer(reply[4], dtype=_F32).reshape(len(rows), d)
        bias = np.frombuffer(reply[5], dtype=_F32)
        return int(reply[0]), rows, vectors, bias, [i.decode() for i in reply[6]]

    # -- reads ------------------------------------------------------------------------------

    def _table(self) -> _Table:
        """The item table, re-read only when its version or epoch changed."""
        meta = self._k("item", "meta")
        with self._errors("item_version"):
            raw_now, raw_epoch = self._client.hmget(meta, "version", "epoch")
        version = 0 if raw_now is None else int(raw_now)
        epoch = "" if raw_epoch is None else raw_epoch.decode()
        cached = self._cache
        if cached is not None and cached[0] == version and cached[5] == epoch:
            return cached
        if (cached is not None and cached[5] == epoch and version > cached[0]
                and cached[2].shape[1]):
            fresh = self._refresh(cached)
            if fresh is not None:
                return fresh
        k = self._k
        with self._errors("item_table"), self._client.pipeline(transaction=True) as pipe:
            # one MULTI/EXEC: ids, vectors, bias, version and epoch of the same moment
            pipe.hmget(meta, "version", "d", "epoch")
            pipe.get(k("item", "idblob"))
            pipe.get(k("item", "vec"))
            pipe.get(k("item", "bias"))
            (raw_version, raw_d, raw_epoch), raw_ids, vec_blob, bias_blob = pipe.execute()
        epoch = "" if raw_epoch is None else raw_epoch.decode()
        ids = _split_ids(raw_ids)
        n = len(ids)
        if raw_d is None:
            if n:
                d = 0
            else:
                empty = np.empty((0, 0), dtype=_F32)
                table: _Table = (
                    int(raw_version or 0), [], empty, np.empty(0, dtype=_F32), {}, epoch
                )
                self._cache = table
                return table
        else:
            d = int(raw_d)
        vectors = _floats(vec_blob, n * d).reshape(n, d)
        bias = _floats(bias_blob, n)
        table = (
            0 if raw_version is None else int(raw_version),
            ids,
            vectors,
            bias,
            {item: i for i, item in enumerate(ids)},
            epoch,
        )
        with self._cache_lock:
            # a whole read of another epoch replaces any cache; of this one, an older one
            if self._cache is None or self._cache[5] != epoch or self._cache[0] <= table[0]:
                self._cache = table
        return table

    def _refresh(self, cached: _Table) -> _Table | None:
        """The cached table brought to the current version by the rows changed since (one
        Lua script: rows, new ids and version of one moment); None when only a whole read
        can tell (another epoch, rewritten, rows trimmed from ``item:rowver``, emptied, or
        the dimension changed).

        The cached arrays are copied, not written in place: a reader may still hold them.
        """
        old_version, old_ids, old_vec, old_bias, index, epoch = cached
        changes = self._changes_since(old_version, len(old_ids), epoch, "item_table")
        if changes is None:
            return None
        now, rows, row_vecs, row_bias, new_ids = changes
        d = row_vecs.shape[1]
        if d != old_vec.shape[1]:
            return None
        n_old = len(old_ids)
        n = n_old + len(new_ids)
        if len(rows) and int(rows.max()) >= n:
            return None
        if now == old_version:
            return cached
        vectors, bias = with_rows(old_vec, old_bias, n, d, rows, row_vecs, row_bias)
        # the id map only grows: older snapshots ignore indices past their own n
        index.update((item, n_old + j) for j, item in enumerate(new_ids))
        table = (now, old_ids + new_ids if new_ids else old_ids, vectors, bias, index, epoch)
        with self._cache_lock:
            if self._cache is None or self._cache[5] != epoch or self._cache[0] <= now:
                self._cache = table
        return table

    def item_table(self) -> tuple[list[str], FloatArray, FloatArray]:
        """``(ids, vectors, bias)``; read-only arrays, cached until the table changes (then
        refreshed by the rows changed since the cached version)."""
        ids, vectors, bias = self.item_table_shared()
        return list(ids), vectors, bias

    def item_table_shared(self) -> tuple[list[str], FloatArray, FloatArray]:
        """:meth:`item_table` without the copy of the id list: the cached list itself, never
        changed (a refresh builds a new one). For readers that do not change it.

        While the item refresher runs (:meth:`start_item_refresh`) and its snapshot is at
        most ``max_age_s`` old, that snapshot, with no Redis call."""
        served = self._served
        if served is not None and time.monotonic() - served[0] <= self._refresh_max_age_s:
            cached = served[1]
        else:
            cached = self._table()
        return cached[1], cached[2], cached[3]

    # -- the background item refresher ------------------------------------------------------

    def start_item_refresh(self, every_s: float = 0.1, max_age_s: float | None = None) -> None:
        """Keep the cached item table current in a daemon thread, off the request path.

        Every ``every_s`` the thread does what a request did inline: read the table's
        version and, when it changed, pull the changed rows and build the new table; and
        the same for popularity (computing its cold-start prefix). While its last successful
        check is at most ``max_age_s`` old (default ``10 * every_s``),
        :meth:`item_table_shared`, :meth:`item_table`, :meth:`popularity` and
        :meth:`popularity_ranked` hand out its snapshots without a Redis call; past that (a
        refresher stuck or failing, Redis away) they take the inline path again, so a dead
        refresher never serves an arbitrarily stale table. A failed check is logged and
        retried after a backoff (doubling, at most 5 s); the thread keeps going until
        :meth:`stop_item_refresh` or :meth:`close`.
        """
        for name, value in (("every_s", every_s), ("max_age_s", max_age_s)):
            if value is None and name == "max_age_s":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: expected a number > 0, got {value!r}")
        if self._refresher is not None:
            raise ConfigError(f"{self!r}: the item refresher is already running")
        self._refresh_max_age_s = float(10 * every_s if max_age_s is None else max_age_s)
        self._refresh_every_s = float(every_s)
        self._refresh_errors = 0
        self._refresh_stop = threading.Event()
        self._refresher = threading.Thread(
            target=self._refresh_loop, args=(self._refresh_stop, float(every_s)),
            name=f"kdstream-item-refresh-{self._ns}", daemon=True,
        )
        self._refresher.start()

    def stop_item_refresh(self, timeout_s: float = 30.0) -> None:
        """Stop the item refresher (no-op when none runs); requests go back to the inline
        path. Waits up to ``timeout_s`` for a check in flight."""
        thread = self._refresher
        if thread is None:
            return
        self._refresh_stop.set()
        with self._cache_lock:
            self._served = None
            self._served_pop = None
        thread.join(timeout_s)
        if thread.is_alive():  # a check blocked on Redis: a daemon, it ends with the process
            _log.warning("%r: the item refresher did not stop within %.1fs", self, timeout_s)
        self._refresher = None

    def item_refresh_status(self) -> dict[str, Any]:
        """``running``, ``age_s`` (of the snapshot requests may be handed; None before the
        first check), ``max_age_s``, ``every_s`` (the period it was started with; None if never
        started) and ``errors`` (failed checks since the start)."""
        served = self._served
        return {
            "running": self._refresher is not None and self._refresher.is_alive(),
            "age_s": None if served is None else time.monotonic() - served[0],
            "max_age_s": self._refresh_max_age_s,
            "every_s": self._refresh_every_s,
            "errors": self._refresh_errors,
        }

    def _refresh_loop(self, stop: threading.Event, every_s: float) -> None:
        failures = 0
        delay = 0.0  # the first check at once
        while not stop.wait(delay):
            checked_at = time.monotonic()
            try:
                table = self._table()
                pop = self._popularity_now(versioned_only=True)
                if pop is not None:
                    pop.prefix()  # off the request path
            except Exception as exc:  # the thread must outlive any failure
                failures += 1
                self._refresh_errors += 1
                delay = min(every_s * 2.0**failures, max(every_s, _REFRESH_BACKOFF_CAP_S))
                _log.warning(
                    "%r: item refresh failed (%d in a row), next try in %.2fs: %s",
                    self, failures, delay, exc, exc_info=not isinstance(exc, ServiceError),
                )
                continue
            with self._cache_lock:  # after a stop (which clears it), never put one back
                if stop.is_set():
                    break
                self._served = (checked_at, table)
                # unversioned popularity (an older writer's): requests read it, as before
                self._served_pop = None if pop is None else (checked_at, pop)
            if failures:
                _log.warning("%r: item refresh recovered after %d failures", self, failures)
            failures, delay = 0, every_s

    def item_indices(self, items: Sequence[str]) -> np.ndarray:
        """Index of each item id in the cached table, ``-1`` for unknown ones."""
        cached = self._cache if self._cache is not None else self._table()
        get = cached[4].get
        return np.fromiter((get(i, -1) for i in items), dtype=np.int64, count=len(items))

    def user_vector(self, user: str) -> FloatArray | None:
        """The user's query vector (read-only float32), or None."""
        with self._errors("user_vector"):
            raw = self._client.hget(self._k("uvec"), str(user))
        return None if raw is None else np.frombuffer(raw, dtype=_F32)

    def seen(self, user: str) -> set[str]:
        """The user's seen items."""
        with self._errors("seen"):
            raw = self._client.smembers(self._k("seen", str(user)))
        return {b.decode() for b in raw}

    def last_event_ts(self, user: str) -> float | None:
        """Time of the user's latest event, or None."""
        with self._errors("last_event_ts"):
            raw = self._client.hget(self._k("lastts"), str(user))
        return None if raw is None else float(raw)

    def user_view(self, user: str) -> UserView:
        """:func:`~kdstream.stream._store.user_view`: the user's vector, seen items and last
        event time and the versions in one round trip (a pipeline, no transaction: each
        read is of its own moment, as the four separate reads were)."""
        user = str(user)
        with self._errors("user_view"), self._client.pipeline(transaction=False) as pipe:
            pipe.hget(self._k("uvec"), user)
            pipe.smembers(self._k("seen", user))
            pipe.hget(self._k("lastts"), user)
            pipe.hgetall(self._k("versions"))
            raw_vec, raw_seen, raw_ts, raw_versions = pipe.execute()
        return UserView(
            None if raw_vec is None else np.frombuffer(raw_vec, dtype=_F32),
            {b.decode() for b in raw_seen},
            None if raw_ts is None else float(raw_ts),
            {k.decode(): int(v) for k, v in raw_versions.items()},
        )

    def popularity(self) -> FloatArray | None:
        """Popularity aligned with the item index (read-only, never changed), or None.

        Cached by its version (``pop:ver``): one small GET unless it changed; none
        while the item refresher's snapshot is at most ``max_age_s`` old."""
        return self._popularity_served().values

    def popularity_ranked(self) -> tuple[FloatArray | None, np.ndarray | None]:
        """``(popularity, its popularity_prefix)`` for cold-start top-k, of one snapshot; the
        prefix is computed once per version, and None for popularity written without a
        version (by an older kdstream): read per request, its prefix would cost what it
        saves."""
        pop = self._popularity_served()
        return pop.values, pop.prefix()

    def _popularity_served(self) -> RankedPopularity:
        """The refresher's snapshot while fresh enough, else :meth:`_popularity_now`."""
        served = self._served_pop
        if served is not None and time.monotonic() - served[0] <= self._refresh_max_age_s:
            return served[1]
        pop = self._popularity_now()
        assert pop is not None  # versioned_only=False
        return pop

    def _popularity_now(self, versioned_only: bool = False) -> RankedPopularity | None:
        """Popularity of now: the cached snapshot while ``pop:ver`` still names it (one GET of
        the token), else a new one read with its token in one MULTI/EXEC (not cached without
        a token). ``versioned_only``: None instead of reading a blob that has no token.

        Not a Lua script that returns the blob when the token changed: a 4 MB script reply
        took 5.7 ms, a GET 1.0 ms."""
        cached = self._pop_cache
        ver, pop_key = self._k("pop", "ver"), self._k("pop")
        with self._errors("popularity"):
            token = self._client.get(ver)
            if (
                cached is not None
                and token == cached[0]
                and time.monotonic() - cached[2] <= self.pop_cache_max_age_s
            ):
                return cached[1]
            if token is None:  # written before versions (or never): read it, as before
                if versioned_only:
                    return None
                raw = self._client.get(pop_key)
            else:
                with self._client.pipeline(transaction=True) as pipe:
                    pipe.get(ver)
                    pipe.get(pop_key)
                    token, raw = pipe.execute()
        values = None if raw is None else np.frombuffer(raw, dtype=_F32)
        if cached is not None and token == cached[0] and _same_values(cached[1].values, values):
            # an expired entry whose blob did not change keeps its snapshot (and ranked prefix)
            self._pop_cache = (token, cached[1], time.monotonic())
            return cached[1]
        pop = RankedPopularity(values, ranked=token is not None)
        if token is not None:  # racing reads may cache an older one: the next check replaces it
            self._pop_cache = (token, pop, time.monotonic())
        return pop

    def applied_offset(self, topic: str, partition: int) -> int | None:
        """The highest next-offset applied for ``topic:partition``, or None."""
        with self._errors("applied_offset"):
            raw = self._client.hget(self._k("offsets"), offset_key(topic, partition))
        return None if raw is None else int(raw)

    def ledger(self) -> list[str]:
        """Debug ledger: event keys learned, in write order (see ``StoreBatch.ledger``)."""
        with self._errors("ledger"):
            return [b.decode() for b in self._client.lrange(self._k("ledger"), 0, -1)]

    def versions(self) -> dict[str, int]:
        """The model versions written so far."""
        with self._errors("versions"):
            raw = self._client.hgetall(self._k("versions"))
        return {k.decode(): int(v) for k, v in raw.items()}

    def n_users(self) -> int:
        """Number of users with a query vector."""
        with self._errors("n_users"):
            return int(self._client.hlen(self._k("uvec")))

    def recommend(
        self, user: str, k: int, exclude_seen: bool = True
    ) -> tuple[list[str], FloatArray]:
        """Top-``k`` ``(ids, scores)``; see :func:`~kdstream.stream.top_k_from_store`."""
        return top_k_from_store(self, user, k, exclude_seen)


__all__ = ["RedisStore", "mask_url"]
