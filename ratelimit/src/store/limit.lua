-- limit.lua: the limiter of src/limiter.rs for a batch of requests, each atomically and in
-- order, on Redis time. One call decides every request the store had waiting (redis.rs).
--
-- A counter is one string: a header of three doubles (the latest admission `t`, the `total` of
-- every count held, the index of the `first` bucket held) and then one double per bucket from
-- `first` on, consecutive. Buckets that no longer count are a prefix (limiter.rs `is_live`
-- only falls with the index), so dropping them and charging the current bucket touch the two
-- ends of the string: GET, a few bytes of arithmetic, SET with the expiry. Nothing is written
-- for a rejected request.
--
-- ARGV[1] = "check" or "refund" (or "check@<now_ms>": decide at that instant instead of Redis's
--   TIME, and set no expiry, which would run on Redis's clock; only tests send it, to step
--   time). Then, for check, per request: its number of keys, then four values per key:
--   algorithm ("s" | "a" | "f"), limit, window_ms, cost; the keys of every request are KEYS in
--   order. For refund (one request): four values per key: bucket, cost, unused, unused (undoes
--   an admission whose sibling group failed).
-- check returns {now_ms, then per request: status, then per key: admitted, used, reset_ms,
--   retry_ms, bucket}; status is 1 (every counter admitted it, and each was charged), 0 (not
--   admitted, nothing charged) or -1 (a key holds something that is not a counter; nothing
--   charged, its values are 0).
local op, at = string.match(ARGV[1], '^(%a+)@?(%d*)$')
local stepped = at ~= nil and at ~= ''
local now
if stepped then
  now = tonumber(at)
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local floor, max, pack, unpack, sub = math.floor, math.max, struct.pack, struct.unpack, string.sub
local HEAD, SLOT = 24, 8
-- Buckets a clock that went back may add in front of `first`; further back, the request is
-- charged to `first` instead (later than it was: counted longer, never shorter).
local MAX_GAP = 64

-- A counter as read: {t, total, first, n (buckets held), raw string}, or nil when absent; and
-- whether the key holds something that is not a counter (which is never taken for empty).
local function read(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and redis.call('TYPE', k).ok == 'hash' then
    -- A counter of the earlier layout (a hash of buckets): it starts again, once, at the
    -- upgrade.
    redis.call('DEL', k)
    return nil, false
  end
  if v == false then return nil, false end
  if type(v) ~= 'string' or #v < HEAD or (#v - HEAD) % SLOT ~= 0 then return nil, true end
  local t, total, first = unpack('<ddd', v)
  return {t, total, first, (#v - HEAD) / SLOT, v}, false
end

local function count(c, j) return (unpack('<d', c[5], HEAD + 1 + j * SLOT)) end

-- A bucket's admissions are no later than its end, nor than the latest admission when that
-- falls inside it; W after that instant none of them is in the window (limiter.rs).
local function leaves_at(i, t, g, w)
  if t ~= nil and t >= i * g and t < (i + 1) * g then return t + w end
  return (i + 1) * g + w
end

-- Drops the prefix of buckets that no longer count (or hold nothing): returns the number of
-- buckets dropped and what they held.
local function dead_prefix(c, alg, cur, g, w)
  local drop, gone = 0, 0
  while drop < c[4] do
    local i, n = c[3] + drop, count(c, drop)
    local dead
    if n <= 0 then
      dead = true
    elseif alg == 's' then
      dead = leaves_at(i, c[1], g, w) <= now
    elseif alg == 'a' then
      dead = i < cur - 1
    else
      dead = i < cur
    end
    if not dead then break end
    drop, gone = drop + 1, gone + n
  end
  return drop, gone
end

-- The counter after charging `cost` to bucket `cur`, as the string to store.
local function charged(c, drop, gone, cur, cost, t)
  if c == nil or drop == c[4] then
    return pack('<dddd', t, cost, cur, cost)
  end
  local v, first, n = c[5], c[3] + drop, c[4] - drop
  local body = sub(v, HEAD + 1 + drop * SLOT)
  local total = c[2] - gone + cost
  local last = first + n - 1
  if cur > last then
    body = body .. string.rep(pack('<d', 0), cur - last - 1) .. pack('<d', cost)
  elseif cur >= first then
    local j = cur - first
    body = sub(body, 1, j * SLOT) .. pack('<d', count(c, drop + j) + cost) .. sub(body, (j + 1) * SLOT + 1)
  elseif first - cur <= MAX_GAP then
    body = pack('<d', cost) .. string.rep(pack('<d', 0), first - cur - 1) .. body
    first = cur
  else
    body = pack('<d', count(c, drop) + cost) .. sub(body, SLOT + 1)
  end
  return pack('<ddd', t, total, first) .. body
end

if op == 'refund' then
  for k = 1, #KEYS do
    local b, cost = tonumber(ARGV[2 + (k - 1) * 4]), tonumber(ARGV[3 + (k - 1) * 4])
    local c = read(KEYS[k])
    if c ~= nil and b >= c[3] and b < c[3] + c[4] then
      local j = b - c[3]
      local n = max(0, count(c, j) - cost)
      local v = c[5]
      local total = max(0, c[2] - (count(c, j) - n))
      v = pack('<ddd', c[1], total, c[3]) .. sub(v, HEAD + 1, HEAD + j * SLOT) .. pack('<d', n) .. sub(v, HEAD + (j + 1) * SLOT + 1)
      redis.call('SET', KEYS[k], v, 'KEEPTTL')
    end
  end
  return {now}
end

-- Evaluates one counter: admitted, used, reset, retry, and what to store if all admit.
local function evaluate(c, alg, n, w, cost)
  local g = w
  if alg == 's' then g = max(1, floor(w / 60)) end
  local cur = floor(now / g)
  local drop, gone = 0, 0
  if c ~= nil then drop, gone = dead_prefix(c, alg, cur, g, w) end
  local held = c ~= nil and c[4] - drop or 0
  local first = c ~= nil and c[3] + drop or cur
  local last = c ~= nil and c[1] or nil
  local admitted, used, reset, retry = 0, 0, 0, 0
  if alg == 's' then
    used = c ~= nil and c[2] - gone or 0
    if used + cost <= n then
      admitted = 1
      -- After the admission the latest admission is now.
      local oldest = held > 0 and first or cur
      reset = max(1, leaves_at(oldest, now, g, w) - now)
    else
      reset = w
      if held > 0 then reset = max(1, leaves_at(first, last, g, w) - now) end
      if cost > n then
        retry = w
      else
        local left, when = used, reset
        for j = drop, c[4] - 1 do
          local b = count(c, j)
          if b > 0 then
            left = left - b
            when = max(1, leaves_at(c[3] + j, last, g, w) - now)
            if left + cost <= n then break end
          end
        end
        retry = when
      end
    end
  else
    -- Counts of bucket `cur - 1` (approximate only) and `cur`.
    local prev, this = 0, 0
    for j = drop, (c ~= nil and c[4] or 0) - 1 do
      local i = c[3] + j
      if i == cur - 1 then prev = prev + count(c, j) elseif i == cur then this = this + count(c, j) end
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
      reset = max(1, (cur + 1) * g - now)
      if used + cost <= n then admitted = 1 elseif cost > n then retry = w else retry = reset end
    end
  end
  local ttl = w
  if alg == 's' then ttl = w + g elseif alg == 'a' then ttl = 2 * w end
  local t = now
  if alg ~= 's' and c ~= nil then t = c[1] end
  return admitted, used, reset, retry, cur, function() return charged(c, drop, gone, cur, cost, t), ttl end
end

local out = {now}
local arg, key = 2, 1
while arg <= #ARGV do
  local keys = tonumber(ARGV[arg])
  arg = arg + 1
  local at = #out + 1
  out[at] = 1
  local commits = {}
  local status = 1
  for k = key, key + keys - 1 do
    local alg, n, w, cost = ARGV[arg], tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3])
    arg = arg + 4
    local c, bad = read(KEYS[k])
    if bad then
      status = -1
      for _ = 1, 5 do out[#out + 1] = 0 end
    else
      local admitted, used, reset, retry, cur, commit = evaluate(c, alg, n, w, cost)
      if admitted == 0 and status == 1 then status = 0 end
      commits[#commits + 1] = {KEYS[k], commit}
      out[#out + 1] = admitted
      out[#out + 1] = used
      out[#out + 1] = reset
      out[#out + 1] = retry
      out[#out + 1] = cur
    end
  end
  key = key + keys
  out[at] = status
  if status == 1 then
    for _, e in ipairs(commits) do
      local v, ttl = e[2]()
      if stepped then redis.call('SET', e[1], v) else redis.call('SET', e[1], v, 'PX', ttl) end
    end
  end
end
return out
