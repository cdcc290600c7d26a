"""The Redis frontier's Lua scripts: each step that must be atomic is one script.

Every script gets KEYS[1] = the crawl's key prefix `crawl:{ID}:` (its hash tag routes
the script to the crawl's slot; the keys it names are built from it and share the tag)
and ARGV[1..4] = PER_HOST, DELAY in microseconds, the lease in microseconds, and the
bound on results waiting for the collector (0: none). The clock is Redis's own
(`TIME`, microseconds since the epoch), read once per script. Keys, after the prefix:

    seen            SET of 16-byte request fingerprints
    q:<host>:<p>    LIST: the host's pending requests of priority p, oldest first
    qp:<host>       ZSET: the priorities with pending requests (score -p: highest first)
    ready           ZSET host -> when it may next be served: hosts with pending requests
                    and a free slot
    host:<host>     HASH: inflight, last (hand-out time), delay (Crawl-delay), held
                    (Retry-After), reason, known (1 once its robots.txt is stored)
    fence           counter: each lease's fencing token
    leases          ZSET token -> expiry
    lease:<token>   HASH: host, prio, req (the request), worker
    finished        ZSET token -> time: leases finished in the last 2 minutes, so that a
                    finish retried after a lost reply is answered "again", not "refused"
    results         STREAM: token, host, request, result, new (count) per finished page
    stats           HASH: queued, finished, refused, expired
    robots          HASH host -> robots.txt; robots:<host> the fetcher's lock
    meta            HASH: spider, token, created (Redis time), state (running, stopped,
                    ended), max_pages (0: no bound), probe (1: one request of a host in
                    flight until its robots.txt is known)
    workers         HASH worker -> "<heartbeat time> <JSON the worker sent>"
"""

from __future__ import annotations

_PRELUDE = """
local P = KEYS[1]
local PER_HOST = tonumber(ARGV[1])
local DELAY = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local BOUND = tonumber(ARGV[4])
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local STAMP = clock[1] .. string.format('%06d', tonumber(clock[2]))
local READY, STATS, LEASES = P .. 'ready', P .. 'stats', P .. 'leases'
local META = P .. 'meta'
local PROBE = redis.call('HGET', META, 'probe') == '1'
local FINISHED, KEEP_FINISHED = P .. 'finished', 120000000

-- A whole number as the argument redis.call() sends: Redis 7.0 formats a Lua number
-- with "%.17g", which cost more than the rest of a finish; "%d" does not.
local function int(x) return string.format('%d', x) end
local function hkey(host) return P .. 'host:' .. host end
local function pkey(host) return P .. 'qp:' .. host end
local function qkey(host, prio) return P .. 'q:' .. host .. ':' .. prio end

-- A host is in `ready` while it has pending requests and a free slot, scored by the
-- time it may next be served: DELAY (or its Crawl-delay) after its last hand-out, and
-- not before its Retry-After hold. With PROBE its slots are one until its robots.txt
-- is known, so that one request fetches it before the others go out.
local function schedule(host)
  local h = redis.call('HMGET', hkey(host), 'inflight', 'last', 'delay', 'held', 'known')
  local cap = PER_HOST
  if PROBE and h[5] ~= '1' then cap = 1 end
  if (tonumber(h[1]) or 0) >= cap or redis.call('EXISTS', pkey(host)) == 0 then
    redis.call('ZREM', READY, host)
    return
  end
  local delay = math.max(DELAY, tonumber(h[3]) or 0)
  local due = math.max((tonumber(h[2]) or 0) + delay, tonumber(h[4]) or 0)
  redis.call('ZADD', READY, int(due), host)
end

local function push(host, prio, blob, front)
  local name = int(prio)
  local q = qkey(host, name)
  if front then redis.call('LPUSH', q, blob) else redis.call('RPUSH', q, blob) end
  redis.call('ZADD', pkey(host), int(-prio), name)
  redis.call('HINCRBY', STATS, 'queued', '1')
end

local function pop(host)
  local top = redis.call('ZRANGE', pkey(host), '0', '0')
  if #top == 0 then return nil, nil end
  local q = qkey(host, top[1])
  local blob = redis.call('LPOP', q)
  if redis.call('LLEN', q) == 0 then redis.call('ZREM', pkey(host), top[1]) end
  redis.call('HINCRBY', STATS, 'queued', '-1')
  return top[1], blob
end

-- `packed`: the requests one after another (`_packed` in redisfrontier.py):
-- a head of four big-endian numbers (the fingerprint's length, 0 for dont_filter: never
-- deduplicated; the host's length; the priority; the request's length), then the
-- fingerprint, the host and the request. One argument, not four per request: packing
-- arguments one by one was the worker's largest cost in the client. Returns 1 for each
-- new request, 0 for each seen before.
local function admit(packed)
  local out = {}
  local pos, size = 1, #packed
  while pos <= size do
    local nfp, nhost, prio, nreq
    nfp, nhost, prio, nreq, pos = struct.unpack('>BHiI', packed, pos)
    local fp = string.sub(packed, pos, pos + nfp - 1)
    pos = pos + nfp
    local host = string.sub(packed, pos, pos + nhost - 1)
    pos = pos + nhost
    local blob = string.sub(packed, pos, pos + nreq - 1)
    pos = pos + nreq
    local new = 1
    if nfp > 0 then new = redis.call('SADD', P .. 'seen', fp) end
    if new == 1 then
      push(host, prio, blob, false)
      if not redis.call('ZSCORE', READY, host) then schedule(host) end
    end
    out[#out + 1] = new
  end
  return out
end

-- A lease whose fetch is over frees its host slot (once), though its page is not
-- finished yet: PER_HOST counts requests in flight to the host, as in one process.
local function free(token)
  local lk = P .. 'lease:' .. token
  local host = redis.call('HGET', lk, 'host')
  if host and redis.call('HSETNX', lk, 'freed', '1') == 1 then
    redis.call('HINCRBY', hkey(host), 'inflight', '-1')
    schedule(host)
  end
end

-- A lease's request back to the front of its host's queue; its slot freed.
local function requeue(token)
  local lk = P .. 'lease:' .. token
  local l = redis.call('HMGET', lk, 'host', 'prio', 'req', 'freed')
  redis.call('DEL', lk)
  redis.call('ZREM', LEASES, token)
  if l[1] then
    push(l[1], tonumber(l[2]), l[3], true)
    if not l[4] then redis.call('HINCRBY', hkey(l[1]), 'inflight', '-1') end
    schedule(l[1])
  end
end

local function reap(limit)
  redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
  local expired = redis.call('ZRANGE', LEASES, '-inf', STAMP, 'BYSCORE', 'LIMIT', '0', int(limit))
  for _, token in ipairs(expired) do requeue(token) end
  if #expired > 0 then redis.call('HINCRBY', STATS, 'expired', int(#expired)) end
  return #expired
end
"""

ADMIT = _PRELUDE + "return admit(ARGV[5])\n"

# ARGV[5] worker, ARGV[6] how many, ARGV[7..] tokens of leases whose fetch is over (their
# host slots are freed first). Returns {status, stamp, wait, token, host, request, ...}:
# status "ok", "backlog" (too many results wait for the collector) or "limit" (finished and
# leased pages make the crawl's max_pages), stamp the Redis time (microseconds, a string),
# wait the microseconds until the next host is due (-1: none is ready, every host with
# pending requests is at its cap, or none has any).
LEASE = (
    _PRELUDE
    + """
for i = 7, #ARGV do free(ARGV[i]) end
reap(100)
if BOUND > 0 and redis.call('XLEN', P .. 'results') >= BOUND then
  return {'backlog', STAMP, -1}
end
local want, got = tonumber(ARGV[6]), 0
local limit = tonumber(redis.call('HGET', META, 'max_pages')) or 0
if limit > 0 then
  local left = limit - (tonumber(redis.call('HGET', STATS, 'finished')) or 0)
               - redis.call('ZCARD', LEASES)
  if left <= 0 then return {'limit', STAMP, -1} end
  want = math.min(want, left)
end
local out = {'ok', STAMP, -1}
while got < want do
  local hosts = redis.call('ZRANGE', READY, '-inf', STAMP, 'BYSCORE', 'LIMIT', '0', int(want - got))
  if #hosts == 0 then break end
  for _, host in ipairs(hosts) do
    local prio, blob = pop(host)
    if prio then
      local token = redis.call('INCR', P .. 'fence')
      redis.call('HSET', P .. 'lease:' .. token,
                 'host', host, 'prio', prio, 'req', blob, 'worker', ARGV[5])
      redis.call('ZADD', LEASES, int(NOW + LEASE), token)
      redis.call('HINCRBY', hkey(host), 'inflight', '1')
      redis.call('HSET', hkey(host), 'last', STAMP)
      out[#out + 1] = token
      out[#out + 1] = host
      out[#out + 1] = blob
      got = got + 1
    end
    schedule(host)
  end
end
local first = redis.call('ZRANGE', READY, '0', '0', 'WITHSCORES')
if first[2] then out[3] = math.max(0, tonumber(first[2]) - NOW) end
return out
"""
)

# ARGV[5..] tokens. Returns 1 for each lease extended, 0 for each lost or expired.
RENEW = (
    _PRELUDE
    + """
local out = {}
for i = 5, #ARGV do
  local expiry = redis.call('ZSCORE', LEASES, ARGV[i])
  if expiry and tonumber(expiry) > NOW then
    redis.call('ZADD', LEASES, 'XX', int(NOW + LEASE), ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

# One page's finish: lease `token`'s page has `result` and found the requests `packed`
# (as for admit); `leased` is the request as the lease gave it ('': not checked). A lease
# whose request is not the one given is refused too: after Redis lost the last second of
# its append-only file (a machine crash), the fence counter may hand out a token again,
# for another request. Returns "ok" with the new-request flags and their count, or
# "refused", or "again" (finished before: a retry after a lost reply).
_FINISH = """
local function finish(token, result, leased, packed)
  if redis.call('ZSCORE', FINISHED, token) then return 'again' end
  local expiry = redis.call('ZSCORE', LEASES, token)
  if not expiry or tonumber(expiry) <= NOW then
    if expiry then
      requeue(token)
      redis.call('HINCRBY', STATS, 'expired', '1')
    end
    redis.call('HINCRBY', STATS, 'refused', '1')
    return 'refused'
  end
  local lk = P .. 'lease:' .. token
  local l = redis.call('HMGET', lk, 'host', 'req', 'freed')
  if leased ~= '' and l[2] ~= leased then
    redis.call('HINCRBY', STATS, 'refused', '1')
    return 'refused'
  end
  local new = admit(packed)
  local count = 0
  for _, flag in ipairs(new) do count = count + flag end
  redis.call('XADD', P .. 'results', '*', 'token', token, 'host', l[1], 'request', l[2],
             'result', result, 'new', int(count))
  redis.call('DEL', lk)
  redis.call('ZREM', LEASES, token)
  if not l[3] then  -- a slot freed at the fetch's end was rescheduled then
    redis.call('HINCRBY', hkey(l[1]), 'inflight', '-1')
    schedule(l[1])
  end
  redis.call('HINCRBY', STATS, 'finished', '1')
  redis.call('ZADD', FINISHED, STAMP, token)
  return 'ok', new, count
end
"""

# ARGV[5] token, ARGV[6] the result, ARGV[7] the request as leased, ARGV[8] the new
# requests, packed. Returns {"ok", stamp, new flags...}, {"refused", stamp} or
# {"again", stamp}.
FINISH = (
    _PRELUDE
    + _FINISH
    + """
local status, new = finish(ARGV[5], ARGV[6], ARGV[7], ARGV[8])
redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
local out = {status, STAMP}  -- not unpack(new): Lua's stack takes 8,000 values at most
if new then
  for _, flag in ipairs(new) do out[#out + 1] = flag end
end
return out
"""
)

# A worker's batch of pages finished in one script (each page as FINISH has it, the batch
# atomic as a whole): ARGV[5..] groups of token, result, request as leased, new requests
# packed. Returns {stamp, status, how many were new, status, ...}: one call, not one per
# page, and no flag per link to read back.
FINISH_MANY = (
    _PRELUDE
    + _FINISH
    + """
local out = {STAMP}
for i = 5, #ARGV, 4 do
  local status, _, count = finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  out[#out + 1] = status
  out[#out + 1] = count or 0
end
redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
return out
"""
)

# ARGV[5] host, ARGV[6] microseconds, ARGV[7] reason: "Crawl-delay" raises the host's
# delay between hand-outs; anything else (Retry-After) holds the host that long from now.
HOLD = (
    _PRELUDE
    + """
local host, span, reason = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local hk = hkey(host)
if reason == 'Crawl-delay' then
  if span > (tonumber(redis.call('HGET', hk, 'delay')) or 0) then
    redis.call('HSET', hk, 'delay', span)
  end
elseif NOW + span > (tonumber(redis.call('HGET', hk, 'held')) or 0) then
  redis.call('HSET', hk, 'held', NOW + span, 'reason', reason)
end
if redis.call('ZSCORE', READY, host) then schedule(host) end
return 1
"""
)

REAP = _PRELUDE + "return reap(tonumber(ARGV[5]))\n"

# ARGV[5] host, ARGV[6] worker. {"text", robots.txt} if stored; {"fetch"} if the caller
# now holds the lock (for one lease time) and must fetch it; {"wait"} if another does.
ROBOTS = (
    _PRELUDE
    + """
local text = redis.call('HGET', P .. 'robots', ARGV[5])
if text then return {'text', text} end
local lock = redis.call('SET', P .. 'robots:' .. ARGV[5], ARGV[6], 'NX',
                        'PX', math.floor(LEASE / 1000))
if lock then return {'fetch'} end
return {'wait'}
"""
)

# ARGV[5] host, ARGV[6] robots.txt: stored for every process, the lock released, the host
# known (with PROBE its other requests are ready at once).
SET_ROBOTS = (
    _PRELUDE
    + """
redis.call('HSET', P .. 'robots', ARGV[5], ARGV[6])
redis.call('DEL', P .. 'robots:' .. ARGV[5])
redis.call('HSET', hkey(ARGV[5]), 'known', 1)
schedule(ARGV[5])
return 1
"""
)

# ARGV[5] spider, ARGV[6] a new token, ARGV[7] max_pages, ARGV[8] probe (1 or 0), ARGV[9]
# the start requests, packed as for admit. A new crawl is created and seeded: {"created",
# token}. One of the same spider is set running again: {"joined", its token}. Another
# spider's crawl is left alone: {"other", its spider}.
BEGIN = (
    _PRELUDE
    + """
local m = redis.call('HMGET', META, 'spider', 'token')
if m[1] then
  if m[1] ~= ARGV[5] then return {'other', m[1]} end
  redis.call('HSET', META, 'state', 'running')
  return {'joined', m[2]}
end
redis.call('HSET', META, 'spider', ARGV[5], 'token', ARGV[6], 'created', STAMP,
           'state', 'running', 'max_pages', ARGV[7], 'probe', ARGV[8])
PROBE = ARGV[8] == '1'
admit(ARGV[9])
return {'created', ARGV[6]}
"""
)

# ARGV[5] state. 1 if set, 0 if the crawl has no metadata (nothing is created).
SET_STATE = (
    _PRELUDE
    + """
if redis.call('EXISTS', META) == 0 then return 0 end
redis.call('HSET', META, 'state', ARGV[5])
return 1
"""
)

# ARGV[5] worker, ARGV[6] its JSON: stored with Redis's time. Returns the stamp.
HEARTBEAT = (
    _PRELUDE
    + """
redis.call('HSET', P .. 'workers', ARGV[5], STAMP .. ' ' .. ARGV[6])
return STAMP
"""
)

# ARGV[5] microseconds. Returns {stamp, worker, heartbeat, JSON, ...} of the workers seen
# within that span; the others are deleted. O(workers registered).
WORKERS = (
    _PRELUDE
    + """
local key = P .. 'workers'
local all = redis.call('HGETALL', key)
local out = {STAMP}
for i = 1, #all, 2 do
  local space = string.find(all[i + 1], ' ', 1, true)
  local beat = tonumber(string.sub(all[i + 1], 1, space - 1))
  if NOW - beat > tonumber(ARGV[5]) then
    redis.call('HDEL', key, all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = string.sub(all[i + 1], 1, space - 1)
    out[#out + 1] = string.sub(all[i + 1], space + 1)
  end
end
return out
"""
)

# Returns {queued, leased, seen, results, finished, refused, expired, max_pages}.
COUNTS = (
    _PRELUDE
    + """
local s = redis.call('HMGET', STATS, 'queued', 'finished', 'refused', 'expired')
return {tonumber(s[1]) or 0, redis.call('ZCARD', LEASES), redis.call('SCARD', P .. 'seen'),
        redis.call('XLEN', P .. 'results'), tonumber(s[2]) or 0, tonumber(s[3]) or 0,
        tonumber(s[4]) or 0, tonumber(redis.call('HGET', META, 'max_pages')) or 0}
"""
)
