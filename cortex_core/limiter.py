"""One shared per-minute budget for every worker: requests, input tokens,
output tokens, and input plus output, over a rolling window.

The window is a log of reservations in Redis (a sorted set by time, with each
reservation's amounts), updated only by Lua scripts, so that concurrent
workers can never both spend the last of the budget. A worker reserves its
estimate before a call and settles the real usage after; one that does not
fit learns from the script exactly when enough budget frees, and waits for
that moment or for a settle that gives budget back, whichever comes first.
Every key the limiter writes carries an expiry.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from cortex_core.aio import raise_if_cancelled
from cortex_core.errors import CortexError
from cortex_core.keys import Keyspace

logger = logging.getLogger(__name__)

#: Width of one bucket of the usage series the console graphs.
BUCKET_SECONDS = 5
#: How long usage buckets are kept.
SERIES_RETENTION_SECONDS = 3600
#: The longest single blocking wait before the budget is asked again; it must
#: stay below the client's socket timeout (``connection.COMMAND_TIMEOUT``).
MAX_WAIT_SECONDS = 4.0

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function split(s)
  local out = {}
  for n in string.gmatch(s, '%-?%d+') do table.insert(out, tonumber(n)) end
  return out
end
-- Drop reservations older than the window, giving their amounts back.
local function expire(log, amounts, used, cutoff)
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  for _, id in ipairs(old) do
    local a = redis.call('HGET', amounts, id)
    if a then
      local v = split(a)
      redis.call('HINCRBY', used, 'r', 0 - v[1])
      redis.call('HINCRBY', used, 'i', 0 - v[2])
      redis.call('HINCRBY', used, 'o', 0 - v[3])
      redis.call('HDEL', amounts, id)
    end
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff) end
end
local function used_now(used)
  local u = redis.call('HMGET', used, 'r', 'i', 'o')
  return tonumber(u[1]) or 0, tonumber(u[2]) or 0, tonumber(u[3]) or 0
end
local function touch(ttl, ...)
  for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end
end
"""

# KEYS: log, amounts, used, pause, api limits
# ARGV: reservation id, window ms, limit requests, limit input, limit output,
#       limit input+output (0: none), need requests, need input, need output,
#       share of each limit held back from this reservation (per mille)
# A limit the API reported (api limits: r, i, o, t) replaces a configured one
# that is larger or unset.
# Returns {1, 0} when reserved; {0, wait ms} when it will fit after that wait
# at the latest; {-1, 0} when it can never fit under the limits.
_RESERVE = (
    _PRELUDE
    + """
local now = now_ms()
local window = tonumber(ARGV[2])
local lim = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])}
local api = redis.call('HMGET', KEYS[5], 'r', 'i', 'o', 't')
for k = 1, 4 do
  local a = tonumber(api[k])
  if a and a > 0 and (lim[k] == 0 or a < lim[k]) then lim[k] = a end
end
local need = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
need[4] = need[2] + need[3]
local held = tonumber(ARGV[10]) or 0
for k = 1, 4 do
  if lim[k] > 0 and need[k] > lim[k] then return {-1, 0} end
  -- A reservation that may not use the held share sees a smaller limit (but
  -- never one too small for its own call).
  if lim[k] > 0 and held > 0 then
    lim[k] = math.max(need[k], math.floor(lim[k] * (1000 - held) / 1000))
  end
end
local paused = tonumber(redis.call('GET', KEYS[4]) or '0')
if paused > now then return {0, paused - now} end
expire(KEYS[1], KEYS[2], KEYS[3], now - window)
local r, i, o = used_now(KEYS[3])
local u = {r, i, o, i + o}
local function fits(free)
  for k = 1, 4 do
    if lim[k] > 0 and u[k] - free[k] + need[k] > lim[k] then return false end
  end
  return true
end
if fits({0, 0, 0, 0}) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], need[1] .. ' ' .. need[2] .. ' ' .. need[3])
  redis.call('HINCRBY', KEYS[3], 'r', need[1])
  redis.call('HINCRBY', KEYS[3], 'i', need[2])
  redis.call('HINCRBY', KEYS[3], 'o', need[3])
  touch(window + 60000, KEYS[1], KEYS[2], KEYS[3])
  return {1, 0}
end
-- Walk the oldest reservations until enough would have expired.
local free = {0, 0, 0, 0}
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for n = 1, #entries, 2 do
  local a = redis.call('HGET', KEYS[2], entries[n])
  if a then
    local v = split(a)
    free[1] = free[1] + v[1]; free[2] = free[2] + v[2]
    free[3] = free[3] + v[3]; free[4] = free[4] + v[2] + v[3]
  end
  if fits(free) then
    return {0, math.max(1, tonumber(entries[n + 1]) + window - now + 1)}
  end
end
return {0, window}
"""
)

# KEYS: log, amounts, used, usage bucket, wake
# ARGV: reservation id, real input, real output, window ms, bucket ttl ms,
#       admission margin ms
# Replaces the reservation's estimate by the real usage and adds the real
# usage to the usage series. The API charges a call when it admits it (input,
# and output at max_tokens, adjusted at the end), a moment after the reserve:
# the entry is dated at the reserve plus the margin (or now, if sooner), so
# that it never ages out of the window before the API's charge does.
# Returns the tokens given back (may be negative).
_SETTLE = (
    _PRELUDE
    + """
local now = now_ms()
local window = tonumber(ARGV[4])
local real_i, real_o = tonumber(ARGV[2]), tonumber(ARGV[3])
local freed = 0
local a = redis.call('HGET', KEYS[2], ARGV[1])
if a then
  local v = split(a)
  redis.call('HSET', KEYS[2], ARGV[1], v[1] .. ' ' .. real_i .. ' ' .. real_o)
  local at = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or now)
  redis.call('ZADD', KEYS[1], 'XX', math.min(now, at + tonumber(ARGV[6])), ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'i', real_i - v[2])
  redis.call('HINCRBY', KEYS[3], 'o', real_o - v[3])
  freed = (v[2] + v[3]) - (real_i + real_o)
  touch(window + 60000, KEYS[1], KEYS[2], KEYS[3])
end
redis.call('HINCRBY', KEYS[4], 'i', real_i)
redis.call('HINCRBY', KEYS[4], 'o', real_o)
redis.call('HINCRBY', KEYS[4], 'r', 1)
touch(tonumber(ARGV[5]), KEYS[4])
if freed > 0 then
  redis.call('LPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 63)
  touch(window + 60000, KEYS[5])
end
return freed
"""
)

# KEYS: log, amounts, used, wake
# ARGV: reservation id, window ms
# Cancels a reservation whose call was never made. Returns 1 if it existed.
_RELEASE = (
    _PRELUDE
    + """
local a = redis.call('HGET', KEYS[2], ARGV[1])
if not a then return 0 end
local v = split(a)
redis.call('HINCRBY', KEYS[3], 'r', 0 - v[1])
redis.call('HINCRBY', KEYS[3], 'i', 0 - v[2])
redis.call('HINCRBY', KEYS[3], 'o', 0 - v[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 63)
touch(tonumber(ARGV[2]) + 60000, KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)

# KEYS: log, amounts, used
# ARGV: window ms
# Returns {requests, input, output} reserved in the current window.
_USAGE = (
    _PRELUDE
    + """
expire(KEYS[1], KEYS[2], KEYS[3], now_ms() - tonumber(ARGV[1]))
local r, i, o = used_now(KEYS[3])
return {r, i, o}
"""
)

# KEYS: pause, wake
# ARGV: pause length ms
# Holds every reservation until now + length (server clock), or later if a
# longer pause is already set; wakes the waiters so that they learn the new
# deadline. Returns the pause's end, server epoch ms.
_PAUSE = (
    _PRELUDE
    + """
local now = now_ms()
local want = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= want then return current end
redis.call('SET', KEYS[1], want, 'PX', want - now + 1000)
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 63)
redis.call('PEXPIRE', KEYS[2], want - now + 60000)
return want
"""
)

# KEYS: log, amounts, used
# ARGV: entry id, window ms, limit of the dimension (0: none), dimension
#       (1 requests, 2 input, 3 output, 4 input+output), remaining by the API,
#       ms until the API's budget resets
# The API says less is left than the window thinks: hold the difference as
# one entry that ages out when the API resets. The entry for a dimension is
# replaced at each report. Returns the amount held.
_TIGHTEN = (
    _PRELUDE
    + """
local now = now_ms()
local window = tonumber(ARGV[2])
expire(KEYS[1], KEYS[2], KEYS[3], now - window)
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local v = split(old)
  redis.call('HINCRBY', KEYS[3], 'r', 0 - v[1])
  redis.call('HINCRBY', KEYS[3], 'i', 0 - v[2])
  redis.call('HINCRBY', KEYS[3], 'o', 0 - v[3])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local lim, dim = tonumber(ARGV[3]), tonumber(ARGV[4])
local reset = math.min(tonumber(ARGV[6]), window)
if lim <= 0 or reset <= 0 then return 0 end
local r, i, o = used_now(KEYS[3])
local u = {r, i, o, i + o}
local gap = (lim - u[dim]) - tonumber(ARGV[5])
if gap <= 0 then return 0 end
local a = {0, 0, 0}
if dim == 1 then a[1] = gap elseif dim == 3 then a[3] = gap else a[2] = gap end
redis.call('ZADD', KEYS[1], now + reset - window, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], a[1] .. ' ' .. a[2] .. ' ' .. a[3])
redis.call('HINCRBY', KEYS[3], 'r', a[1])
redis.call('HINCRBY', KEYS[3], 'i', a[2])
redis.call('HINCRBY', KEYS[3], 'o', a[3])
touch(window + 60000, KEYS[1], KEYS[2], KEYS[3])
return gap
"""
)

#: Longest time from a reservation to the API admitting its call (at most a
#: twentieth of the window).
ADMIT_MARGIN_SECONDS = 1.0
#: How long alerts and per-priority counters are kept after their last change.
ALERT_RETENTION_SECONDS = 3600
STATS_RETENTION_SECONDS = 86_400
#: How long a limit the API reported is kept without being reported again.
API_LIMIT_RETENTION_SECONDS = 3600
_MAX_ALERTS = 20
#: The dimensions the API reports, in the order of the scripts' amounts.
DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")


class BudgetTooSmall(CortexError):
    """One call needs more than a whole window's budget; it can never run."""


@dataclass(frozen=True)
class Limits:
    """Per-window budgets; 0 means unlimited."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    input_tokens: int
    output_tokens: int
    waited_seconds: float
    priority: str = ""


@dataclass(frozen=True)
class PriorityStats:
    """What one priority's calls took from the budget and how long they waited."""

    calls: int = 0
    tokens: int = 0
    waits: int = 0
    waited_seconds: float = 0.0


@dataclass(frozen=True)
class Alert:
    at: float
    message: str


@dataclass(frozen=True)
class Usage:
    requests: int
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RateLimiter:
    """The shared budget; every worker process holds one of these."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keyspace,
        limits: Limits,
        *,
        window_seconds: float = 60.0,
        held_share: float = 0.0,
        held_for: frozenset[str] = frozenset({"critical", "high"}),
    ) -> None:
        self.client = client
        self.keys = keys
        self.limits = limits
        self.window_ms = int(window_seconds * 1000)
        self.admit_margin_ms = int(
            min(ADMIT_MARGIN_SECONDS, window_seconds / 20) * 1000
        )
        """Longest time from a reserve to the API admitting the call."""
        self.held_permille = round(held_share * 1000)
        """Share of every limit that only ``held_for`` priorities may use."""
        self.held_for = held_for
        self._log = keys.limiter("log")
        self._amounts = keys.limiter("amounts")
        self._used = keys.limiter("used")
        self._pause = keys.limiter("pause")
        self._wake = keys.limiter("wake")
        self._alerts = keys.limiter("alerts")
        self._stats = keys.limiter("prio")
        self._api = keys.limiter("api")
        self._pause_script = client.register_script(_PAUSE)
        self._tighten = client.register_script(_TIGHTEN)
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._release = client.register_script(_RELEASE)
        self._usage = client.register_script(_USAGE)
        self._clock_offset = 0.0
        self._learned: dict[str, int] = {}
        self._learned_at: dict[str, tuple[int, float]] = {}

    async def sync_clock(self) -> None:
        """Learn the server clock's offset, used to name usage buckets."""
        seconds, micros = await self.client.time()
        self._clock_offset = seconds + micros / 1e6 - time.time()

    def server_now(self) -> float:
        return time.time() + self._clock_offset

    async def try_reserve(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        requests: int = 1,
        priority: str = "",
    ) -> tuple[Reservation | None, float]:
        """One atomic attempt: a reservation, or None and the seconds to wait."""
        rid = secrets.token_hex(8)
        held = 0 if not priority or priority in self.held_for else self.held_permille
        ok, wait_ms = await self._reserve(
            [self._log, self._amounts, self._used, self._pause, self._api],
            [
                rid,
                self.window_ms,
                self.limits.requests,
                self.limits.input_tokens,
                self.limits.output_tokens,
                self.limits.tokens,
                requests,
                input_tokens,
                output_tokens,
                held,
            ],
        )
        if int(ok) == -1:
            raise BudgetTooSmall(
                f"a call of {input_tokens} input and {output_tokens} output tokens "
                f"exceeds the per-window limits {self.limits}"
            )
        if int(ok) == 1:
            return Reservation(rid, input_tokens, output_tokens, 0.0, priority), 0.0
        return None, int(wait_ms) / 1000.0

    async def reserve(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        timeout: float | None = None,
        who: str = "",
        priority: str = "",
        on_wait: Callable[[float | None], None] | None = None,
    ) -> Reservation:
        """Wait until the estimate fits, then hold it.

        ``priority`` decides whether the held share is open to the call and
        names the counters it adds to; ``on_wait`` hears the server time of
        the next attempt while the call waits, and ``None`` once it has budget.
        Raises TimeoutError after ``timeout`` seconds and BudgetTooSmall when
        the estimate can never fit.
        """
        started = time.monotonic()
        logged = False
        while True:
            reservation, wait = await self.try_reserve(
                input_tokens, output_tokens, priority=priority
            )
            if reservation is not None:
                waited = time.monotonic() - started
                if logged:
                    logger.info("limiter: %s got budget after %.2fs", who, waited)
                    if on_wait is not None:
                        on_wait(None)
                if priority:
                    await self._count(priority, waited if logged else None)
                return Reservation(
                    reservation.reservation_id,
                    input_tokens,
                    output_tokens,
                    waited,
                    priority,
                )
            if on_wait is not None:
                on_wait(self.server_now() + wait)
            if not logged:
                logger.info("limiter: %s waits up to %.2fs for budget", who, wait)
                logged = True
            if timeout is not None:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    raise TimeoutError(f"no budget within {timeout:.1f}s")
                wait = min(wait, left)
            # Woken early when a settle or release gives budget back.
            await self.client.blpop(
                [self._wake], timeout=max(0.001, min(wait, MAX_WAIT_SECONDS))
            )
            # A cancelled waiter must not go on to spend budget.
            raise_if_cancelled()

    async def settle(
        self, reservation: Reservation, input_tokens: int, output_tokens: int
    ) -> None:
        """Replace the estimate by what the call really used."""
        now = self.server_now()
        bucket = self.keys.limiter(f"usage:{int(now // BUCKET_SECONDS)}")
        if reservation.priority:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(
                    self._stats,
                    f"tokens:{reservation.priority}",
                    max(0, input_tokens) + max(0, output_tokens),
                )
                pipe.expire(self._stats, STATS_RETENTION_SECONDS)
                await pipe.execute()
        await self._settle(
            [self._log, self._amounts, self._used, bucket, self._wake],
            [
                reservation.reservation_id,
                max(0, input_tokens),
                max(0, output_tokens),
                self.window_ms,
                SERIES_RETENTION_SECONDS * 1000,
                self.admit_margin_ms,
            ],
        )

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose call was never made."""
        await self._release(
            [self._log, self._amounts, self._used, self._wake],
            [reservation.reservation_id, self.window_ms],
        )

    async def usage(self) -> Usage:
        """What the current window holds, estimates and settled calls alike."""
        r, i, o = await self._usage(
            [self._log, self._amounts, self._used], [self.window_ms]
        )
        return Usage(int(r), int(i), int(o))

    async def series(self, buckets: int = 120) -> tuple[float, list[int]]:
        """Tokens per minute at the end of each of the last ``buckets`` buckets,
        oldest first, with the time the last one ends."""
        ends_at, inputs, outputs = await self.series_split(buckets)
        return ends_at, [i + o for i, o in zip(inputs, outputs, strict=True)]

    async def series_split(
        self, buckets: int = 120
    ) -> tuple[float, list[int], list[int]]:
        """Input and output tokens per minute at the end of each of the last
        ``buckets`` buckets, oldest first, with the time the last one ends."""
        per_minute = max(1, 60 // BUCKET_SECONDS)
        now = self.server_now()
        last = int(now // BUCKET_SECONDS)
        first = last - buckets - per_minute + 2
        async with self.client.pipeline(transaction=False) as pipe:
            for b in range(first, last + 1):
                pipe.hmget(self.keys.limiter(f"usage:{b}"), ["i", "o"])
            replies = await pipe.execute()
        ins = [int(i or 0) for i, _ in replies]
        outs = [int(o or 0) for _, o in replies]

        def rolling(values: list[int]) -> list[int]:
            out = []
            for end in range(per_minute - 1, len(values)):
                out.append(sum(values[end - per_minute + 1 : end + 1]))
            return out[-buckets:]

        return (last + 1) * BUCKET_SECONDS, rolling(ins), rolling(outs)

    # Limits the API reports -------------------------------------------------

    async def pause_for(self, seconds: float) -> float:
        """Hold every reservation of every worker for ``seconds`` (an API's
        retry-after); returns the server time the pause ends."""
        until_ms = await self._pause_script(
            [self._pause, self._wake], [max(1, int(seconds * 1000))]
        )
        return int(until_ms) / 1000.0

    async def paused_until(self) -> float | None:
        """Server time the shared pause ends, or None when there is none."""
        raw = await self.client.get(self._pause)
        if raw is None:
            return None
        until = int(raw) / 1000.0
        return until if until > self.server_now() else None

    async def learn_limit(self, dimension: str, limit: int) -> None:
        """The API reports ``limit`` for ``dimension``: it replaces a configured
        limit that is larger or unset, for every worker, for an hour."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}")
        if limit <= 0:
            return
        field_name = "riot"[DIMENSIONS.index(dimension)]
        now = time.monotonic()
        known, written = self._learned_at.get(dimension, (0, 0.0))
        # The same figure again is written only now and then, to keep it alive.
        if known == limit and now - written < API_LIMIT_RETENTION_SECONDS / 10:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self._api, field_name, limit)
            pipe.expire(self._api, API_LIMIT_RETENTION_SECONDS)
            await pipe.execute()
        self._learned[dimension] = limit
        self._learned_at[dimension] = (limit, now)

    def effective_limit(self, dimension: str) -> int:
        """The configured limit of ``dimension``, or the API's when smaller."""
        dim = DIMENSIONS.index(dimension)
        configured = (
            self.limits.requests,
            self.limits.input_tokens,
            self.limits.output_tokens,
            self.limits.tokens,
        )[dim]
        learned = self._learned.get(dimension, 0)
        return min((x for x in (configured, learned) if x > 0), default=0)

    async def learned_limits(self) -> dict[str, int]:
        """The limits the API reported lately, by dimension."""
        raw = await self.client.hmget(self._api, list("riot"))
        out: dict[str, int] = {}
        for dimension, value in zip(DIMENSIONS, raw, strict=True):
            try:
                if value is not None and int(value) > 0:
                    out[dimension] = int(value)
            except ValueError:
                logger.warning("limiter: ignoring a malformed limit of %s", dimension)
        return out

    async def refresh_learned(self) -> None:
        """Take the limits another process learned, for ``effective_limit``."""
        self._learned = await self.learned_limits()

    async def tighten(
        self, dimension: str, remaining: int, reset_seconds: float
    ) -> int:
        """The API says ``remaining`` of ``dimension`` is left until it resets:
        hold back whatever the window thinks is free beyond that. Returns the
        amount held (0 when the window was already as tight)."""
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}")
        dim = DIMENSIONS.index(dimension)
        limit = self.effective_limit(dimension)
        held = await self._tighten(
            [self._log, self._amounts, self._used],
            [
                f"api:{dimension}",
                self.window_ms,
                limit,
                dim + 1,
                max(0, remaining),
                max(0, int(reset_seconds * 1000)),
            ],
        )
        return int(held)

    # Alerts and per-priority counters ----------------------------------------

    async def alert(self, message: str) -> None:
        """Raise an alert the console shows (kept for an hour)."""
        entry = json.dumps({"at": self.server_now(), "message": message[:500]})
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(self._alerts, entry)
            pipe.ltrim(self._alerts, 0, _MAX_ALERTS - 1)
            pipe.expire(self._alerts, ALERT_RETENTION_SECONDS)
            await pipe.execute()

    async def alerts(self, *, max_age: float = ALERT_RETENTION_SECONDS) -> list[Alert]:
        """Recent alerts, newest first; malformed entries are skipped."""
        now = self.server_now()
        out: list[Alert] = []
        for raw in await self.client.lrange(self._alerts, 0, _MAX_ALERTS - 1):
            try:
                data = json.loads(raw)
                alert = Alert(float(data["at"]), str(data["message"]))
            except (ValueError, TypeError, KeyError) as err:
                logger.warning("limiter: ignoring a malformed alert (%s)", err)
                continue
            if now - alert.at <= max_age:
                out.append(alert)
        return out

    async def _count(self, priority: str, waited: float | None) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(self._stats, f"calls:{priority}", 1)
            if waited is not None:
                pipe.hincrby(self._stats, f"waits:{priority}", 1)
                pipe.hincrby(self._stats, f"waited_ms:{priority}", int(waited * 1000))
            pipe.expire(self._stats, STATS_RETENTION_SECONDS)
            await pipe.execute()

    async def priority_stats(self) -> Mapping[str, PriorityStats]:
        """Calls, settled tokens, waits and time waited per priority."""
        raw = await self.client.hgetall(self._stats)
        values: dict[str, dict[str, int]] = {}
        for field_raw, value in raw.items():
            name = field_raw.decode() if isinstance(field_raw, bytes) else field_raw
            what, _, prio = str(name).partition(":")
            try:
                values.setdefault(prio, {})[what] = int(value)
            except ValueError:
                continue
        return {
            prio: PriorityStats(
                calls=v.get("calls", 0),
                tokens=v.get("tokens", 0),
                waits=v.get("waits", 0),
                waited_seconds=v.get("waited_ms", 0) / 1000.0,
            )
            for prio, v in values.items()
        }
