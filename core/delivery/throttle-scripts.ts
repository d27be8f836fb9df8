// The Lua scripts of the shared (Redis) throttle counters (throttle.ts): each decision is one
// atomic script, so nodes sharing a Redis never together exceed a limit.

/** Sliding windows: per minute, and per second (route sending caps, e.g. SES's rate quota). */
export const MINUTE_MS = 60_000
export const SECOND_MS = 1_000

// KEYS: concurrency zset, starts zset, pause key, reduced-limit key.
// ARGV: now, token, concurrency limit (0: none), per-minute limit (0: none), slot ttl ms,
// per-second limit (0: none). The starts zset keeps a minute (a second when only perSecond is set).
// Returns {1, 0} granted, {0, retryAt} refused (0: when a slot frees).
export const ACQUIRE = `
local now = tonumber(ARGV[1])
local p = redis.call('GET', KEYS[3])
if p and tonumber(p) > now then return {0, tonumber(p)} end
local lim = tonumber(ARGV[3])
local red = redis.call('GET', KEYS[4])
if red then
  red = tonumber(red)
  if lim == 0 or red < lim then lim = red end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if lim > 0 and redis.call('ZCARD', KEYS[1]) >= lim then return {0, 0} end
local rate = tonumber(ARGV[4])
local ps = tonumber(ARGV[6] or '0')
if rate > 0 or ps > 0 then
  local win = ${SECOND_MS}
  if rate > 0 then win = ${MINUTE_MS} end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
  if rate > 0 and redis.call('ZCARD', KEYS[2]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + ${MINUTE_MS}}
  end
  if ps > 0 then
    local since = '(' .. (now - ${SECOND_MS})
    if redis.call('ZCOUNT', KEYS[2], since, '+inf') >= ps then
      local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      return {0, tonumber(oldest[2]) + ${SECOND_MS}}
    end
  end
  redis.call('ZADD', KEYS[2], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], win)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, 0}
`

// KEYS: pause key, reduced-limit key. ARGV: pause ms, new reduced limit, reduced-limit ttl ms.
// A pause already running is kept (several replies from one burst count once).
export const BACKOFF = `
if redis.call('SET', KEYS[1], ARGV[4], 'PX', tonumber(ARGV[1]), 'NX') then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]))
  return 1
end
return 0
`

// KEYS: reduced-limit key. ARGV: configured limit. One step up; gone once back at the limit.
export const RECOVER = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
v = tonumber(v) + 1
if v >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], v, 'KEEPTTL') end
return v
`
