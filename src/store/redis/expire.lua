-- hamlet: drops old tokens from a range of token buckets, inside Redis.
-- KEYS[1] the state hash; ARGV: prefix, today, max age, hapax age, first
-- bucket (0-based, in `bucket_list` order), how many buckets.
-- A token goes when unseen for more than max age days, or when it was seen
-- in one message only (spam + ham <= 1) and unseen for more than hapax age.
-- Returns {examined, removed, buckets in all}.
local base = ARGV[1]
local xkey = base .. ':x'
local today, max_age, hapax_age = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local first, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local L, S = levels(KEYS[1], 't')
local keys = bucket_list(base, 't', L, S)
local examined, removed = 0, 0
for b = first + 1, math.min(first + count, #keys) do
  local key = keys[b]
  local all = redis.call('HGETALL', key)
  for k = 1, #all, 2 do
    local s, h, d = unpack_record(all[k + 1])
    local age = today - d
    examined = examined + 1
    if age > max_age or (s + h <= 1 and age > hapax_age) then
      removed = removed + redis.call('HDEL', key, all[k])
      if string.byte(all[k], 1) == 0 then redis.call('HDEL', xkey, all[k]) end
    end
  end
end
if removed > 0 then redis.call('HINCRBY', KEYS[1], 'nt', -removed) end
return {examined, removed, #keys}
