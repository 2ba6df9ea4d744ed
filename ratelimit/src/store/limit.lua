-- limit.lua: the limiter of src/limiter.rs for a batch of requests, each atomically and in
-- order, on Redis time. One call decides every request the store had waiting (redis.rs).
--
-- A counter is one string: a 56-byte header, the array of buckets before the last, and a
-- 4-byte end mark. The header holds, as doubles, the counts of the last bucket but one
-- (`prev`, 0 when there is none) and of the last bucket, the latest admission `t`, the `total`
-- of the live buckets, `base` (the index of the array's first bucket) and `expires`, the
-- instant (Redis time, ms) the key expires; then the first live bucket and the last bucket as
-- u16 offsets from `base`, and the layout's mark (u32 MAGIC). The array holds one double per
-- bucket from `base` up to the last but one. Buckets that no longer count are a prefix
-- (limiter.rs `is_live` only falls with the index), and the first live bucket is never empty.
--
-- What Redis charges a script, measured: a redis.call costs about what a command from the
-- network does (its arguments made into objects, a number argument printed with
-- snprintf("%.17g"), the reply parsed back into Lua), a struct.pack or unpack costs a good part
-- of one, and Redis's Lua pays for every string it makes by its length. So the usual check
-- reads the header alone (GETRANGE 0 55), decides, and writes back the three numbers that
-- change where they always are (SETRANGE at the text offset '8'), keeping the key's expiry; it
-- is written inline in the main loop (a Lua function call costs about 700 instructions, a
-- bytecode about 50), and anything else goes to `decide`. A request in a new
-- bucket also moves the last count into the array; a bucket that leaves the window only moves
-- `first`; the array is read only then and for a denial's retry time, and the string is
-- rewritten whole (SET) once its dead prefix is longer than its live part, so it stays at most
-- about twice the window. Nothing is written for a rejected request.
--
-- The end mark reads, to a script of the layout before this one (which read only a string's
-- last 52 bytes), as a counter whose first bucket is after its last: it refuses the key rather
-- than writing into it, while instances of both versions share a Redis.
--
-- Expiry: a key must outlive its latest admission by the limit's TTL (limiter.rs `ttl_ms`).
-- Setting it on every write would cost Redis about as much as the write itself, so a key is
-- given a quarter of its TTL more than it needs, and the expiry is set again only once that
-- margin is used up. An idle counter so lives at most 1.25 TTL.
--
-- Earlier layouts: a hash (one field per bucket) starts again, once; a string of the layout
-- before this one (its buckets, then a 36-byte trailer: t, total, base, expires as doubles,
-- first and last as u16 offsets) is rewritten in this one, counts kept, when first read.
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
local call, try = redis.call, redis.pcall
-- The header (its length is the text '55' + 1 in `read`), a bucket of the array, the end mark.
local HDR, HEAD, SLOT = '<ddddddHHI4', 56, 8
local MAGIC = 0x4c524753
local END = pack('<HH', 65535, 0)
-- Offsets of `first` and `last` from `base` are u16s.
local MAX_OFFSET = 65535
-- Bucket indices, counts and instants are whole numbers below this (exact in a double); an
-- expiry may be further away (a window of millions of years), where a millisecond off is moot.
local LIMIT, FAR = 2 ^ 52, 2 ^ 62
local ZERO = pack('<d', 0)
-- Buckets a clock that went back may add in front of `first`; further back, the request is
-- charged to `first` instead (later than it was: counted longer, never shorter).
local MAX_GAP = 64
-- What `read` answers for a key that holds something that is not a counter.
local BAD = {}

-- Whether a header's numbers are a counter's: every one whole, in range and not NaN (anything
-- else is not ours, and would send the loops below over nonsense).
local function sane(prevc, lastc, t, total, base, expires, fo, lo)
  return fo <= lo and base >= 0 and base < LIMIT and base % 1 == 0 and t >= 0 and t < LIMIT
    and t % 1 == 0 and total >= 0 and total < LIMIT and total % 1 == 0 and expires >= 0
    and expires < FAR and expires % 1 == 0 and lastc >= 0 and lastc < LIMIT
    and lastc % 1 == 0 and prevc >= 0 and prevc < LIMIT and prevc % 1 == 0
    and (lo > 0 or prevc == 0)
end

-- Whole string `v` of counter `k` in the layout before this one, rewritten in this one; BAD
-- when it is not one.
local function upgrade(k, v)
  local l = #v
  if l < 44 or (l - 36) % SLOT ~= 0 then return BAD end
  local t, total, base, expires, fo, lo = unpack('<ddddHH', v, l - 35)
  if (lo + 1) * SLOT + 36 ~= l then return BAD end
  local lastc, prevc = unpack('<d', v, lo * SLOT + 1), 0
  if lo > 0 then prevc = unpack('<d', v, (lo - 1) * SLOT + 1) end
  if not sane(prevc, lastc, t, total, base, expires, fo, lo) then return BAD end
  call('SET', k, pack(HDR, prevc, lastc, t, total, base, expires, fo, lo, MAGIC) .. sub(v, 1, lo * SLOT) .. END, 'KEEPTTL')
  return prevc, lastc, t, total, base, expires, fo, lo
end

-- The header of counter `k`: prev, last, t, total, base, expires, first and last offsets; nil
-- when there is none; BAD when `k` holds something that is not a counter, which is never taken
-- for an empty one, nor overwritten. A hash of the earliest layout is deleted (it starts again).
-- (The offsets are text: a number argument costs an snprintf("%.17g").) `v`, when given, is
-- what that GETRANGE answered.
local function read(k, v)
  if v == nil then v = try('GETRANGE', k, '0', '55') end
  if type(v) ~= 'string' then
    local kind = call('TYPE', k).ok
    if kind ~= 'hash' then return BAD end
    call('DEL', k)
    return nil
  end
  if #v == HEAD then
    local prevc, lastc, t, total, base, expires, fo, lo, mark = unpack(HDR, v)
    if mark == MAGIC then
      if sane(prevc, lastc, t, total, base, expires, fo, lo) then
        return prevc, lastc, t, total, base, expires, fo, lo
      end
      return BAD
    end
  elseif v == '' then
    if call('EXISTS', k) == 1 then return BAD end
    return nil
  end
  return upgrade(k, call('GET', k))
end

-- Counts of buckets `from`..`to` (all before the last) of counter `k` whose array starts at
-- `base`, as a string; BAD when the string is shorter than its header says (the header alone
-- is read by a check: a value cut short is found here, before anything is written).
local function counts(k, base, from, to)
  if to < from then return '' end
  local s = call('GETRANGE', k, HEAD + (from - base) * SLOT, HEAD + (to - base + 1) * SLOT - 1)
  if #s ~= (to - from + 1) * SLOT then return BAD end
  return s
end

local function count(s, j) return (unpack('<d', s, 1 + j * SLOT)) end

-- A bucket's admissions are no later than its end, nor than the latest admission when that
-- falls inside it; W after that instant none of them is in the window (limiter.rs).
local function leaves_at(i, t, g, w)
  if t ~= nil and t >= i * g and t < (i + 1) * g then return t + w end
  return (i + 1) * g + w
end

-- A TTL of `d` ms (at least 1) as text: a number argument would go through "%.17g", which
-- writes 1e+17 for a window of millions of years, and Redis refuses that.
local function ms(d)
  if d < 1 then d = 1 end
  return string.format('%d', d)
end

-- Writes a whole counter, with the expiry when it changed.
local function put(k, s, exp, changed)
  if stepped then
    call('SET', k, s)
  elseif changed then
    call('SET', k, s, 'PX', ms(exp - now))
  else
    call('SET', k, s, 'KEEPTTL')
  end
end

-- Decides counter `k` for a request of `cost` against `n` per `w` ms with algorithm `alg`:
-- admitted, used, reset, retry, the bucket charged; and, when `charge` is set and the counter
-- admits, charges it. BAD when `k` holds something else. `v`: as for `read`.
-- (Integer division is written `(a - a % b) / b` and `max` as a comparison where it runs for
-- every request: in Redis's Lua a call into C costs more than the arithmetic around it.)
local function decide(k, alg, n, w, cost, charge, v)
  local prevc, lastc, t, total, base, expires, fo, lo = read(k, v)
  if prevc == BAD then return BAD end
  local held = prevc ~= nil
  local g = w
  if alg == 's' then
    g = (w - w % 60) / 60
    if g < 1 then g = 1 end
  end
  local cur = (now - now % g) / g
  local first, last
  -- `live`: the counts of buckets `first`..`last - 1`, read when needed.
  local head, gone, live = 0, 0, nil
  if held then
    first, last = base + fo, base + lo
    -- The dead prefix, by index alone; the counts are read only when one is dropped. `head`
    -- is the first bucket kept, `gone` what the dropped ones held (sliding window only: the
    -- other two algorithms read their buckets directly).
    head = first
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
      -- What the dead held, and the first non-empty bucket after them.
      live = counts(k, base, first, last - 1)
      if live == BAD then return BAD end
      for i = first, head - 1 do gone = gone + count(live, i - first) end
      while head < last and count(live, head - first) <= 0 do head = head + 1 end
      if head == last and lastc <= 0 then head = last + 1 end
    end
    held = head <= last
  end
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
        if live == nil then live = counts(k, base, first, last - 1) end
        if live == BAD then return BAD end
        for i = head, last do
          local b = lastc
          if i < last then b = count(live, i - first) end
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
    -- Counts of bucket `cur - 1` (approximate only) and `cur`: the last two, as a rule.
    local prev, this = 0, 0
    if held then
      for i = cur - 1, cur do
        local b = 0
        if i == last then
          b = lastc
        elseif i == last - 1 and i >= head then
          b = prevc
        elseif i >= head and i < last then
          if live == nil then live = counts(k, base, first, last - 1) end
          if live == BAD then return BAD end
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
  if admitted == 1 and held then
    -- What the charge will read or extend must be there, and is checked now: a request of
    -- several counters is decided by all of them before any is charged, so a charge must not
    -- fail (the header alone was read: a string cut short is found here).
    if cur >= last and head - base <= last - head + 1 and cur - base <= MAX_OFFSET then
      if cur > last and call('STRLEN', k) ~= HEAD + lo * SLOT + 4 then return BAD end
    elseif live == nil then
      live = counts(k, base, first, last - 1)
      if live == BAD then return BAD end
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
    if prevc ~= nil and expires >= now + ttl then
      exp = expires
    else
      exp, changed = now + ttl + (ttl - ttl % 4) / 4, true
    end
  end
  if not held then
    put(k, pack(HDR, 0, cost, newt, cost, cur, exp, 0, 0, MAGIC) .. END, exp, changed)
    return admitted, used, reset, retry, cur
  end
  local newtotal = total - gone + cost
  if alg ~= 's' then newtotal = 0 end
  if cur >= last and head - base <= last - head + 1 and cur - base <= MAX_OFFSET then
    -- The usual case: the current bucket is the last one (only the header changes), or a new
    -- one after it (the last count joins the array, before the end mark).
    local h
    if cur == last then
      h = pack(HDR, prevc, lastc + cost, newt, newtotal, base, exp, head - base, lo, MAGIC)
    else
      local p = 0
      if cur == last + 1 then p = lastc end
      call('SETRANGE', k, HEAD + lo * SLOT, pack('<d', lastc) .. rep(ZERO, cur - last - 1) .. END)
      h = pack(HDR, p, cost, newt, newtotal, base, exp, head - base, cur - base, MAGIC)
    end
    call('SETRANGE', k, '0', h)
    if changed then call('PEXPIRE', k, ms(exp - now)) end
    return admitted, used, reset, retry, cur
  end
  -- Anything else (a long dead prefix, a clock that went back): the live buckets, rewritten.
  local body, newlast = sub(live, (head - first) * SLOT + 1) .. pack('<d', lastc), last
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
  local nlo, p = newlast - head, 0
  if nlo > 0 then p = count(body, nlo - 1) end
  put(k, pack(HDR, p, count(body, nlo), newt, newtotal, head, exp, 0, nlo, MAGIC) .. sub(body, 1, nlo * SLOT) .. END, exp, changed)
  return admitted, used, reset, retry, cur
end

if op == 'refund' then
  for k = 1, #KEYS do
    local b, cost = tonumber(ARGV[2 + (k - 1) * 4]), tonumber(ARGV[3 + (k - 1) * 4])
    local v = try('GET', KEYS[k])
    if type(v) == 'string' and #v >= HEAD + 4 and (#v - HEAD - 4) % SLOT == 0 then
      local prevc, lastc, t, total, base, expires, fo, lo, mark = unpack(HDR, v)
      local first, last = base + fo, base + lo
      if mark == MAGIC and #v == HEAD + lo * SLOT + 4 and b >= first and b <= last then
        local array = sub(v, HEAD + 1, HEAD + lo * SLOT)
        local function at(i) if i == last then return lastc end return count(array, i - base) end
        local was = at(b)
        local left = max(0, was - cost)
        if b == last then
          lastc = left
        else
          local j = b - base
          array = sub(array, 1, j * SLOT) .. pack('<d', left) .. sub(array, (j + 1) * SLOT + 1)
          if b == last - 1 then prevc = left end
        end
        -- The first live bucket is never empty; a counter left with none holds nothing.
        while first < last and at(first) <= 0 do first = first + 1 end
        if at(first) <= 0 then
          call('DEL', KEYS[k])
        else
          local header = pack(HDR, prevc, lastc, t, max(0, total - (was - left)), base, expires, first - base, lo, MAGIC)
          call('SET', KEYS[k], header .. array .. END, 'KEEPTTL')
        end
      end
    end
  end
  return {now}
end

-- A request's status byte (i8), made once.
local STATUS = {[1] = '\1', [0] = '\0', [-1] = '\255'}
local out, no = {}, 0
local spec, pos, key = ARGV[2], 1, 1
local size = #spec
while pos <= size do
  -- A request of one key (the usual case) is read by one unpack.
  local keys, alg, n, w, cost, after
  if size - pos >= 26 then keys, alg, n, w, cost, after = unpack('<Hc1ddd', spec, pos) end
  if keys == nil or keys ~= 1 then keys, pos = unpack('<H', spec, pos) end
  no = no + 1
  local at, status = no, 1
  if keys == 1 then
    pos = after
    local k, admitted, used, reset, retry, cur, v = KEYS[key], nil, 0, 0, 0, 0, nil
    if alg == 's' then
      -- The usual sliding-window check, inline (in Redis's Lua every bytecode costs some 50
      -- instructions and a function call some 700): a counter of this layout whose current
      -- bucket is its last, whose first live bucket stays in the window, whose expiry covers
      -- the TTL, and which admits the request. What `decide` would answer and write, exactly;
      -- anything else goes to `decide`.
      -- (An error is a table, whose length is 0.)
      v = try('GETRANGE', k, '0', '55')
      if #v == HEAD then
        local prevc, lastc, t, total, base, expires, fo, lo, mark = unpack(HDR, v)
        local g = (w - w % 60) / 60
        if g < 1 then g = 1 end
        cur = (now - now % g) / g
        local first = base + fo
        local last_in = (first + 1) * g
        if t >= first * g and t < last_in then last_in = t end
        if mark == MAGIC and base + lo == cur and fo + fo <= lo + 1 and last_in + w > now
            and total + cost <= n and total < LIMIT and total % 1 == 0 and lastc >= 0
            and lastc <= total and lastc % 1 == 0 and prevc >= 0 and prevc < LIMIT
            and prevc % 1 == 0 and (lo > 0 or prevc == 0) and t >= 0 and t <= now and t < LIMIT
            and t % 1 == 0 and base >= 0 and expires < FAR and expires % 1 == 0
            and (not stepped and expires >= now + w + g or stepped and expires == 0) then
          -- Only the last count, `t` and `total` change: bytes 8 to 31 (the text offset '8').
          call('SETRANGE', k, '8', pack('<ddd', lastc + cost, now, total + cost))
          admitted, used, reset = 1, total, w
          if first < cur then reset = (first + 1) * g + w - now end
          if reset < 1 then reset = 1 end
        end
      end
    end
    if admitted == nil then admitted, used, reset, retry, cur = decide(k, alg, n, w, cost, true, v) end
    -- The status and the one verdict, together.
    if admitted == BAD then
      out[at] = pack('<bBdddd', -1, 0, 0, 0, 0, 0)
    else
      out[at] = pack('<bBdddd', admitted, admitted, used, reset, retry, cur)
    end
  else
    local from = pos
    for k = key, key + keys - 1 do
      alg, n, w, cost, pos = unpack('<c1ddd', spec, pos)
      -- One counter of several is charged only once every counter has admitted the request.
      local admitted, used, reset, retry, cur = decide(KEYS[k], alg, n, w, cost, false)
      no = no + 1
      if admitted == BAD then
        status = -1
        out[no] = pack('<Bdddd', 0, 0, 0, 0, 0)
      else
        if admitted == 0 and status == 1 then status = 0 end
        out[no] = pack('<Bdddd', admitted, used, reset, retry, cur)
      end
    end
    if status == 1 and keys > 1 then
      for k = key, key + keys - 1 do
        alg, n, w, cost, from = unpack('<c1ddd', spec, from)
        decide(KEYS[k], alg, n, w, cost, true)
      end
    end
    out[at] = STATUS[status]
  end
  key = key + keys
end
return {now, table.concat(out)}
