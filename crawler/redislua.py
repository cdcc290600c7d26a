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
                    flight until its robots.txt is known), format (of the requests'
                    blobs, crawler/wire.py)
    workers         HASH worker -> "<heartbeat time> <JSON the worker sent>"

A script that changes `stats`, hosts' `inflight` or their place in `ready` tallies the
changes as it goes and writes them once as it ends, on every path (`run`): one HINCRBY per
counter and per host, one schedule per host, however many requests it moved. The scripts
use commands of Redis 6.2 (LPOP with a count, SMISMEMBER, ZMSCORE).
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

-- redis.call(cmd, key, items...) (key nil: none) a thousand items at a time (unpack()
-- takes about 8,000 values); the replies joined, for the commands that answer per item.
local function call_many(cmd, key, items)
  local out = {}
  for i = 1, #items, 1000 do
    local last, part = math.min(i + 999, #items), nil
    if key then
      part = redis.call(cmd, key, unpack(items, i, last))
    else
      part = redis.call(cmd, unpack(items, i, last))
    end
    if type(part) == 'table' then
      for _, v in ipairs(part) do out[#out + 1] = v end
    end
  end
  return out
end

-- Changes a script makes to the `stats` counters and to host slots are tallied here and
-- written once, by run()'s epilogue (one HINCRBY per counter and per host, not one per
-- request); the hosts whose place in `ready` may have changed are scheduled once there.
local counted, freed, dirty, grown, closed = {}, {}, {}, {}, {}
local function count(name, n) counted[name] = (counted[name] or 0) + n end
local function stat(name)  -- a counter as it stands, with this script's changes so far
  return (tonumber(redis.call('HGET', STATS, name)) or 0) + (counted[name] or 0)
end
local function release(host)  -- one of the host's slots is free
  freed[host] = (freed[host] or 0) + 1
  dirty[host] = true
end
local function queued(host) grown[host] = true end  -- the host has more pending
local function close(token) closed[#closed + 1] = token end  -- a lease finished

-- The finished leases gone from `leases` and their hashes deleted, and their tokens into
-- `finished`: one command each for the lot, not three a page.
local function close_all()
  if #closed == 0 then return end
  local keys, members = {}, {}
  for i, token in ipairs(closed) do
    keys[i] = P .. 'lease:' .. token
    members[2 * i - 1] = STAMP
    members[2 * i] = token
  end
  call_many('ZREM', LEASES, closed)
  call_many('DEL', nil, keys)
  call_many('ZADD', FINISHED, members)
  closed = {}
end

-- Where a host belongs in `ready`, from its hash's inflight, last, delay, held, known
-- (`h`, as HMGET reads them) and whether it has pending requests. It is there while it
-- has pending requests and a free slot, scored by the time it may next be served: DELAY
-- (or its Crawl-delay) after its last hand-out, and not before its Retry-After hold. With
-- PROBE its slots are one until its robots.txt is known, so that one request fetches it
-- before the others go out.
local function place(host, h, pending)
  local cap = PER_HOST
  if PROBE and h[5] ~= '1' then cap = 1 end
  if not pending or (tonumber(h[1]) or 0) >= cap then
    redis.call('ZREM', READY, host)
    return
  end
  local delay = math.max(DELAY, tonumber(h[3]) or 0)
  local due = math.max((tonumber(h[2]) or 0) + delay, tonumber(h[4]) or 0)
  redis.call('ZADD', READY, int(due), host)
end

local function load(host)
  return redis.call('HMGET', hkey(host), 'inflight', 'last', 'delay', 'held', 'known')
end

local function schedule(host)
  place(host, load(host), redis.call('EXISTS', pkey(host)) == 1)
end

-- The tallied slots written and the hosts they changed scheduled; a host that only got
-- more pending requests needs it only if it is not in `ready` already (its due time and
-- slots are as they were).
local function settle()
  for host, n in pairs(freed) do redis.call('HINCRBY', hkey(host), 'inflight', int(-n)) end
  for host in pairs(dirty) do schedule(host) end
  for host in pairs(grown) do
    if not dirty[host] and not redis.call('ZSCORE', READY, host) then schedule(host) end
  end
  freed, dirty, grown = {}, {}, {}
end

local function flush()
  for name, n in pairs(counted) do
    if n ~= 0 then redis.call('HINCRBY', STATS, name, int(n)) end
  end
  counted = {}
end

-- A script's body, then the tallies written whichever way it ends: a count lost would
-- leave `queued` wrong and the crawl's end undetected. A command that fails midway (its
-- writes before it are kept, as Redis keeps them) still has its counts written, and its
-- error is raised again as Redis gave it ({err = ...} keeps a code such as WRONGTYPE).
local function run(main)
  local ok, reply = pcall(main)
  close_all()
  flush()
  settle()
  if not ok then
    reply = tostring(reply)
    if not string.find(reply, '^%u+ ') then reply = 'ERR ' .. reply end
    error({err = reply})
  end
  return reply
end

-- A request to the front of its host's queue (a lease's, given back).
local function push_front(host, prio, blob)
  local name = int(prio)
  redis.call('LPUSH', qkey(host, name), blob)
  redis.call('ZADD', pkey(host), int(-prio), name)
  count('queued', 1)
  queued(host)
end

-- Up to `n` of the host's pending requests, highest priority first, each {prio, blob};
-- and whether it has more. LPOP with a count needs Redis 6.2.
local function pop(host, n)
  local pk, taken, more = pkey(host), {}, true
  while #taken < n do
    local top = redis.call('ZRANGE', pk, '0', '0')
    if #top == 0 then
      more = false
      break
    end
    local q = qkey(host, top[1])
    local asked = n - #taken
    local blobs = redis.call('LPOP', q, int(asked)) or {}
    for _, blob in ipairs(blobs) do taken[#taken + 1] = {top[1], blob} end
    if #blobs < asked then
      redis.call('ZREM', pk, top[1])
    elseif redis.call('LLEN', q) == 0 then
      redis.call('ZREM', pk, top[1])
      more = redis.call('EXISTS', pk) == 1
    end
  end
  count('queued', -#taken)
  return taken, more
end

-- `packed`: the requests one after another (`_packed` in redisfrontier.py):
-- a head of four big-endian numbers (the fingerprint's length, 0 for dont_filter: never
-- deduplicated; the host's length; the priority; the request's length), then the
-- fingerprint, the host and the request. One argument, not four per request: packing
-- arguments one by one was the worker's largest cost in the client. Returns 1 for each
-- new request, 0 for each seen before.
local function admit(packed)
  -- Where each request lies in `packed`: only the new ones are cut out of it (a worker
  -- sends links other workers have sent before).
  local starts, nfps, nhosts, prios, nreqs, fps = {}, {}, {}, {}, {}, {}
  local pos, size = 1, #packed
  while pos <= size do
    local k, nfp, nhost, prio, nreq = #starts + 1, nil, nil, nil, nil
    nfp, nhost, prio, nreq, pos = struct.unpack('>BHiI', packed, pos)
    starts[k], nfps[k], nhosts[k], prios[k], nreqs[k] = pos, nfp, nhost, prio, nreq
    if nfp > 0 then fps[#fps + 1] = string.sub(packed, pos, pos + nfp - 1) end
    pos = pos + nfp + nhost + nreq
  end
  -- Which fingerprints are new, in one SMISMEMBER (Redis 6.2) and one SADD, not one SADD
  -- each: a fingerprint twice in the batch is new the first time only.
  local known = call_many('SMISMEMBER', P .. 'seen', fps)
  local fresh, added, queues, order, out, j = {}, {}, {}, {}, {}, 0
  for k = 1, #starts do
    local new = 1
    if nfps[k] > 0 then
      j = j + 1
      local fp = fps[j]
      if known[j] == 1 or added[fp] then
        new = 0
      else
        added[fp] = true
        fresh[#fresh + 1] = fp
      end
    end
    if new == 1 then  -- to the back of its queue: one RPUSH per queue, in order
      local at = starts[k] + nfps[k]
      local host = string.sub(packed, at, at + nhosts[k] - 1)
      at = at + nhosts[k]
      local byprio = queues[host] or {}
      queues[host] = byprio
      local blobs = byprio[prios[k]]
      if not blobs then
        blobs = {}
        byprio[prios[k]] = blobs
        order[#order + 1] = {host, prios[k], blobs}
      end
      blobs[#blobs + 1] = string.sub(packed, at, at + nreqs[k] - 1)
    end
    out[k] = new
  end
  call_many('SADD', P .. 'seen', fresh)
  for _, g in ipairs(order) do
    local host, name, blobs = g[1], int(g[2]), g[3]
    call_many('RPUSH', qkey(host, name), blobs)
    redis.call('ZADD', pkey(host), int(-g[2]), name)
    count('queued', #blobs)
    queued(host)
  end
  return out
end

-- A lease whose fetch is over frees its host slot (once), though its page is not
-- finished yet: PER_HOST counts requests in flight to the host, as in one process.
local function free(token)
  local lk = P .. 'lease:' .. token
  local host = redis.call('HGET', lk, 'host')
  if host and redis.call('HSETNX', lk, 'freed', '1') == 1 then release(host) end
end

-- A lease's request back to the front of its host's queue; its slot freed.
local function requeue(token)
  local lk = P .. 'lease:' .. token
  local l = redis.call('HMGET', lk, 'host', 'prio', 'req', 'freed')
  redis.call('DEL', lk)
  redis.call('ZREM', LEASES, token)
  if l[1] then
    push_front(l[1], tonumber(l[2]), l[3])
    if not l[4] then release(l[1]) end
  end
end

local function reap(limit)
  redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
  local expired = redis.call('ZRANGE', LEASES, '-inf', STAMP, 'BYSCORE', 'LIMIT', '0', int(limit))
  for _, token in ipairs(expired) do requeue(token) end
  count('expired', #expired)
  return #expired
end
"""

ADMIT = _PRELUDE + "return run(function() return admit(ARGV[5]) end)\n"

# ARGV[5] worker, ARGV[6] how many, ARGV[7..] tokens of leases whose fetch is over (their
# host slots are freed first). Returns {status, stamp, wait, token, host, request, ...}:
# status "ok", "backlog" (too many results wait for the collector) or "limit" (finished and
# leased pages make the crawl's max_pages), stamp the Redis time (microseconds, a string),
# wait the microseconds until the next host is due (-1: none is ready, every host with
# pending requests is at its cap, or none has any).
LEASE = (
    _PRELUDE
    + """
-- Up to `share` of a ready host's requests leased, appended to `out`; how many. A host
-- spaced by DELAY or a Crawl-delay gets one: its next is due that long after. One without
-- gets as many as its free slots take, under one INCRBY of the fence, one HINCRBY of its
-- inflight and one ZADD to `leases`.
local function take(host, share, out)
  local h = load(host)
  local cap = PER_HOST
  if PROBE and h[5] ~= '1' then cap = 1 end
  local n = math.min(share, cap - (tonumber(h[1]) or 0))
  if DELAY > 0 or (tonumber(h[3]) or 0) > 0 then n = math.min(n, 1) end
  local taken, more = {}, true
  if n > 0 then taken, more = pop(host, n) end
  if #taken > 0 then
    local first = redis.call('INCRBY', P .. 'fence', int(#taken)) - #taken + 1
    local expiry, members = int(NOW + LEASE), {}
    for k, t in ipairs(taken) do
      local token = first + k - 1
      redis.call('HSET', P .. 'lease:' .. int(token),
                 'host', host, 'prio', t[1], 'req', t[2], 'worker', ARGV[5])
      members[#members + 1] = expiry
      members[#members + 1] = int(token)
      out[#out + 1] = token
      out[#out + 1] = host
      out[#out + 1] = t[2]
    end
    call_many('ZADD', LEASES, members)
    h[1] = redis.call('HINCRBY', hkey(host), 'inflight', int(#taken))
    h[2] = STAMP
    redis.call('HSET', hkey(host), 'last', STAMP)
  end
  place(host, h, more)
  return #taken
end

local function main()
  for i = 7, #ARGV do free(ARGV[i]) end
  reap(100)
  settle()  -- the freed and re-queued hosts in `ready` before it is read
  if BOUND > 0 and redis.call('XLEN', P .. 'results') >= BOUND then
    return {'backlog', STAMP, -1}
  end
  local want, got = tonumber(ARGV[6]), 0
  local limit = tonumber(redis.call('HGET', META, 'max_pages')) or 0
  if limit > 0 then
    local left = limit - stat('finished') - redis.call('ZCARD', LEASES)
    if left <= 0 then return {'limit', STAMP, -1} end
    want = math.min(want, left)
  end
  local out = {'ok', STAMP, -1}
  while got < want do
    local hosts = redis.call('ZRANGE', READY, '-inf', STAMP, 'BYSCORE', 'LIMIT', '0',
                             int(want - got))
    if #hosts == 0 then break end
    -- Each host its fair share of what is still wanted, so that many ready hosts share a
    -- call; a host with fewer pending leaves the rest to the next round. A host taken
    -- nothing of (no free slot or nothing pending) has left `ready`.
    for i, host in ipairs(hosts) do
      local share = math.ceil((want - got) / (#hosts - i + 1))
      if share > 0 then got = got + take(host, share, out) end
    end
  end
  local first = redis.call('ZRANGE', READY, '0', '0', 'WITHSCORES')
  if first[2] then out[3] = math.max(0, tonumber(first[2]) - NOW) end
  return out
end

return run(main)
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
# (as for admit); `leased` is the request as the lease gave it ('': not checked); `done`
# and `expiry` are the token's scores in `finished` and `leases` (false: not there). A
# lease whose request is not the one given is refused too: after Redis lost the last second
# of its append-only file (a machine crash), the fence counter may hand out a token again,
# for another request. Returns "ok" with the new-request flags and their count, or
# "refused", or "again" (finished before: a retry after a lost reply).
_FINISH = """
local function finish(token, result, leased, packed, done, expiry)
  if done then return 'again' end
  if not expiry or tonumber(expiry) <= NOW then
    if expiry then
      requeue(token)
      count('expired', 1)
    end
    count('refused', 1)
    return 'refused'
  end
  local lk = P .. 'lease:' .. token
  local l = redis.call('HMGET', lk, 'host', 'req', 'freed')
  if leased ~= '' and l[2] ~= leased then
    count('refused', 1)
    return 'refused'
  end
  local new = admit(packed)
  local admitted = 0
  for _, flag in ipairs(new) do admitted = admitted + flag end
  redis.call('XADD', P .. 'results', '*', 'token', token, 'host', l[1], 'request', l[2],
             'result', result, 'new', int(admitted))
  close(token)
  if not l[3] then release(l[1]) end  -- a slot freed at the fetch's end was counted then
  count('finished', 1)
  return 'ok', new, admitted
end
"""

# ARGV[5] token, ARGV[6] the result, ARGV[7] the request as leased, ARGV[8] the new
# requests, packed. Returns {"ok", stamp, new flags...}, {"refused", stamp} or
# {"again", stamp}.
FINISH = (
    _PRELUDE
    + _FINISH
    + """
local function main()
  local token = ARGV[5]
  local status, new = finish(token, ARGV[6], ARGV[7], ARGV[8],
                             redis.call('ZSCORE', FINISHED, token),
                             redis.call('ZSCORE', LEASES, token))
  redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
  local out = {status, STAMP}  -- not unpack(new): Lua's stack takes 8,000 values at most
  if new then
    for _, flag in ipairs(new) do out[#out + 1] = flag end
  end
  return out
end

return run(main)
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
local function main()
  local tokens = {}
  for i = 5, #ARGV, 4 do tokens[#tokens + 1] = ARGV[i] end
  -- Every token's scores in two ZMSCOREs (Redis 6.2), not two ZSCOREs a page. A token a
  -- second time in the batch: "again" if its first finish went through (its close is
  -- not written yet), else looked up again (a refusal re-queues at once).
  local done = call_many('ZMSCORE', FINISHED, tokens)
  local expiry = call_many('ZMSCORE', LEASES, tokens)
  local out, met = {STAMP}, {}
  for k, token in ipairs(tokens) do
    local i = 5 + (k - 1) * 4
    if met[token] == 'ok' then
      done[k] = STAMP
    elseif met[token] then
      done[k] = redis.call('ZSCORE', FINISHED, token)
      expiry[k] = redis.call('ZSCORE', LEASES, token)
    end
    local status, _, admitted = finish(token, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                                       done[k], expiry[k])
    met[token] = status
    out[#out + 1] = status
    out[#out + 1] = admitted or 0
  end
  redis.call('ZREMRANGEBYSCORE', FINISHED, '-inf', int(NOW - KEEP_FINISHED))
  return out
end

return run(main)
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

REAP = _PRELUDE + "return run(function() return reap(tonumber(ARGV[5])) end)\n"

# ARGV[5..] tokens of leases a stopping worker never started: each still held goes back to
# the front of its host's queue now, not when it expires. Returns how many went back.
GIVE_BACK = (
    _PRELUDE
    + """
return run(function()
  local back = 0
  for i = 5, #ARGV do
    if redis.call('ZSCORE', LEASES, ARGV[i]) then
      requeue(ARGV[i])
      back = back + 1
    end
  end
  return back
end)
"""
)

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
# the format of the requests' blobs, ARGV[10] the start requests, packed as for admit. A
# new crawl is created and seeded: {"created", token}. One of the same spider is set
# running again, under this run's max_pages: {"joined", its token}. Another spider's
# crawl is left alone: {"other", its spider}; so is one whose blobs are of another format
# (written by another version: "1" before the format was recorded): {"format", it}.
BEGIN = (
    _PRELUDE
    + """
local function main()
  local m = redis.call('HMGET', META, 'spider', 'token', 'format')
  if m[1] then
    if m[1] ~= ARGV[5] then return {'other', m[1]} end
    if (m[3] or '1') ~= ARGV[9] then return {'format', m[3] or '1'} end
    redis.call('HSET', META, 'state', 'running', 'max_pages', ARGV[7])  -- this run's bound
    return {'joined', m[2]}
  end
  redis.call('HSET', META, 'spider', ARGV[5], 'token', ARGV[6], 'created', STAMP,
             'state', 'running', 'max_pages', ARGV[7], 'probe', ARGV[8], 'format', ARGV[9])
  PROBE = ARGV[8] == '1'
  admit(ARGV[10])
  return {'created', ARGV[6]}
end

return run(main)
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
