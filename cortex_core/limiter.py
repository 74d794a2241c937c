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

import logging
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

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

# KEYS: log, amounts, used, pause
# ARGV: reservation id, window ms, limit requests, limit input, limit output,
#       limit input+output (0: none), need requests, need input, need output
# Returns {1, 0} when reserved; {0, wait ms} when it will fit after that wait
# at the latest; {-1, 0} when it can never fit under the limits.
_RESERVE = (
    _PRELUDE
    + """
local now = now_ms()
local window = tonumber(ARGV[2])
local lim = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])}
local need = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
need[4] = need[2] + need[3]
for k = 1, 4 do
  if lim[k] > 0 and need[k] > lim[k] then return {-1, 0} end
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
# ARGV: reservation id, real input, real output, window ms, bucket ttl ms
# Replaces the reservation's estimate by the real usage and adds the real
# usage to the usage series. Returns the tokens given back (may be negative).
_SETTLE = (
    _PRELUDE
    + """
local window = tonumber(ARGV[4])
local real_i, real_o = tonumber(ARGV[2]), tonumber(ARGV[3])
local freed = 0
local a = redis.call('HGET', KEYS[2], ARGV[1])
if a then
  local v = split(a)
  redis.call('HSET', KEYS[2], ARGV[1], v[1] .. ' ' .. real_i .. ' ' .. real_o)
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
    ) -> None:
        self.client = client
        self.keys = keys
        self.limits = limits
        self.window_ms = int(window_seconds * 1000)
        self._log = keys.limiter("log")
        self._amounts = keys.limiter("amounts")
        self._used = keys.limiter("used")
        self._pause = keys.limiter("pause")
        self._wake = keys.limiter("wake")
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._release = client.register_script(_RELEASE)
        self._usage = client.register_script(_USAGE)
        self._clock_offset = 0.0

    async def sync_clock(self) -> None:
        """Learn the server clock's offset, used to name usage buckets."""
        seconds, micros = await self.client.time()
        self._clock_offset = seconds + micros / 1e6 - time.time()

    def server_now(self) -> float:
        return time.time() + self._clock_offset

    async def try_reserve(
        self, input_tokens: int, output_tokens: int, *, requests: int = 1
    ) -> tuple[Reservation | None, float]:
        """One atomic attempt: a reservation, or None and the seconds to wait."""
        rid = secrets.token_hex(8)
        ok, wait_ms = await self._reserve(
            [self._log, self._amounts, self._used, self._pause],
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
            ],
        )
        if int(ok) == -1:
            raise BudgetTooSmall(
                f"a call of {input_tokens} input and {output_tokens} output tokens "
                f"exceeds the per-window limits {self.limits}"
            )
        if int(ok) == 1:
            return Reservation(rid, input_tokens, output_tokens, 0.0), 0.0
        return None, int(wait_ms) / 1000.0

    async def reserve(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        timeout: float | None = None,
        who: str = "",
    ) -> Reservation:
        """Wait until the estimate fits, then hold it.

        Raises TimeoutError after ``timeout`` seconds and BudgetTooSmall when
        the estimate can never fit.
        """
        started = time.monotonic()
        logged = False
        while True:
            reservation, wait = await self.try_reserve(input_tokens, output_tokens)
            if reservation is not None:
                waited = time.monotonic() - started
                if logged:
                    logger.info("limiter: %s got budget after %.2fs", who, waited)
                return Reservation(
                    reservation.reservation_id, input_tokens, output_tokens, waited
                )
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

    async def settle(
        self, reservation: Reservation, input_tokens: int, output_tokens: int
    ) -> None:
        """Replace the estimate by what the call really used."""
        now = self.server_now()
        bucket = self.keys.limiter(f"usage:{int(now // BUCKET_SECONDS)}")
        await self._settle(
            [self._log, self._amounts, self._used, bucket, self._wake],
            [
                reservation.reservation_id,
                max(0, input_tokens),
                max(0, output_tokens),
                self.window_ms,
                SERIES_RETENTION_SECONDS * 1000,
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
        per_minute = max(1, 60 // BUCKET_SECONDS)
        now = self.server_now()
        last = int(now // BUCKET_SECONDS)
        first = last - buckets - per_minute + 2
        async with self.client.pipeline(transaction=False) as pipe:
            for b in range(first, last + 1):
                pipe.hmget(self.keys.limiter(f"usage:{b}"), ["i", "o"])
            replies = await pipe.execute()
        totals = [int(i or 0) + int(o or 0) for i, o in replies]
        out = []
        for end in range(per_minute - 1, len(totals)):
            out.append(sum(totals[end - per_minute + 1 : end + 1]))
        return (last + 1) * BUCKET_SECONDS, out[-buckets:]
