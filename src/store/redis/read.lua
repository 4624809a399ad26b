-- hamlet: everything a check or a learn reads, in one call.
-- KEYS[1]  the model's state hash (its hash tag places the model on one slot)
-- ARGV[1]  the model's key prefix; ARGV[2] the number of journal digests;
-- then     (BH, digest) pairs, then (BH, text, hash) triples for tokens
--          (hash: the token hash, 8 bytes, for long tokens only, else '')
-- Returns  {state fields, journal entries ('' = none), records ('' = none)}
local base = ARGV[1]
local xkey = base .. ':x'
local st = redis.call('HMGET', KEYS[1], 'ts', 'th', 'ms', 'mh', 'bias', 'm0', 'm1', 'm2', 'gv')
local jL, jS = levels(KEYS[1], 'j')
local tL, tS = levels(KEYS[1], 't')
local nj = tonumber(ARGV[2])
local journal = {}
local i = 3
for k = 1, nj do
  journal[k] = redis.call('HGET', bucket(base, 'j', jL, jS, tonumber(ARGV[i])), ARGV[i + 1]) or ''
  i = i + 2
end
local records = {}
local n = 0
while i <= #ARGV do
  local field = token_field(xkey, ARGV[i + 1], ARGV[i + 2])
  n = n + 1
  records[n] = redis.call('HGET', bucket(base, 't', tL, tS, tonumber(ARGV[i])), field) or ''
  i = i + 3
end
return {st, journal, records}
