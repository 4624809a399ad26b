-- hamlet: one write transaction, applied atomically as changes against
-- what the writer read, so writers on several hosts lose no update.
-- KEYS[1] the state hash, KEYS[2] the 4-gram weights (BITFIELD u32 of f32 bits)
-- ARGV: prefix, the levels the buckets are named by (tL tS jL jS),
--       #journal, (bucket, digest, expected, new)*  ('' = none)
--       6 integer deltas (ts th ms mh ss sh), 5 (read, new) float pairs (bias m0 m1 m2 m3),
--       4 floats set as they are (p0 p1 p2 p3; '' = unchanged),
--       #tokens, (bucket, text, hash, read record, new record)*  ('' = none),
--       the 4-gram changes: 12 bytes each (slot, read bits, new bits; big-endian)
-- Returns {'ok', gram version, gram conflicts, {levels now}};
-- {'conflict', digest}: a journal entry changed since it was read; or
-- {'levels', {levels now}}: a split moved the buckets. Either way nothing
-- was applied.
local base = ARGV[1]
local xkey = base .. ':x'
local moved = levels_moved(KEYS[1], 2)
if moved then return {'levels', moved} end
local nj = tonumber(ARGV[6])
local i = 7
for k = 1, nj do
  local cur = redis.call('HGET', ARGV[i], ARGV[i + 1]) or ''
  if cur ~= ARGV[i + 2] then return {'conflict', ARGV[i + 1]} end
  i = i + 4
end
i = 7
for k = 1, nj do
  local key = ARGV[i]
  if ARGV[i + 3] == '' then
    redis.call('HINCRBY', KEYS[1], 'nj', -redis.call('HDEL', key, ARGV[i + 1]))
  else
    redis.call('HINCRBY', KEYS[1], 'nj', redis.call('HSET', key, ARGV[i + 1], ARGV[i + 3]))
  end
  i = i + 4
end
for _, name in ipairs({'ts', 'th', 'ms', 'mh', 'ss', 'sh'}) do
  local d = tonumber(ARGV[i])
  if d ~= 0 and redis.call('HINCRBY', KEYS[1], name, d) < 0 then
    redis.call('HSET', KEYS[1], name, 0)
  end
  i = i + 1
end
for _, name in ipairs({'bias', 'm0', 'm1', 'm2', 'm3'}) do
  local read, new = ARGV[i], ARGV[i + 1]
  if read ~= new then
    local cur = tonumber(redis.call('HGET', KEYS[1], name) or '0')
    if cur == tonumber(read) then
      redis.call('HSET', KEYS[1], name, new)
    else
      redis.call('HSET', KEYS[1], name, string.format('%.17g', cur + (tonumber(new) - tonumber(read))))
    end
  end
  i = i + 2
end
for _, name in ipairs({'p0', 'p1', 'p2', 'p3'}) do
  if ARGV[i] ~= '' then redis.call('HSET', KEYS[1], name, ARGV[i]) end
  i = i + 1
end
local nt = tonumber(ARGV[i])
i = i + 1
local added = 0
for k = 1, nt do
  local text, read, new = ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  local key = ARGV[i]
  local field, long = token_field(xkey, text, ARGV[i + 2])
  local cur = redis.call('HGET', key, field) or ''
  local out = new
  if cur ~= read then
    local cs, ch, cd, cw = unpack_record(cur)
    local rs, rh, _, rw = unpack_record(read)
    local ns, nh, nd, nw = unpack_record(new)
    local s = math.min(math.max(cs + ns - rs, 0), 4294967295)
    local h = math.min(math.max(ch + nh - rh, 0), 4294967295)
    if s == 0 and h == 0 then
      out = ''
    else
      out = pack_record(s, h, math.max(cd, nd), cw + (nw - rw))
    end
  end
  if out == '' then
    if cur ~= '' then
      redis.call('HDEL', key, field)
      if long then redis.call('HDEL', xkey, field) end
      added = added - 1
    end
  else
    redis.call('HSET', key, field, out)
    if cur == '' then
      added = added + 1
      if long then redis.call('HSET', xkey, field, text) end
    end
  end
  i = i + 5
end
if added ~= 0 then redis.call('HINCRBY', KEYS[1], 'nt', added) end
grow(KEYS[1], base, 't', 'nt', 256)
grow(KEYS[1], base, 'j', 'nj', 256)
local grams = ARGV[i] or ''
local conflicts = 0
local gv = tonumber(redis.call('HGET', KEYS[1], 'gv') or '0')
if #grams > 0 then
  local f = function(b) return (struct.unpack('>f', struct.pack('>I4', b))) end
  local pos = 1
  while pos <= #grams do
    local get, want = {}, {}
    local c = 0
    while pos <= #grams and c < 1000 do
      local slot, read, new = struct.unpack('>I4I4I4', grams, pos)
      pos = pos + 12
      c = c + 1
      want[c] = {slot, read, new}
      get[#get + 1] = 'GET'
      get[#get + 1] = 'u32'
      get[#get + 1] = '#' .. slot
    end
    local cur = redis.call('BITFIELD', KEYS[2], unpack(get))
    local set = {}
    for k = 1, c do
      local w = want[k]
      local bits = w[3]
      if cur[k] ~= w[2] then
        conflicts = conflicts + 1
        bits = (struct.unpack('>I4', struct.pack('>f', f(cur[k]) + (f(w[3]) - f(w[2])))))
      end
      set[#set + 1] = 'SET'
      set[#set + 1] = 'u32'
      set[#set + 1] = '#' .. w[1]
      set[#set + 1] = bits
    end
    redis.call('BITFIELD', KEYS[2], unpack(set))
  end
  gv = redis.call('HINCRBY', KEYS[1], 'gv', 1)
end
local lv = redis.call('HMGET', KEYS[1], 'tL', 'tS', 'jL', 'jS')
return {'ok', gv, conflicts, lv}
