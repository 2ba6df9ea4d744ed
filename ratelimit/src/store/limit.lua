-- limit.lua: the limiter of src/limiter.rs for a batch of requests, each atomically and in
-- order, on Redis time. One call decides every request the store had waiting (redis.rs).
--
-- A counter is one string: one double per bucket, consecutive from the index `base`, then a
-- 36-byte trailer: the latest admission `t`, the `total` of the live buckets, `base`, and
-- `expires`, the instant (Redis time, ms) the key expires, as doubles; then the first live
-- bucket and the last bucket, as u16 offsets from `base` (so a counter of one bucket is 44
-- bytes, which Redis keeps in one allocation with its key's object). Buckets that no longer
-- count are a prefix (limiter.rs `is_live` only falls with the index), and the first live
-- bucket is never empty.
--
-- Redis's Lua pays for every string it makes by its length (and its collector for it again),
-- so the usual check never holds the whole counter: it reads the string's last 52 bytes
-- (GETRANGE: the last two buckets and the trailer, 52 bytes), decides, and writes back only what changed
-- (SETRANGE: the last bucket and the trailer, or a new bucket and the trailer at the end). A
-- bucket that leaves the window only moves `first`; the string is rewritten whole (SET) once
-- its dead prefix is longer than its live part, so it stays at most about twice the window.
-- Only then, and for a denial's retry time, are the live buckets read. Nothing is written for
-- a rejected request.
--
-- Expiry: a key must outlive its latest admission by the limit's TTL (limiter.rs `ttl_ms`).
-- Setting it on every write would cost Redis about as much as the write itself, so a key is
-- given a quarter of its TTL more than it needs, and the expiry is set again only once that
-- margin is used up. An idle counter so lives at most 1.25 TTL.
--
-- ARGV[1] = "check" or "refund" (or "check@<now_ms>": decide at that instant instead of Redis's
--   TIME, and set no expiry, which would run on Redis's clock; only tests send it, to step
--   time). For check, ARGV[2] holds every request, packed (one argument, not five per key:
--   Redis spends more on an argument and its tonumber than on unpacking it): per request its
--   number of keys (little-endian u16), then per key the algorithm (one byte: "s" | "a" | "f")
--   and limit, window_ms, cost (little-endian doubles); the keys of every request are KEYS in
--   order. For refund (one request): four values per key: bucket, cost, unused, unused (undoes
--   an admission whose sibling group failed).
-- check returns {now_ms, packed}: per request its status (i8), then per key admitted (u8) and
--   used, reset_ms, retry_ms, bucket (little-endian doubles, whole numbers); status is 1 (every
--   counter admitted it, and each was charged), 0 (not admitted, nothing charged) or -1 (a key
--   holds something that is not a counter; nothing charged, its values are 0). One string, not
--   six integers per key: Redis and the client's reply parser both pay per element.
local op, at = string.match(ARGV[1], '^(%a+)@?(%d*)$')
local stepped = at ~= nil and at ~= ''
local now
if stepped then
  now = tonumber(at)
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local floor, max, pack, unpack, sub, rep = math.floor, math.max, struct.pack, struct.unpack, string.sub, string.rep
local TAIL, SLOT, READ = 36, 8, 52 -- READ: the text '-52' in `read`
-- Offsets of `first` and `last` from `base` are u16s.
local MAX_OFFSET = 65535
-- Bucket indices, counts and instants are whole numbers below this (exact in a double).
local LIMIT = 2 ^ 52
local ZERO = pack('<d', 0)
-- Buckets a clock that went back may add in front of `first`; further back, the request is
-- charged to `first` instead (later than it was: counted longer, never shorter).
local MAX_GAP = 64
-- What `read` answers for a key that holds something that is not a counter.
local BAD = {}

-- The end of counter `k` (at most READ bytes), nil when there is none, or BAD: a value that is
-- not a counter is never taken for an empty one, nor overwritten. A hash is a counter of an
-- earlier layout (one field per bucket): it starts again, once, at the upgrade.
-- (The offsets are text: Redis 7.0 turns a number argument into text with snprintf("%.17g"),
-- which cost a tenth of a decision for these two.)
local function read(k)
  local v = redis.pcall('GETRANGE', k, '-52', '-1')
  if type(v) ~= 'string' then
    local kind = redis.call('TYPE', k).ok
    if kind ~= 'hash' then return BAD end
    redis.call('DEL', k)
    return nil
  end
  if v == '' then
    if redis.call('EXISTS', k) == 1 then return BAD end
    return nil
  end
  if #v < TAIL + SLOT or (#v - TAIL) % SLOT ~= 0 then return BAD end
  return v
end

-- The counts of buckets `from`..`to` of counter `k` whose first bucket is `base`, as a string.
local function counts(k, base, from, to)
  return redis.call('GETRANGE', k, (from - base) * SLOT, (to - base + 1) * SLOT - 1)
end

local function count(s, j) return (unpack('<d', s, 1 + j * SLOT)) end

-- A bucket's admissions are no later than its end, nor than the latest admission when that
-- falls inside it; W after that instant none of them is in the window (limiter.rs).
local function leaves_at(i, t, g, w)
  if t ~= nil and t >= i * g and t < (i + 1) * g then return t + w end
  return (i + 1) * g + w
end

-- Writes a whole counter, with the expiry when it changed.
local function put(k, s, exp, changed)
  if stepped then
    redis.call('SET', k, s)
  elseif changed then
    redis.call('SET', k, s, 'PX', max(1, exp - now))
  else
    redis.call('SET', k, s, 'KEEPTTL')
  end
end

-- Decides counter `k` for a request of `cost` against `n` per `w` ms with algorithm `alg`:
-- admitted, used, reset, retry, the bucket charged; and, when `charge` is set and the counter
-- admits, charges it. BAD when `k` holds something else.
-- (Integer division is written `(a - a % b) / b` and `max` as a comparison where it runs for
-- every request: in Redis's Lua a call into C costs more than the arithmetic around it.)
local function decide(k, alg, n, w, cost, charge)
  local v = read(k)
  if v == BAD then return BAD end
  local g = w
  if alg == 's' then
    g = (w - w % 60) / 60
    if g < 1 then g = 1 end
  end
  local cur = (now - now % g) / g
  local prevc, lastc, t, total, first, last, base, expires
  if v ~= nil then
    local fo, lo
    if #v == READ then
      prevc, lastc, t, total, base, expires, fo, lo = unpack('<ddddddHH', v)
    else
      lastc, t, total, base, expires, fo, lo = unpack('<dddddHH', v)
    end
    -- Only the end is read, so check all of it: a counter of one bucket is 44 bytes, of more
    -- at least 52; every number is whole, in range and not NaN. Anything else is not ours
    -- (and would send the loops below over nonsense).
    if not (fo <= lo and (#v == READ) == (lo > 0) and base >= 1 and base < LIMIT and base % 1 == 0
        and t >= 0 and t < LIMIT and total >= 0 and total < LIMIT and expires >= 0
        and expires < LIMIT and lastc >= 0 and lastc < LIMIT
        and (prevc == nil or (prevc >= 0 and prevc < LIMIT))) then
      return BAD
    end
    first, last = base + fo, base + lo
  end
  -- The dead prefix, by index alone; the counts are read only when one is dropped. `head` is
  -- the first bucket kept, `gone` what the dropped ones held (sliding window only: the other
  -- two algorithms read their buckets directly).
  local head, gone, live = first, 0, nil
  if v ~= nil then
    while head <= last do
      local dead
      if alg == 's' then
        -- W after the bucket's last possible admission (leaves_at, inline).
        local last_in = (head + 1) * g
        if t >= head * g and t < last_in then last_in = t end
        dead = last_in + w <= now
      elseif alg == 'a' then
        dead = head < cur - 1
      else
        dead = head < cur
      end
      if not dead then break end
      head = head + 1
    end
    if alg == 's' and head > first and head <= last then
      -- Read the live buckets once: what the dead held, and the first non-empty one after.
      live = counts(k, base, first, last)
      for i = first, head - 1 do gone = gone + count(live, i - first) end
      while head < last and count(live, head - first) <= 0 do head = head + 1 end
      if count(live, head - first) <= 0 then head = last + 1 end
    end
  end
  local held = v ~= nil and head <= last
  local admitted, used, reset, retry = 0, 0, 0, 0
  if alg == 's' then
    if held then used = total - gone end
    if used + cost <= n then
      admitted = 1
      -- After the admission the latest admission is now.
      local oldest = held and head or cur
      reset = leaves_at(oldest, now, g, w) - now
      if reset < 1 then reset = 1 end
    else
      reset = w
      if held then reset = max(1, leaves_at(head, t, g, w) - now) end
      if cost > n then
        retry = w
      else
        local left, when = used, reset
        if live == nil then live = counts(k, base, first, last) end
        for i = head, last do
          local b = count(live, i - first)
          if b > 0 then
            left = left - b
            when = max(1, leaves_at(i, t, g, w) - now)
            if left + cost <= n then break end
          end
        end
        retry = when
      end
    end
  else
    -- Counts of bucket `cur - 1` (approximate only) and `cur`: the last two held, as a rule.
    local prev, this = 0, 0
    if held then
      for i = cur - 1, cur do
        local b = 0
        if i == last then
          b = lastc
        elseif i == last - 1 and i >= head and prevc ~= nil then
          b = prevc
        elseif i >= head and i < last then
          if live == nil then live = counts(k, base, first, last) end
          b = count(live, i - first)
        end
        if i == cur then this = b else prev = b end
      end
    end
    if alg == 'a' then
      -- Integer arithmetic, as in limiter.rs: admitted iff prev*(W-e) <= (N-cur-cost)*W.
      local elapsed = now - cur * g
      local weighted = prev * (w - elapsed)
      local avail = n - this - cost
      used = floor((weighted + w - 1) / w) + this
      reset = max(1, w - elapsed)
      if avail >= 0 and weighted <= avail * w then
        admitted = 1
      elseif cost > n then
        retry = w
      elseif avail >= 0 then
        retry = max(1, w - floor(avail * w / prev) - elapsed)
      else
        retry = reset + max(0, w - floor((n - cost) * w / this))
      end
    else
      used = this
      reset = (cur + 1) * g - now
      if reset < 1 then reset = 1 end
      if used + cost <= n then admitted = 1 elseif cost > n then retry = w else retry = reset end
    end
  end
  if not charge or admitted == 0 then return admitted, used, reset, retry, cur end

  local ttl = w
  if alg == 's' then ttl = w + g elseif alg == 'a' then ttl = 2 * w end
  local newt = now
  if alg ~= 's' and t ~= nil then newt = t end
  -- The expiry: unchanged while it covers the TTL, else the TTL and a quarter from now.
  local exp, changed = 0, false
  if not stepped then
    if v ~= nil and expires >= now + ttl then
      exp = expires
    else
      exp, changed = now + ttl + (ttl - ttl % 4) / 4, true
    end
  end
  if not held then
    put(k, pack('<dddddHH', cost, newt, cost, cur, exp, 0, 0), exp, changed)
    return admitted, used, reset, retry, cur
  end
  local newtotal = total - gone + cost
  if alg ~= 's' then newtotal = 0 end
  if cur >= last and head - base <= last - head + 1 and cur - base <= MAX_OFFSET then
    -- The usual case: the current bucket is the last one, or a new one after it.
    local at, s
    if cur == last then
      at, s = (last - base) * SLOT, pack('<dddddHH', lastc + cost, newt, newtotal, base, exp, head - base, last - base)
    else
      at = (last - base + 1) * SLOT
      s = pack('<dddddHH', cost, newt, newtotal, base, exp, head - base, cur - base)
      if cur > last + 1 then s = rep(ZERO, cur - last - 1) .. s end
    end
    redis.call('SETRANGE', k, at, s)
    if changed then redis.call('PEXPIRE', k, max(1, exp - now)) end
    return admitted, used, reset, retry, cur
  end
  -- Anything else (a long dead prefix, a clock that went back): the live buckets, rewritten.
  if live == nil then live = counts(k, base, first, last) end
  local body, newlast = sub(live, (head - first) * SLOT + 1), last
  if cur > last then
    body = body .. rep(ZERO, cur - last - 1) .. pack('<d', cost)
    newlast = cur
  elseif cur >= head then
    local j = cur - head
    body = sub(body, 1, j * SLOT) .. pack('<d', count(body, j) + cost) .. sub(body, (j + 1) * SLOT + 1)
  elseif head - cur <= MAX_GAP and newlast - cur <= MAX_OFFSET then
    body = pack('<d', cost) .. rep(ZERO, head - cur - 1) .. body
    head = cur
  else
    body = pack('<d', count(body, 0) + cost) .. sub(body, SLOT + 1)
  end
  put(k, body .. pack('<ddddHH', newt, newtotal, head, exp, 0, newlast - head), exp, changed)
  return admitted, used, reset, retry, cur
end

if op == 'refund' then
  for k = 1, #KEYS do
    local b, cost = tonumber(ARGV[2 + (k - 1) * 4]), tonumber(ARGV[3 + (k - 1) * 4])
    local v = redis.pcall('GET', KEYS[k])
    if type(v) == 'string' and #v >= TAIL + SLOT and (#v - TAIL) % SLOT == 0 then
      local t, total, base, expires, fo, lo = unpack('<ddddHH', v, #v - TAIL + 1)
      local first, last = base + fo, base + lo
      if b >= first and b <= last and (lo + 1) * SLOT + TAIL == #v then
        local j = b - base
        local was = count(v, j)
        local left = max(0, was - cost)
        local body = sub(v, 1, j * SLOT) .. pack('<d', left) .. sub(v, (j + 1) * SLOT + 1, #v - TAIL)
        -- The first live bucket is never empty; a counter left with none holds nothing.
        while first < last and count(body, first - base) <= 0 do first = first + 1 end
        if count(body, first - base) <= 0 then
          redis.call('DEL', KEYS[k])
        else
          local trailer = pack('<ddddHH', t, max(0, total - (was - left)), base, expires, first - base, lo)
          redis.call('SET', KEYS[k], body .. trailer, 'KEEPTTL')
        end
      end
    end
  end
  return {now}
end

local out, no = {}, 0
local spec, pos, key = ARGV[2], 1, 1
while pos <= #spec do
  local keys
  keys, pos = unpack('<H', spec, pos)
  local from = pos
  no = no + 1
  local at, status = no, 1
  for k = key, key + keys - 1 do
    local alg, n, w, cost
    alg, n, w, cost, pos = unpack('<c1ddd', spec, pos)
    -- A request of one counter is charged as it is decided; one of several only once every
    -- counter has admitted it (below).
    local admitted, used, reset, retry, cur = decide(KEYS[k], alg, n, w, cost, keys == 1)
    no = no + 1
    if admitted == BAD then
      status = -1
      out[no] = pack('<Bdddd', 0, 0, 0, 0, 0)
    else
      if admitted == 0 and status == 1 then status = 0 end
      out[no] = pack('<Bdddd', admitted, used, reset, retry, cur)
    end
  end
  out[at] = pack('<b', status)
  if status == 1 and keys > 1 then
    for k = key, key + keys - 1 do
      local alg, n, w, cost
      alg, n, w, cost, from = unpack('<c1ddd', spec, from)
      decide(KEYS[k], alg, n, w, cost, true)
    end
  end
  key = key + keys
end
return {now, table.concat(out)}
