--[[
ordersync distributed rate limiter: one atomic GCRA decision per call, clocked by Redis TIME.

Mirrored line by line in Python by ordersync/ratelimit/gcra.py (InMemoryRateLimiter); change both.

KEYS (all carry the hash tag {<seller>:<app>}, so they live in one Redis Cluster slot):
  1 bucket   {prefix}:rl:{seller:app}:<operation>      HASH tat, last_now, adopted_rate, adopted_for, q,
                                                        res_window, res_used
  2 epoch    {prefix}:rl-epoch:{seller:app}            STRING: Redis TIME (us) when this pair's state began
  3 waiters  {prefix}:rlq:{seller:app}:<operation>     ZSET member "<reserve>|<r|n>|<lane>|<id>", score = enqueue
  4 expiry   {prefix}:rlqx:{seller:app}:<operation>    ZSET member -> time (us) after which it is stale
  5 server   {prefix}:rl-srv:{seller:app}              HASH run_id (the server that wrote the pair's state),
                                                        q_at (Redis TIME of the last failover quarantine)
  6 mark     {prefix}:rl-mark:{seller:app}             STRING "<run_id>|<LASTSAVE>|<q_at>": the failover
                                                        check's answer, cached for MARK_TTL_MS, never
                                                        replicated nor in the AOF
  7..       sub-buckets checked and debited together with bucket 1 (acquire only), e.g.
             {prefix}:rl:{seller:app}:createFeed:JSON_LISTINGS_FEED

ARGV (every operation):
  1 op              acquire | throttled | adopt | peek | leave
  2 plan_rate       configured rate in Amazon's units (requests/s), as the exact string used for adopted_for
  3 time_scale      multiplies every rate (the simulator runs time-scaled; 1 for Amazon)
  4 burst           configured burst (tokens)
  5 send_deadline   microseconds a granted request may take to reach Amazon (sizes the headroom)
  6 quarantine      1: detect a new server (failover, restart with old data) and empty the pair's buckets
ARGV for acquire: 7 reserve (tokens this lane must leave), 8 waiter member, 9 previous enqueue score or "",
                  10 enqueue (1: join the queue if not granted, 0: do not), 11 grace (us) before a silent
                  waiter is stale, 12 reserved tokens per window (0: no reservation), 13 window (us),
                  14 lead (us), 15 number of sub-buckets n, then n pairs (plan_rate, burst)
ARGV for peek:    7 reserved tokens per window, 8 window (us), 9 lead (us)
ARGV for adopt:   7 observed rate (Amazon's units, from x-amzn-RateLimit-Limit)
ARGV for leave:   7 waiter member

Model: GCRA with emission interval T = 1e6 / rate us and effective burst b_eff = burst - headroom, where
headroom h = max(1, ceil(rate * send_deadline)) and b_eff >= 1. A bucket is "theoretical arrival time"
tat: tokens left at now = b_eff - (max(tat, now) - now) / T. A request with reserve R is granted iff
max(tat, now) + T - now <= (b_eff - R) * T, i.e. at least R tokens remain after it, and every sub-bucket
has a token; then all of them are debited, or none.

Reservation (the scheduled inventory share of createFeed): windows of ARGV 13 us, starting ARGV 14 us
before each multiple of the window on Redis TIME. In each window the reserved lane (waiter flag "r") may
take its first ARGV 12 tokens with reserve 0; until it has, every other lane must leave the outstanding
reserved tokens in the bucket. What the lane does not use is never debited, so it stays in the pool, and
the next window starts a new reservation (none accumulates).

The clock is Redis TIME, never a worker's: now = max(TIME, last_now) so a backwards clock step cannot
refill a bucket. A missing bucket is initialised EMPTY at the pair's epoch (tat = epoch + b_eff * T): a
Redis that lost its state also lost the epoch, so every bucket of the pair restarts empty, which cannot
exceed Amazon's bucket whatever was sent before the loss. A first-ever bucket starts empty too (the
first-ever use of a pair creates the epoch), which only delays the first requests; it is safe.

Failover quarantine: the pair remembers the run_id of the server that last wrote it. A different run_id
(a promoted replica, or a restart that reloaded old data) means grants may have been lost or the clock
changed, so every bucket of the pair is treated as emptied at that moment: tat = max(tat, q_at + burst*T),
applied to each bucket the first time it is used after the quarantine (field q).

Replies (Redis truncates Lua numbers to integers, so times are whole microseconds and fractions are strings):
  acquire   "granted(0|1) retry_after_us tokens_left_floor waiter_score now_us queued_before" (one string)
  throttled {retry_after_us, now_us}
  adopt     {adopted 0|1, now_us}
  peek      {tokens_left "x.xxx", effective_rate "x.xxxxxx", b_eff, waiters, adopted_rate or "", now_us,
             outstanding reservation, lane1, count1, lane2, count2, ...}
  leave     {removed 0|1}
]]

local bucket_key = KEYS[1]
local epoch_key = KEYS[2]
local waiters_key = KEYS[3]
local expiry_key = KEYS[4]
local server_key = KEYS[5]
local mark_key = KEYS[6]
local FIRST_SUB_KEY = 6 -- KEYS[FIRST_SUB_KEY + i] is sub-bucket i
-- How long this server's identity is trusted without asking INFO again (INFO costs more than the rest of
-- a decision). The mark is written with replication off, so a promoted replica never has it, and it is
-- not in the AOF; a restart from a snapshot taken within this time would also need the same LASTSAVE
-- second (checked on every call) to keep a stale mark.
local MARK_TTL_MS = 100

local op = ARGV[1]
local time_scale = tonumber(ARGV[3])
local send_deadline_us = tonumber(ARGV[5])
local quarantine = ARGV[6] == '1'

-- Lua's tostring() prints large numbers as 1.7e+15; Redis needs plain integers. Every caller passes a
-- whole number, so %d (an integer conversion) is exact, and much cheaper than %.0f's float formatting.
local function int_text(x)
  return string.format('%d', x)
end

if op == 'leave' then
  local member = ARGV[7]
  local removed = redis.call('ZREM', waiters_key, member)
  redis.call('ZREM', expiry_key, member)
  return {removed}
end

-- Redis < 5 replicates scripts verbatim and refuses writes after TIME; since 5 this is the default.
if redis.replicate_commands then
  redis.replicate_commands()
end

local writes = op ~= 'peek'

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local server_now = now

-- Failover detection: is this the server that wrote the pair's state? Returns the time (us) of the
-- pair's last quarantine, or nil. The answer is cached in the mark, "<run_id>|<LASTSAVE>|<q_at>", for
-- MARK_TTL_MS: INFO and the server hash are read again only when it has expired or LASTSAVE changed.
-- Only this script writes the server hash, so a fresh mark's q_at is the hash's.
local function quarantined_at()
  local lastsave = string.format('%d', redis.call('LASTSAVE'))
  local mark = redis.call('GET', mark_key)
  if mark then
    local saved, marked_q_at = string.match(mark, '^%w*|(%d+)|(%d*)$')
    if saved == lastsave then
      return tonumber(marked_q_at)
    end
  end
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
  local server = redis.call('HMGET', server_key, 'run_id', 'q_at')
  local q_at = tonumber(server[2])
  if server[1] ~= run_id then
    if server[1] then
      q_at = server_now
    end
    if not writes then
      return q_at -- (peek may run where nothing can be written: no mark either)
    end
    if q_at then
      redis.call('HSET', server_key, 'run_id', run_id, 'q_at', int_text(q_at))
    else
      redis.call('HSET', server_key, 'run_id', run_id)
    end
  end
  if writes then
    redis.set_repl(redis.REPL_NONE)
    redis.call('SET', mark_key, run_id .. '|' .. lastsave .. '|' .. (q_at and int_text(q_at) or ''),
      'PX', MARK_TTL_MS)
    redis.set_repl(redis.REPL_ALL)
  end
  return q_at
end

local q_at = nil
if quarantine then
  q_at = quarantined_at()
end

-- A bucket's shape: its plan, or a lower rate Amazon reported, scaled. Returns the rate in Amazon's
-- units, the enforced rate, the emission interval (us) and the effective burst.
local function shape(plan_rate_text, burst, adopted_text, adopted_for)
  local plan_rate = tonumber(plan_rate_text)
  -- A lower rate Amazon reported is honoured only while the configured plan is the one it was
  -- compared against; changing the configuration is how a rate is raised again.
  local amazon_rate = plan_rate
  local adopted_rate = tonumber(adopted_text)
  if adopted_rate ~= nil and adopted_for == plan_rate_text and adopted_rate < plan_rate then
    amazon_rate = adopted_rate
  end
  local rate = amazon_rate * time_scale
  -- The tiny epsilon keeps float noise (10 * 0.1 = 1.0000000000000002) from adding a token of headroom.
  local headroom = math.max(1, math.ceil(rate * send_deadline_us / 1000000 - 1e-9))
  return amazon_rate, rate, 1000000 / rate, math.max(1, burst - headroom)
end

-- Fast path: an acquire with no reservation and no sub-bucket (ARGV stops at 11), that is not a waiter
-- coming back, on a bucket that exists, with nobody queued, and that fits: the common case, decided with
-- two reads and one write. Anything else falls through to the general path below, which decides such a
-- request exactly the same way (the test replaying script calls on the Python mirror covers both).
if op == 'acquire' and ARGV[12] == nil and not (ARGV[9] ~= '' and ARGV[10] == '1') then
  local state = redis.call('HMGET', bucket_key, 'tat', 'last_now', 'adopted_rate', 'adopted_for', 'q')
  local tat = tonumber(state[1])
  if tat ~= nil and redis.call('ZCARD', waiters_key) == 0 then
    local burst = tonumber(ARGV[4])
    local _, _, interval, b_eff = shape(ARGV[2], burst, state[3], state[4])
    local last_now = tonumber(state[2])
    if last_now ~= nil and last_now > now then
      now = last_now
    end
    local applied_q = tonumber(state[5])
    if q_at ~= nil and (applied_q == nil or applied_q < q_at) then
      tat = math.max(tat, q_at + burst * interval)
    end
    local reserve = math.max(0, math.min(tonumber(ARGV[7]), b_eff - 1))
    local start = math.max(tat, now)
    if start - now + interval <= (b_eff - reserve) * interval + b_eff then
      local new_tat = math.ceil(start + interval)
      if q_at ~= nil then
        redis.call('HSET', bucket_key, 'tat', int_text(new_tat), 'last_now', int_text(now), 'q', int_text(q_at))
      else
        redis.call('HSET', bucket_key, 'tat', int_text(new_tat), 'last_now', int_text(now))
      end
      local tokens = math.floor(math.max(0, b_eff - (math.max(new_tat, now) - now) / interval))
      return string.format('1 0 %d 0 %d 0', tokens, now)
    end
  end
end

-- Load a bucket's state.
local function load(key, plan_rate_text, burst)
  local state = redis.call('HMGET', key, 'tat', 'last_now', 'adopted_rate', 'adopted_for', 'q',
    'res_window', 'res_used')
  local amazon_rate, rate, interval, b_eff = shape(plan_rate_text, burst, state[3], state[4])
  return {
    key = key,
    plan_rate_text = plan_rate_text,
    burst = burst,
    raw_tat = tonumber(state[1]),
    last_now = tonumber(state[2]),
    adopted = state[3],
    applied_q = tonumber(state[5]),
    res_window = tonumber(state[6]),
    res_used = tonumber(state[7]),
    amazon_rate = amazon_rate,
    rate = rate,
    interval = interval,
    b_eff = b_eff,
  }
end

local buckets = {load(bucket_key, ARGV[2], tonumber(ARGV[4]))}
local n_subs = 0
if op == 'acquire' then
  n_subs = tonumber(ARGV[15]) or 0
  for i = 1, n_subs do
    buckets[i + 1] = load(KEYS[FIRST_SUB_KEY + i], ARGV[14 + 2 * i], tonumber(ARGV[15 + 2 * i]))
  end
end
-- Redis's clock stepped back: time must not run backwards for any bucket decided on.
for _, b in ipairs(buckets) do
  if b.last_now ~= nil and b.last_now > now then
    now = b.last_now
  end
end

local epoch = nil
for _, b in ipairs(buckets) do
  local tat = b.raw_tat
  if tat == nil then
    if epoch == nil then
      epoch = tonumber(redis.call('GET', epoch_key))
      if epoch == nil then
        epoch = now
        if writes then
          redis.call('SET', epoch_key, int_text(epoch), 'NX')
        end
      end
    end
    tat = epoch + b.b_eff * b.interval -- empty at the epoch, refilling since
  end
  if q_at ~= nil and (b.applied_q == nil or b.applied_q < q_at) then
    tat = math.max(tat, q_at + b.burst * b.interval) -- quarantined: empty as of the failover
  end
  b.tat = tat
end

local main = buckets[1]
local interval = main.interval
local b_eff = main.b_eff

local function tokens_left(b, at_tat)
  return b.b_eff - (math.max(at_tat, now) - now) / b.interval
end

local function save(b, new_tat)
  if q_at ~= nil then
    redis.call('HSET', b.key, 'tat', int_text(math.ceil(new_tat)), 'last_now', int_text(now), 'q', int_text(q_at))
  else
    redis.call('HSET', b.key, 'tat', int_text(math.ceil(new_tat)), 'last_now', int_text(now))
  end
end

-- The reservation window now, and how many reserved tokens the reserved lane has yet to take in it.
local function reservation(res_tokens, window_us, lead_us)
  if res_tokens == nil or res_tokens <= 0 or window_us == nil or window_us <= 0 then
    return nil, 0
  end
  local window = math.floor((now + lead_us) / window_us)
  local used = 0
  if main.res_window == window then
    used = main.res_used or 0
  end
  return window, math.max(0, res_tokens - used)
end

-- A reserve that would leave a lane no token at all would starve it: keep at least one usable.
local function usable_reserve(reserve)
  return math.max(0, math.min(reserve, b_eff - 1))
end

if op == 'peek' then
  local _, outstanding = reservation(tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
  local live = redis.call('ZRANGEBYSCORE', expiry_key, '(' .. int_text(now), '+inf')
  local lanes = {}
  local order = {}
  for _, member in ipairs(live) do
    local lane = string.match(member, '^%d+|%a|([^|]*)|') or 'default'
    if lanes[lane] == nil then
      lanes[lane] = 0
      order[#order + 1] = lane
    end
    lanes[lane] = lanes[lane] + 1
  end
  table.sort(order)
  local reply = {
    string.format('%.3f', math.max(0, tokens_left(main, main.tat))),
    string.format('%.6f', main.rate),
    b_eff,
    #live,
    main.adopted or '',
    now,
    outstanding,
  }
  for _, lane in ipairs(order) do
    reply[#reply + 1] = lane
    reply[#reply + 1] = lanes[lane]
  end
  return reply
end

if op == 'throttled' then
  -- Amazon answered 429, so its bucket is empty: empty ours with the full burst, which also covers
  -- requests already granted and in flight.
  local new_tat = math.max(main.tat, now + main.burst * interval)
  save(main, new_tat)
  local retry = math.max(0, math.max(new_tat, now) + interval - now - b_eff * interval)
  return {math.ceil(retry), now}
end

if op == 'adopt' then
  local observed = tonumber(ARGV[7])
  if observed == nil or observed <= 0 or observed >= main.amazon_rate then
    return {0, now}
  end
  -- Keep the tokens already spent: the debt measured in tokens stays, its duration stretches.
  local new_interval = 1000000 / (observed * time_scale)
  local debt = math.max(main.tat, now) - now
  local new_tat = now + debt * new_interval / interval
  save(main, new_tat)
  redis.call('HSET', main.key, 'adopted_rate', ARGV[7], 'adopted_for', main.plan_rate_text)
  return {1, now}
end

if op ~= 'acquire' then
  return redis.error_reply('gcra.lua: unknown op ' .. tostring(op))
end

-- One string rather than an array of six: the client reads one line instead of seven.
local function acquire_reply(granted, retry_us, tokens, score, before)
  return string.format('%d %d %d %d %d %d', granted, retry_us, tokens, score, now, before)
end

local own_static = tonumber(ARGV[7])
local member = ARGV[8]
local previous_score = tonumber(ARGV[9])
local enqueue = ARGV[10] == '1'
local grace_us = tonumber(ARGV[11])
local window, outstanding = reservation(tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]))

-- A waiter's reserve now: the reserved lane takes its outstanding share with none; every other lane
-- leaves the outstanding share in the bucket on top of its own reserve.
local function reserve_of(static, flag)
  if flag == 'r' and outstanding > 0 then
    return 0
  end
  if flag == 'r' then
    return usable_reserve(static)
  end
  return usable_reserve(math.max(static, outstanding))
end

local own_flag = string.match(member, '^%d+|(%a)|') or 'n'
local reserve = reserve_of(own_static, own_flag)

local function save_all()
  for _, b in ipairs(buckets) do
    save(b, b.tat)
  end
end

-- An empty queue (the common case) has no stale waiter and nobody ahead: one call instead of three.
-- (Waiters and their expiries are always added and removed together.)
local queue_empty = redis.call('ZCARD', waiters_key) == 0 and not (previous_score ~= nil and enqueue)

-- Drop waiters that stopped polling (crashed or cancelled without leaving).
if not queue_empty then
  local stale = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', int_text(now))
  for _, gone in ipairs(stale) do
    redis.call('ZREM', waiters_key, gone)
    redis.call('ZREM', expiry_key, gone)
  end
end

-- A sub-bucket without a token: wait for it outside the queue (so as not to hold up requests that do not
-- need it), keeping the place in the queue for when it comes back.
local sub_wait = 0
for i = 2, #buckets do
  local b = buckets[i]
  local excess = math.max(b.tat, now) - now + b.interval - b.b_eff * b.interval - b.b_eff
  if excess > sub_wait then
    sub_wait = excess
  end
end
if sub_wait > 0 then
  local existing = (not queue_empty) and tonumber(redis.call('ZSCORE', waiters_key, member)) or nil
  if existing then
    redis.call('ZREM', waiters_key, member)
    redis.call('ZREM', expiry_key, member)
  end
  save_all()
  return acquire_reply(0, math.ceil(sub_wait), math.floor(math.max(0, tokens_left(main, main.tat))),
    existing or previous_score or 0, 0)
end

-- A live waiter dropped as stale (a long pause) gets its original place back.
local rank = false
if not queue_empty then
  rank = redis.call('ZRANK', waiters_key, member)
end
if rank == false and previous_score ~= nil and enqueue then
  redis.call('ZADD', waiters_key, int_text(previous_score), member)
  rank = redis.call('ZRANK', waiters_key, member)
end
local ahead
if queue_empty then
  ahead = {}
elseif rank == false then
  ahead = redis.call('ZRANGE', waiters_key, 0, -1)
elseif rank == 0 then
  ahead = {} -- (ZRANGE 0 -1 would mean the whole queue)
else
  ahead = redis.call('ZRANGE', waiters_key, 0, rank - 1)
end

-- Stored tats are rounded up to whole microseconds, so a burst taken in one instant drifts by up to 1 us
-- per token: allow that much (b_eff us), or a non-integer interval could withhold a full bucket's last token.
local debt = math.max(main.tat, now) - now
local function fits(after_debt, lane_reserve)
  return after_debt + interval <= (b_eff - lane_reserve) * interval + b_eff
end

-- First come, first served within a priority: a smaller reserve is a higher priority (shipments before
-- inventory's extra feeds; the reserved share before everyone), so waiters ahead with a larger reserve are
-- passed. Those ahead with the same or a smaller one that could be served now get their tokens first: we
-- are granted only if a token is left for us after them, which can never take one from them.
local served_before = 0
local after_ahead = debt
for _, other in ipairs(ahead) do
  local other_static = tonumber(string.match(other, '^(%d+)|')) or 0
  local other_reserve = reserve_of(other_static, string.match(other, '^%d+|(%a)|') or 'n')
  if other_reserve <= reserve then
    served_before = served_before + 1
    if fits(after_ahead, other_reserve) then
      after_ahead = after_ahead + interval
    end
  end
end

if fits(after_ahead, reserve) then
  local new_tat = math.max(main.tat, now) + interval
  save(main, new_tat)
  for i = 2, #buckets do
    local b = buckets[i]
    save(b, math.max(b.tat, now) + b.interval)
  end
  if own_flag == 'r' and outstanding > 0 then
    redis.call('HSET', main.key, 'res_window', int_text(window), 'res_used',
      int_text(tonumber(ARGV[12]) - outstanding + 1))
  end
  if rank ~= false then -- (a waiter not in the queue has no expiry either)
    redis.call('ZREM', waiters_key, member)
    redis.call('ZREM', expiry_key, member)
  end
  return acquire_reply(1, 0, math.floor(math.max(0, tokens_left(main, math.ceil(new_tat)))), 0, 0)
end

-- Not now. Estimate when our turn comes, assuming everyone served before us takes one token.
local retry = debt + (served_before + 1) * interval - (b_eff - reserve) * interval
if retry <= 0 then
  -- Tokens are there but a waiter ahead has yet to collect its own: look again shortly.
  retry = math.min(interval, 50000)
end
retry = math.ceil(retry)

save_all()
local score = 0
if enqueue then
  local existing = (not queue_empty) and redis.call('ZSCORE', waiters_key, member)
  if existing then
    score = tonumber(existing)
  else
    score = now
    redis.call('ZADD', waiters_key, int_text(score), member)
  end
  redis.call('ZADD', expiry_key, int_text(now + retry + grace_us), member)
end
return acquire_reply(0, retry, math.floor(math.max(0, tokens_left(main, main.tat))), score, served_before)
