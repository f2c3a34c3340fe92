-- Guest session history: record one click event and return the session's clicks up to it, atomically.
-- Run by sessionrec.serving.history (EVALSHA, one call per event, all events of a batch pipelined
-- into one round trip). Atomic per session: Redis runs a script to completion before any other
-- command, so concurrent clicks on one session never lose each other.
--
-- KEYS[1]  clicks: sorted set, score = seq * 64 + position in the event, member = "<score>:<raw id>"
--          (the score in the member keeps repeated clicks on one item apart)
-- KEYS[2]  floor: the highest score trimmed away (events at or below it are too old to store)
-- ARGV[1]  seq: the event's click sequence number in its session (1, 2, ...), its idempotency key
-- ARGV[2]  ttl in milliseconds, slid at every event
-- ARGV[3]  max_len: clicks kept per session (the newest, in click order)
-- ARGV[4]  updates channel: when the event stores clicks, the session's stored clicks are published
--          there as "<KEYS[1]>\n<member>,<member>,..." (sessionrec.serving.history_cache); "" = not
-- ARGV[5..] the event's raw item ids, as decimal strings (int64 ids never become Lua doubles)
-- Returns {state, member, member, ...}: state is stored | duplicate | not_stored, members are the
-- newest max_len clicks with a score below the next event's, oldest first.
local clicks, floor_key = KEYS[1], KEYS[2]
local seq = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max_len = tonumber(ARGV[3])
local channel = ARGV[4]
local count = #ARGV - 4
local base = seq * 64  -- 64 positions per event: seq up to 2**47 (ms timestamps) stays exact in doubles
local last = base + 63
local floor = tonumber(redis.call('GET', floor_key) or '-1')
local state
if count == 0 then
  state = 'not_stored'  -- a read-only lookup: no click in this event
elseif base <= floor then
  state = 'not_stored'  -- older than every kept click: storing it would only trim it again
elseif redis.call('ZCOUNT', clicks, base, last) > 0 then
  state = 'duplicate'  -- a retried event: stored once already
else
  local args = {}
  for i = 1, count do
    local score = base + i - 1
    args[#args + 1] = score
    args[#args + 1] = string.format('%d:%s', score, ARGV[4 + i])
  end
  redis.call('ZADD', clicks, unpack(args))
  local excess = redis.call('ZCARD', clicks) - max_len
  if excess > 0 then
    local cut = redis.call('ZRANGE', clicks, excess - 1, excess - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', clicks, 0, excess - 1)
    redis.call('SET', floor_key, cut[2])
  end
  state = 'stored'
  if channel ~= '' then  -- every stub of every replica learns the session's clicks (their predictions)
    -- pcall: a refused PUBLISH (an ACL without pubsub) costs the predictions, never the click
    redis.pcall('PUBLISH', channel, clicks .. '\n' .. table.concat(redis.call('ZRANGE', clicks, 0, -1), ','))
  end
end
-- Sliding expiry: a session idle for ttl ms is gone, and its next click starts a new one.
redis.call('PEXPIRE', clicks, ttl)
redis.call('PEXPIRE', floor_key, ttl)
local history = redis.call('ZRANGEBYSCORE', clicks, '-inf', last)
local first = math.max(1, #history - max_len + 1)
local out = {state}
for i = first, #history do
  out[#out + 1] = history[i]
end
return out
