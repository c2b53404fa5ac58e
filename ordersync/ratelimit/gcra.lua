--[[
ordersync distributed rate limiter: one atomic GCRA decision per call, clocked by Redis TIME.

Mirrored line by line in Python by ordersync/ratelimit/gcra.py (InMemoryRateLimiter); change both.

KEYS (all carry the hash tag {<seller>:<app>}, so they live in one Redis Cluster slot):
  1 bucket   {prefix}:rl:{seller:app}:<operation>      HASH tat, last_now, adopted_rate, adopted_for
  2 epoch    {prefix}:rl-epoch:{seller:app}            STRING: Redis TIME (us) when this pair's state began
  3 waiters  {prefix}:rlq:{seller:app}:<operation>     ZSET member "<reserve>|<id>", score = enqueue time (us)
  4 expiry   {prefix}:rlqx:{seller:app}:<operation>    ZSET member -> time (us) after which it is stale

ARGV (every operation):
  1 op              acquire | throttled | adopt | peek | leave
  2 plan_rate       configured rate in Amazon's units (requests/s), as the exact string used for adopted_for
  3 time_scale      multiplies every rate (the simulator runs time-scaled; 1 for Amazon)
  4 burst           configured burst (tokens)
  5 send_deadline   microseconds a granted request may take to reach Amazon (sizes the headroom)
ARGV for acquire: 6 reserve (tokens this lane must leave), 7 waiter member, 8 previous enqueue score or "",
                  9 enqueue (1: join the queue if not granted, 0: do not), 10 grace (us) before a silent
                  waiter is stale
ARGV for adopt:   6 observed rate (Amazon's units, from x-amzn-RateLimit-Limit)
ARGV for leave:   6 waiter member

Model: GCRA with emission interval T = 1e6 / rate us and effective burst b_eff = burst - headroom, where
headroom h = max(1, ceil(rate * send_deadline)) and b_eff >= 1. A bucket is "theoretical arrival time"
tat: tokens left at now = b_eff - (max(tat, now) - now) / T. A request with reserve R is granted iff
max(tat, now) + T - now <= (b_eff - R) * T, i.e. at least R tokens remain after it.

The clock is Redis TIME, never a worker's: now = max(TIME, last_now) so a backwards clock step cannot
refill a bucket. A missing bucket is initialised EMPTY at the pair's epoch (tat = epoch + b_eff * T): a
Redis that lost its state also lost the epoch, so every bucket of the pair restarts empty, which cannot
exceed Amazon's bucket whatever was sent before the loss. A first-ever bucket starts empty too (the
first-ever use of a pair creates the epoch), which only delays the first requests; it is safe.

Replies (Redis truncates Lua numbers to integers, so times are whole microseconds and fractions are strings):
  acquire   {granted 0|1, retry_after_us, tokens_left_floor, waiter_score, now_us, queued_before}
  throttled {retry_after_us, now_us}
  adopt     {adopted 0|1, now_us}
  peek      {tokens_left "x.xxx", effective_rate "x.xxxxxx", b_eff, waiters, adopted_rate or "", now_us}
  leave     {removed 0|1}
]]

local bucket_key = KEYS[1]
local epoch_key = KEYS[2]
local waiters_key = KEYS[3]
local expiry_key = KEYS[4]

local op = ARGV[1]
local plan_rate_text = ARGV[2]
local plan_rate = tonumber(plan_rate_text)
local time_scale = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local send_deadline_us = tonumber(ARGV[5])

-- Lua's tostring() prints large numbers as 1.7e+15; Redis needs plain integers.
local function int_text(x)
  return string.format('%.0f', x)
end

if op == 'leave' then
  local member = ARGV[6]
  local removed = redis.call('ZREM', waiters_key, member)
  redis.call('ZREM', expiry_key, member)
  return {removed}
end

-- Redis < 5 replicates scripts verbatim and refuses writes after TIME; since 5 this is the default.
if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local state = redis.call('HMGET', bucket_key, 'tat', 'last_now', 'adopted_rate', 'adopted_for')
local last_now = tonumber(state[2])
if last_now ~= nil and last_now > now then
  now = last_now -- Redis's clock stepped back: time must not run backwards for a bucket
end

-- A lower rate Amazon reported is honoured only while the configured plan is the one it was
-- compared against; changing the configuration is how a rate is raised again.
local amazon_rate = plan_rate
local adopted_rate = tonumber(state[3])
if adopted_rate ~= nil and state[4] == plan_rate_text and adopted_rate < plan_rate then
  amazon_rate = adopted_rate
end

local rate = amazon_rate * time_scale
local interval = 1000000 / rate
-- The tiny epsilon keeps float noise (10 * 0.1 = 1.0000000000000002) from adding a token of headroom.
local headroom = math.max(1, math.ceil(rate * send_deadline_us / 1000000 - 1e-9))
local b_eff = math.max(1, burst - headroom)

local writes = op ~= 'peek'

local tat = tonumber(state[1])
if tat == nil then
  local epoch = tonumber(redis.call('GET', epoch_key))
  if epoch == nil then
    epoch = now
    if writes then
      redis.call('SET', epoch_key, int_text(epoch), 'NX')
    end
  end
  tat = epoch + b_eff * interval -- empty at the epoch, refilling since
end

local function tokens_left(at_tat)
  return b_eff - (math.max(at_tat, now) - now) / interval
end

-- A reserve that would leave the lane no token at all would starve it: keep at least one usable.
local function usable_reserve(reserve)
  return math.max(0, math.min(reserve, b_eff - 1))
end

local function save(new_tat)
  redis.call('HSET', bucket_key, 'tat', int_text(math.ceil(new_tat)), 'last_now', int_text(now))
end

if op == 'peek' then
  local waiters = redis.call('ZCOUNT', expiry_key, '(' .. int_text(now), '+inf')
  return {
    string.format('%.3f', math.max(0, tokens_left(tat))),
    string.format('%.6f', rate),
    b_eff,
    waiters,
    state[3] or '',
    now,
  }
end

if op == 'throttled' then
  -- Amazon answered 429, so its bucket is empty: empty ours with the full burst, which also covers
  -- requests already granted and in flight.
  local new_tat = math.max(tat, now + burst * interval)
  save(new_tat)
  local retry = math.max(0, math.max(new_tat, now) + interval - now - b_eff * interval)
  return {math.ceil(retry), now}
end

if op == 'adopt' then
  local observed = tonumber(ARGV[6])
  if observed == nil or observed <= 0 or observed >= amazon_rate then
    return {0, now}
  end
  -- Keep the tokens already spent: the debt measured in tokens stays, its duration stretches.
  local new_interval = 1000000 / (observed * time_scale)
  local debt = math.max(tat, now) - now
  local new_tat = now + debt * new_interval / interval
  redis.call('HSET', bucket_key, 'tat', int_text(math.ceil(new_tat)), 'last_now', int_text(now),
    'adopted_rate', ARGV[6], 'adopted_for', plan_rate_text)
  return {1, now}
end

if op ~= 'acquire' then
  return redis.error_reply('gcra.lua: unknown op ' .. tostring(op))
end

local reserve = usable_reserve(tonumber(ARGV[6]))
local member = ARGV[7]
local previous_score = tonumber(ARGV[8])
local enqueue = ARGV[9] == '1'
local grace_us = tonumber(ARGV[10])

-- Drop waiters that stopped polling (crashed or cancelled without leaving).
local stale = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', int_text(now))
for _, gone in ipairs(stale) do
  redis.call('ZREM', waiters_key, gone)
  redis.call('ZREM', expiry_key, gone)
end

-- A live waiter dropped as stale (a long pause) gets its original place back.
local rank = redis.call('ZRANK', waiters_key, member)
if rank == false and previous_score ~= nil and enqueue then
  redis.call('ZADD', waiters_key, int_text(previous_score), member)
  rank = redis.call('ZRANK', waiters_key, member)
end
local ahead
if rank == false then
  ahead = redis.call('ZRANGE', waiters_key, 0, -1)
elseif rank == 0 then
  ahead = {} -- (ZRANGE 0 -1 would mean the whole queue)
else
  ahead = redis.call('ZRANGE', waiters_key, 0, rank - 1)
end

local debt = math.max(tat, now) - now
local function fits(after_debt, lane_reserve)
  return after_debt + interval <= (b_eff - lane_reserve) * interval
end

-- First come, first served among those who could be served: a waiter ahead that could take a token
-- now blocks us; one held back by its own larger reserve does not (that is what reserves are for).
local blocked_by = 0
local served_before = 0
for _, other in ipairs(ahead) do
  local other_reserve = usable_reserve(tonumber(string.match(other, '^(%d+)|')) or 0)
  if fits(debt, other_reserve) then
    blocked_by = blocked_by + 1
    served_before = served_before + 1
  elseif other_reserve <= reserve then
    served_before = served_before + 1
  end
end

if blocked_by == 0 and fits(debt, reserve) then
  local new_tat = math.max(tat, now) + interval
  save(new_tat)
  redis.call('ZREM', waiters_key, member)
  redis.call('ZREM', expiry_key, member)
  return {1, 0, math.floor(math.max(0, tokens_left(math.ceil(new_tat)))), 0, now, 0}
end

-- Not now. Estimate when our turn comes, assuming everyone served before us takes one token.
local retry = debt + (served_before + 1) * interval - (b_eff - reserve) * interval
if retry <= 0 then
  -- Tokens are there but a waiter ahead has yet to collect its own: look again shortly.
  retry = math.min(interval, 50000)
end
retry = math.ceil(retry)

save(tat)
local score = 0
if enqueue then
  local existing = redis.call('ZSCORE', waiters_key, member)
  if existing then
    score = tonumber(existing)
  else
    score = now
    redis.call('ZADD', waiters_key, int_text(score), member)
  end
  redis.call('ZADD', expiry_key, int_text(now + retry + grace_us), member)
end
return {0, retry, math.floor(math.max(0, tokens_left(tat))), score, now, served_before}
