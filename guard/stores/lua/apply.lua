#!lua
-- (The shebang, Redis 7 and later: a script that may write is refused as a whole when Redis
-- is over maxmemory, and guard fails open, instead of writing past the limit.)
--
-- The checks of a batch of requests, each request atomically and in order: the same
-- steps as guard/stores/memory.py (MemoryStore.apply_sync).
--
-- KEYS[r]: request r's anchor key: it carries the hash tag that all of the request's
--          keys share, so on a cluster every key below lives in that slot.
-- ARGV[1]: slack, milliseconds added to every expiry (clock skew between app instances).
-- ARGV[r + 1]: request r, lines separated by "\n": first its "now" (whole microseconds
--          from the application's clock), then one line per check:
--          kind|a|b|after|within_us|duration_us|shadow|key|item
--            kind "r" (GCRA: a = interval_us, b = tolerance_us)
--                 "d" (distinct values: a = max, b = per_us; item "" = none counted)
--                 "h" (budget: a = max, b = slice_us; HyperLogLog slices, see below)
--            after = 0: no escalation to a ban. Ban key: key..":b", strikes: key..":s".
--            shadow = 1: exceeding it is reported, never denies (and is not recorded).
--          A check with a ban scope beyond its key is followed by its escalation line:
--          e|scope|uas|addresses|subnet_us|seen_for_us|seen_refresh_us|seen_max|address_key|subnet_key|
--            marker|seen_key|ua|since
--            (see the ban-scope functions below and guard.policy.limits.Escalation).
-- Every key of a request shares its hash tag ("prefix{tag}:"), and "prefix{tag}:scoped" (the
-- marker) holds the latest end of any ban, hold, address or subnet ban under that tag: while
-- it has passed, a request reads that one key instead of every check's ban.
-- Returns four integers per request: denied check (1-based, 0 = allowed), retry_us,
-- banned_until_us (0 = none), and a bit mask of the shadow checks that would have denied
-- (bit i-1 for check i). Times are whole microseconds held in doubles: exact below 2^53.

local slack = tonumber(ARGV[1])
local out = {}

local function ms(us)
  return math.ceil(us / 1000) + slack
end

-- Whole numbers as text, remembered for the call: string.format is slow in Redis's Lua, and a
-- batch writes the same times and budget slice numbers over and over.
local texts = {}
local function fmt(us)
  local text = texts[us]
  if not text then
    text = string.format('%.0f', us)
    texts[us] = text
  end
  return text
end

-- ---- ban scopes (docs/bans.md; MemoryStore._scoped_ban, _escalate, _remember_ua) ----------

local function parse_escalation(line)
  local scope, uas, addresses, subnet_us, seen_for, seen_refresh, seen_max, akey, skey, marker, seen, ua, since =
    string.match(line,
      '^e|(%a+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|([^|]+)|([^|]+)|([^|]+)|([^|]*)|([^|]*)|(%d+)$')
  return {scope = scope, uas = tonumber(uas), addresses = tonumber(addresses), subnet_us = tonumber(subnet_us),
    seen_for = tonumber(seen_for), seen_refresh = tonumber(seen_refresh), seen_max = tonumber(seen_max),
    akey = akey, skey = skey, marker = marker, seen = seen, ua = ua, since = tonumber(since)}
end

-- A check's escalation line is parsed when first needed (most requests only compare its
-- marker, or remember one device): see escalation_of.
local function escalation_of(c)
  if not c.esc then
    c.esc = parse_escalation(c.eline)
  end
  return c.esc
end

local function mark_key(marker, until_us, now)
  if until_us > tonumber(redis.call('GET', marker) or '0') then
    redis.call('SET', marker, fmt(until_us), 'PX', ms(until_us - now))
  end
end

local function mark(e, until_us, now)
  mark_key(e.marker, until_us, now)
end

-- The marker of a request's hash tag (see above), from its first key; nil for a key without a tag.
local function marker_of(key)
  local prefix = string.match(key, '^(.-}:)')
  return prefix and (prefix .. 'scoped') or nil
end

-- The User-Agents seen on an address: a sorted set of first sights, its own end under member "".
local function first_seen(now, e)
  local scores = redis.call('ZMSCORE', e.seen, '', e.ua)
  if tonumber(scores[1] or '0') <= now then
    return nil
  end
  return scores[2]
end

-- The end of a ban reaching this check from its address or subnet, or from the hold on its
-- address when this User-Agent is new there (it then inherits the ban); else nil.
local function scoped_ban(now, c)
  local e = escalation_of(c)
  for _, key in ipairs({e.akey, e.skey}) do
    if key ~= c.key then
      local until_us = tonumber(redis.call('GET', key .. ':b') or '0')
      if until_us > now then
        return until_us
      end
    end
  end
  if e.scope == 'client' then
    local hold = redis.call('HMGET', e.akey .. ':h', 's', 'u')
    local hold_until = tonumber(hold[2] or '0')
    if hold_until > now then
      local first = first_seen(now, e)
      if not first and e.since > 0 then
        first = e.since -- a session issued before the hold: seen, though not yet under its own name
      end
      if not first or tonumber(first) >= tonumber(hold[1]) then
        redis.call('SET', c.key .. ':b', fmt(hold_until), 'PX', ms(hold_until - now))
        return hold_until
      end
    end
  end
  return nil
end

local function ban_until(e, key, until_us, own, now)
  if key ~= own then
    local current = tonumber(redis.call('GET', key .. ':b') or '0')
    local value = math.max(until_us, current)
    redis.call('SET', key .. ':b', fmt(value), 'PX', ms(value - now))
    mark(e, value, now)
  end
end

-- The banned device counts as first seen now: under another User-Agent it is new there.
local function forget_device(now, e)
  local ends = tonumber(redis.call('ZSCORE', e.seen, '') or '0')
  if ends <= now then
    redis.call('DEL', e.seen)
    redis.call('ZADD', e.seen, fmt(now + e.seen_for), '')
    redis.call('PEXPIRE', e.seen, ms(e.seen_for))
  end
  redis.call('ZADD', e.seen, fmt(now), e.ua)
end

-- A ban just started on c.key: hold its address, and escalate when it is one too many.
local function escalate(now, c, until_us)
  local e = escalation_of(c)
  if e.scope == 'subnet' then
    ban_until(e, e.skey, until_us, c.key, now)
    return
  end
  if e.scope == 'client' then
    local hkey = e.akey .. ':h'
    local hold = redis.call('HMGET', hkey, 's', 'u', 'n')
    local start, hold_until, n = tonumber(hold[1] or '0'), tonumber(hold[2] or '0'), tonumber(hold[3] or '0')
    if hold_until <= now then
      start, hold_until, n = now, 0, 0
    end
    hold_until = math.max(hold_until, until_us)
    n = n + 1
    redis.call('HSET', hkey, 's', fmt(start), 'u', fmt(hold_until), 'n', n)
    redis.call('PEXPIRE', hkey, ms(hold_until - now))
    mark(e, hold_until, now)
    forget_device(now, e)
    if n < e.uas then
      return
    end
  end
  ban_until(e, e.akey, until_us, c.key, now)
  local ekey = e.skey .. ':e'
  redis.call('ZREMRANGEBYSCORE', ekey, '-inf', fmt(now))
  redis.call('ZADD', ekey, fmt(until_us), e.akey)
  local last = redis.call('ZRANGE', ekey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', ekey, ms(tonumber(last[2]) - now))
  if redis.call('ZCARD', ekey) >= e.addresses then
    ban_until(e, e.skey, now + e.subnet_us, c.key, now)
  end
end

local function remember_ua(now, e)
  local scores = redis.call('ZMSCORE', e.seen, '', e.ua)
  local ends = tonumber(scores[1] or '0')
  if ends <= now then
    if scores[1] then
      redis.call('DEL', e.seen)
    end
    ends = 0
  end
  local known = ends > 0 and scores[2]
  if known and ends - now > e.seen_refresh then
    return -- known, and the record is fresh: nothing to write
  end
  if not known and redis.call('ZCARD', e.seen) - (ends > 0 and 1 or 0) < e.seen_max then
    local first = now
    if e.since > 0 and e.since < now then
      first = e.since -- a session: seen since it was issued
    end
    redis.call('ZADD', e.seen, fmt(first), e.ua)
  end
  redis.call('ZADD', e.seen, fmt(now + e.seen_for), '')
  redis.call('PEXPIRE', e.seen, ms(e.seen_for))
end

-- ---- the checks of one request ----------------------------------------------------------------

local function parse(request)
  local now, checks = nil, {}
  for line in string.gmatch(request, '[^\n]+') do
    if now == nil then
      now = tonumber(line)
    elseif string.sub(line, 1, 2) == 'e|' then
      checks[#checks].eline = line
    else
      local kind, a, b, after, within, duration, shadow, key, item =
        string.match(line, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|([01])|([^|]+)|(.*)$')
      checks[#checks + 1] = {kind = kind, a = tonumber(a), b = tonumber(b), after = tonumber(after),
        within = tonumber(within), duration = tonumber(duration), shadow = shadow == '1', key = key, item = item}
    end
  end
  return now, checks
end

-- Budgets (kind "h"): distinct values over SLICES slices of b microseconds, one
-- HyperLogLog per slice at key..':'..<slice number>, expiring when it leaves the window,
-- and the numbers of the slices made in the hash key..':i' (see live_slices).
-- The item is added to a one-element probe (key..':p', same slot) and PFCOUNT over the
-- window's slices and the probe is the count with the item: above max, the item is refused.
-- A request's budgets that count the same item share one probe, deleted when the request's
-- checks are done. (guard/stores/hll.py computes the same in the memory store.)
local SLICES = 24

local function budget_slice(c, now)
  local current = math.floor(now / c.b)
  if (current + 1) * c.b <= now then
    current = current + 1
  elseif current * c.b > now then
    current = current - 1
  end
  return current
end

-- The slices of the window that hold anything: their numbers are kept in the hash key..':i'
-- (written when a slice is made), so a count names only those keys, not all SLICES of them
-- (building two dozen key names per budget cost more than the count itself). Numbers that
-- left the window are dropped from it on the way, once they left it for every instance
-- within the slack too (as the slice keys do): an instance whose clock is ahead must not
-- take away a slice that one behind still counts.
local function live_slices(c, current, now)
  local index = c.key .. ':i'
  local oldest = current - SLICES + 1
  local kept = budget_slice(c, now - slack * 1000) - SLICES + 1
  local live, stale = {}, {}
  for _, s in ipairs(redis.call('HKEYS', index)) do
    local n = tonumber(s)
    if not n or n < kept then
      stale[#stale + 1] = s
    elseif n >= oldest and n <= current then -- (a later slice, from an instance whose clock is ahead, is not counted yet)
      live[#live + 1] = s
    end
  end
  if #stale > 0 then
    redis.call('HDEL', index, unpack(stale))
  end
  return live
end

local function budget_check(c, now, probes)
  local current = budget_slice(c, now)
  local live = live_slices(c, current, now)
  local keys = {}
  for n, s in ipairs(live) do
    keys[n] = c.key .. ':' .. s
  end
  local probe = probes[c.item]
  if not probe then
    probe = c.key .. ':p'
    redis.call('PFADD', probe, c.item)
    probes[c.item] = probe
    probes[#probes + 1] = probe
  end
  keys[#keys + 1] = probe
  local count = redis.call('PFCOUNT', unpack(keys))
  if count <= c.a then
    return nil
  end
  -- Full: room comes when the oldest slice holding anything leaves the window.
  local oldest = nil
  for n, s in ipairs(live) do
    local number = tonumber(s)
    if (not oldest or number < oldest) and redis.call('EXISTS', keys[n]) == 1 then
      oldest = number
    end
  end
  if oldest then
    return (oldest + SLICES) * c.b - now
  end
  return c.b
end

local function budget_record(c, now)
  local current = budget_slice(c, now)
  local slice = fmt(current)
  local key = c.key .. ':' .. slice
  -- A slice's expiry is fixed (when it leaves the window): set when the slice is made, and
  -- the slice named in the index, which lives as long as its longest-lived slice (a slice
  -- made late by an instance whose clock is behind never shortens it). PFADD answers 0
  -- only when the slice exists and the item changed nothing.
  if redis.call('PFADD', key, c.item) == 1 then
    local expires = ms((current + SLICES) * c.b - now)
    redis.call('PEXPIRE', key, expires)
    local index = c.key .. ':i'
    if redis.call('HSETNX', index, slice, 1) == 1 and redis.call('PTTL', index) < expires then
      redis.call('PEXPIRE', index, expires)
    end
  end
end

local function deny(now, i, c, retry, mask)
  if c.after == 0 then
    return {i, retry, 0, mask}
  end
  local skey = c.key .. ':s'
  local count = tonumber(redis.call('HGET', skey, 'c') or '0')
  local expires = tonumber(redis.call('HGET', skey, 'e') or '0')
  if count == 0 or expires <= now then
    count = 0
    expires = now + c.within
  end
  count = count + 1
  if count >= c.after then
    local until_us = now + c.duration
    redis.call('DEL', skey)
    redis.call('SET', c.key .. ':b', fmt(until_us), 'PX', ms(c.duration))
    local marker = marker_of(c.key)
    if marker then
      mark_key(marker, until_us, now)
    end
    if c.eline then
      escalate(now, c, until_us)
    end
    return {i, c.duration, until_us, mask}
  end
  redis.call('HSET', skey, 'c', count, 'e', fmt(expires))
  redis.call('PEXPIRE', skey, ms(expires - now))
  return {i, retry, 0, mask}
end

-- Whether a key is under a session's own hash tag ("prefix{~s.<hash>}:", see
-- guard.policy.limits.SESSION_TAG) rather than a client's network tag.
local function under_session_tag(key)
  local open = string.find(key, '{', 1, true)
  return open ~= nil and string.sub(key, open + 1, open + 3) == '~s.'
end

-- The marker every key of a request (and every ban scope) shares, or nil; and the checks under
-- a session's own tag, left out of it, with the marker they share (nil: none). As
-- guard.stores.memory.request_marker.
local function request_marker(checks)
  local marker, head, width, own_marker = nil, nil, 0, nil
  local own = {}
  for i, c in ipairs(checks) do
    if not (head and string.sub(c.key, 1, width) == head and string.find(c.key, '}:', 1, true) == width - 1) then
      if under_session_tag(c.key) then
        local mine = marker_of(c.key)
        if own_marker == nil then
          own_marker = mine
        elseif mine ~= own_marker then
          return nil, {}, nil
        end
        own[i] = true
      elseif head == nil then
        marker = marker_of(c.key)
        if not marker then
          return nil, {}, nil
        end
        head = string.sub(marker, 1, -7) -- "prefix{tag}:", every key's start
        width = #head
      else
        return nil, {}, nil
      end
    end
  end
  if not marker then
    return nil, {}, nil
  end
  local field = '|' .. marker .. '|'
  for _, c in ipairs(checks) do
    if c.eline and not string.find(c.eline, field, 1, true) then
      return nil, {}, nil
    end
  end
  return marker, own, own_marker
end

local function apply(now, checks)
  -- 1. An existing ban answers at once (its own, or one reaching it: see the ban scopes above).
  -- The marker says whether any is alive under the request's tag (checks whose ban scopes
  -- keep another marker, or under a session's own tag, are looked at one by one).
  local marker, own, own_marker = request_marker(checks)
  local scoped, own_scoped = nil, nil
  local bans = false
  for _, c in ipairs(checks) do
    bans = bans or c.after > 0
  end
  if marker and bans then
    scoped = tonumber(redis.call('GET', marker) or '0') > now
    own_scoped = own_marker ~= nil and tonumber(redis.call('GET', own_marker) or '0') > now
  end
  for i, c in ipairs(checks) do
    if marker and scoped == false and not own_scoped then
      break -- nothing is banned under the request's tags
    end
    local mine = scoped
    if own[i] then
      mine = own_scoped
    end
    if c.after > 0 then
      local until_us = 0
      if mine ~= false then
        until_us = tonumber(redis.call('GET', c.key .. ':b') or '0')
      end
      if until_us > now then
        return {i, until_us - now, until_us, 0}
      end
      if c.eline then
        if scoped == nil then
          scoped = tonumber(redis.call('GET', escalation_of(c).marker) or '0') > now
        end
        until_us = scoped and scoped_ban(now, c)
        if until_us then
          return {i, until_us - now, until_us, 0}
        end
      end
    end
  end
  -- 2. Evaluate every check without recording anything; the first that is exceeded denies
  -- (a shadow check only notes that it would have).
  local pending = {}
  local mask = 0
  local bit = 1
  local probes = {}
  for i, c in ipairs(checks) do
    local retry = nil
    local new_tat = 0
    if c.kind == 'h' then
      if c.item ~= '' then
        retry = budget_check(c, now, probes)
      end
    elseif c.kind == 'd' then
      if c.item ~= '' then
        -- A value seen within the window is always allowed; only a new one is counted (its
        -- stale neighbours dropped first: members older than the window stay until then).
        local seen = redis.call('ZSCORE', c.key, c.item)
        if not seen or tonumber(seen) <= now - c.b then
          redis.call('ZREMRANGEBYSCORE', c.key, '-inf', fmt(now - c.b))
          if redis.call('ZCARD', c.key) >= c.a then
            local oldest = redis.call('ZRANGE', c.key, 0, 0, 'WITHSCORES')
            retry = tonumber(oldest[2]) + c.b - now
          end
        end
      end
    else
      local tat = tonumber(redis.call('GET', c.key) or '0')
      new_tat = math.max(tat, now) + c.a
      if new_tat - c.b > now then
        retry = new_tat - c.b - now
      end
    end
    if retry and c.shadow then
      mask = mask + bit
    elseif retry then
      if #probes > 0 then
        redis.call('DEL', unpack(probes))
      end
      return deny(now, i, c, retry, mask)
    elseif c.kind == 'r' or c.item ~= '' then
      pending[#pending + 1] = {c, new_tat}
    end
    bit = bit * 2
  end
  if #probes > 0 then
    redis.call('DEL', unpack(probes))
  end
  -- 3. Allowed: record the request in every counter; each key expires by itself.
  for _, p in ipairs(pending) do
    local c = p[1]
    if c.kind == 'h' then
      budget_record(c, now)
    elseif c.kind == 'd' then
      redis.call('ZADD', c.key, fmt(now), c.item)
      redis.call('PEXPIRE', c.key, ms(c.b))
    else
      redis.call('SET', c.key, fmt(p[2]), 'PX', ms(p[2] - now))
    end
  end
  for _, c in ipairs(checks) do
    if c.eline and string.sub(c.eline, 1, 9) == 'e|client|' then
      remember_ua(now, escalation_of(c))
      break
    end
  end
  return {0, 0, 0, mask}
end

for r = 2, #ARGV do
  local result = apply(parse(ARGV[r]))
  for k = 1, 4 do
    out[#out + 1] = result[k]
  end
end
return out
