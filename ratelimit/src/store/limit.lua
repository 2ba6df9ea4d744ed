-- limit.lua: the limiter of src/limiter.rs for one request's counters, atomically, on Redis time.
--
-- KEYS: one hash per counter; fields are bucket indices, values the cost admitted in them, and
--   for the sliding window `t`, the time of the latest admission (limiter.rs `Counter::last_ms`).
-- ARGV[1] = "check" or "refund" (or "check@<now_ms>": decide at that instant instead of Redis's
--   TIME, and set no expiry, which would run on Redis's clock; only tests send it, to step
--   time); then four values per key:
--   check:  algorithm ("s" | "a" | "f"), limit, window_ms, cost
--   refund: bucket, cost, unused, unused      (undoes an admission whose sibling group failed)
-- check returns {now_ms, all_admitted, then per key: admitted, used, reset_ms, retry_ms, bucket}.
-- A request is admitted only if every counter admits it; only then is any counter incremented,
-- so rejected requests consume nothing.
local op, at = string.match(ARGV[1], '^(%a+)@?(%d*)$')
local stepped = at ~= nil and at ~= ''
local now
if stepped then
  now = tonumber(at)
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local floor = math.floor

if op == 'refund' then
  for k = 1, #KEYS do
    local b, cost = ARGV[2 + (k - 1) * 4], tonumber(ARGV[3 + (k - 1) * 4])
    if redis.call('HINCRBY', KEYS[k], b, -cost) <= 0 then redis.call('HDEL', KEYS[k], b) end
  end
  return {now, 1}
end

local out = {now, 1}
local commits = {}
local all = true
for k = 1, #KEYS do
  local base = 2 + (k - 1) * 4
  local alg, n, w, cost = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local g = w
  if alg == 's' then g = math.max(1, floor(w / 60)) end
  local cur = floor(now / g)
  local lo
  if alg == 's' then lo = floor((now - w) / g) elseif alg == 'a' then lo = cur - 1 else lo = cur end
  -- Live buckets, ascending; dead ones are deleted on the way.
  local raw = redis.call('HGETALL', KEYS[k])
  local live = {}
  local last = nil
  for i = 1, #raw, 2 do
    local idx, c = tonumber(raw[i]), tonumber(raw[i + 1])
    if raw[i] == 't' then
      last = c
    elseif idx == nil or c == nil or idx < lo then
      redis.call('HDEL', KEYS[k], raw[i])
    elseif c > 0 then
      live[#live + 1] = {idx, c, raw[i]}
    end
  end
  -- A bucket's admissions are no later than its end, nor than the latest admission when that
  -- falls inside it; W after that instant none of them is in the window (limiter.rs).
  local function leaves_at(i, t)
    if t ~= nil and t >= i * g and t < (i + 1) * g then return t + w end
    return (i + 1) * g + w
  end
  if alg == 's' then
    -- Dead buckets go before `t` moves on: a later `t` would count an old bucket to its end.
    local kept = {}
    for _, e in ipairs(live) do
      if leaves_at(e[1], last) > now then
        kept[#kept + 1] = e
      else
        redis.call('HDEL', KEYS[k], e[3])
      end
    end
    live = kept
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local admitted, used, reset, retry = 0, 0, 0, 0
  if alg == 's' then
    for _, e in ipairs(live) do used = used + e[2] end
    if used + cost <= n then
      admitted = 1
      -- After the admission the latest admission is now.
      local oldest = cur
      if #live > 0 then oldest = live[1][1] end
      reset = math.max(1, leaves_at(oldest, now) - now)
    else
      reset = w
      if #live > 0 then reset = math.max(1, leaves_at(live[1][1], last) - now) end
      if cost > n then
        retry = w
      else
        local left, at = used, reset
        for _, e in ipairs(live) do
          left = left - e[2]
          at = math.max(1, leaves_at(e[1], last) - now)
          if left + cost <= n then break end
        end
        retry = at
      end
    end
  elseif alg == 'a' then
    -- Integer arithmetic, as in limiter.rs: admitted iff prev*(W-e) <= (N-cur-cost)*W.
    local prev, c = 0, 0
    for _, e in ipairs(live) do
      if e[1] == cur - 1 then prev = prev + e[2] elseif e[1] == cur then c = c + e[2] end
    end
    local elapsed = now - cur * g
    local weighted = prev * (w - elapsed)
    local avail = n - c - cost
    used = floor((weighted + w - 1) / w) + c
    reset = math.max(1, w - elapsed)
    if avail >= 0 and weighted <= avail * w then
      admitted = 1
    elseif cost > n then
      retry = w
    elseif avail >= 0 then
      retry = math.max(1, w - floor(avail * w / prev) - elapsed)
    else
      retry = reset + math.max(0, w - floor((n - cost) * w / c))
    end
  else
    for _, e in ipairs(live) do if e[1] == cur then used = used + e[2] end end
    reset = math.max(1, (cur + 1) * g - now)
    if used + cost <= n then admitted = 1 elseif cost > n then retry = w else retry = reset end
  end
  if admitted == 0 then all = false end
  local ttl = w
  if alg == 's' then ttl = w + g elseif alg == 'a' then ttl = 2 * w end
  commits[k] = {cur, cost, ttl, alg}
  out[#out + 1] = admitted
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = retry
  out[#out + 1] = cur
end

if all then
  for k = 1, #KEYS do
    local c = commits[k]
    redis.call('HINCRBY', KEYS[k], tostring(c[1]), c[2])
    if c[4] == 's' then redis.call('HSET', KEYS[k], 't', now) end
    if not stepped then redis.call('PEXPIRE', KEYS[k], c[3]) end
  end
else
  out[2] = 0
end
return out
