-- All of one request's checks, atomically: the same steps as guard/stores/memory.py.
--
-- KEYS: three per check, in order: counter, ban, strikes (all share one hash tag).
-- ARGV[1]: now, whole microseconds from the application's clock.
-- ARGV[2]: slack, milliseconds added to every expiry (clock skew between app instances).
-- Then seven per check:
--   kind   "r" (GCRA) or "d" (distinct values)
--   a, b   r: interval_us, tolerance_us      d: max, per_us
--   item   d: the value counted ("" = this request names none)
--   after, within_us, duration_us   escalation to a ban (after = 0: none)
-- Returns {denied (1-based check index, 0 = allowed), retry_us, banned_until_us (0 = none)}.
-- Times are whole microseconds held in doubles: exact below 2^53.

local now = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local n = (#ARGV - 2) / 7

local function arg(i, j)
  return ARGV[2 + (i - 1) * 7 + j]
end

local function ms(us)
  return math.ceil(us / 1000) + slack
end

local function deny(i, retry)
  local after = tonumber(arg(i, 5))
  if after == 0 then
    return {i, retry, 0}
  end
  local skey = KEYS[(i - 1) * 3 + 3]
  local count = tonumber(redis.call('HGET', skey, 'c') or '0')
  local expires = tonumber(redis.call('HGET', skey, 'e') or '0')
  if count == 0 or expires <= now then
    count = 0
    expires = now + tonumber(arg(i, 6))
  end
  count = count + 1
  if count >= after then
    local duration = tonumber(arg(i, 7))
    local until_us = now + duration
    redis.call('DEL', skey)
    redis.call('SET', KEYS[(i - 1) * 3 + 2], string.format('%.0f', until_us), 'PX', ms(duration))
    return {i, duration, until_us}
  end
  redis.call('HSET', skey, 'c', count, 'e', string.format('%.0f', expires))
  redis.call('PEXPIRE', skey, ms(expires - now))
  return {i, retry, 0}
end

-- 1. An existing ban answers at once.
for i = 1, n do
  if tonumber(arg(i, 5)) > 0 then
    local until_us = tonumber(redis.call('GET', KEYS[(i - 1) * 3 + 2]) or '0')
    if until_us > now then
      return {i, until_us - now, until_us}
    end
  end
end

-- 2. Evaluate every check without recording anything; the first that is exceeded denies.
local pending = {}
for i = 1, n do
  local key = KEYS[(i - 1) * 3 + 1]
  if arg(i, 1) == 'd' then
    local item = arg(i, 4)
    if item ~= '' then
      local max, per = tonumber(arg(i, 2)), tonumber(arg(i, 3))
      redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - per))
      if not redis.call('ZSCORE', key, item) and redis.call('ZCARD', key) >= max then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        return deny(i, tonumber(oldest[2]) + per - now)
      end
      pending[#pending + 1] = {key, item, per}
    end
  else
    local interval, tolerance = tonumber(arg(i, 2)), tonumber(arg(i, 3))
    local tat = tonumber(redis.call('GET', key) or '0')
    local new_tat = math.max(tat, now) + interval
    local allow_at = new_tat - tolerance
    if allow_at > now then
      return deny(i, allow_at - now)
    end
    pending[#pending + 1] = {key, false, new_tat}
  end
end

-- 3. Allowed: record the request in every counter; each key expires by itself.
for _, p in ipairs(pending) do
  if p[2] then
    redis.call('ZADD', p[1], string.format('%.0f', now), p[2])
    redis.call('PEXPIRE', p[1], ms(p[3]))
  else
    redis.call('SET', p[1], string.format('%.0f', p[3]), 'PX', ms(p[3] - now))
  end
end
return {0, 0, 0}
