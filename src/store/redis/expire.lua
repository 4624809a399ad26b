-- hamlet: drops old entries from a range of buckets of one kind, inside Redis.
-- KEYS[1] the state hash; ARGV: prefix, today, max age, hapax age, first
-- bucket (0-based, in `bucket_list` order), how many buckets, kind ('t' or
-- 'j').
-- A token goes when unseen for more than max age days, or when it was seen
-- in one message only (spam + ham <= 1) and unseen for more than hapax age.
-- A journal entry (class, weight, auto, day as 4 little-endian bytes) goes
-- when its message was learned more than max age days ago.
-- Returns {examined, removed, buckets in all}.
local base = ARGV[1]
local xkey = base .. ':x'
local today, max_age, hapax_age = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local first, count, kind = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local L, S = levels(KEYS[1], kind)
local keys = bucket_list(base, kind, L, S)
local examined, removed = 0, 0
for b = first + 1, math.min(first + count, #keys) do
  local key = keys[b]
  local all = redis.call('HGETALL', key)
  for k = 1, #all, 2 do
    local doomed
    if kind == 't' then
      local s, h, d = unpack_record(all[k + 1])
      local age = today - d
      doomed = age > max_age or (s + h <= 1 and age > hapax_age)
    else
      local v = all[k + 1]
      if #v == 7 then
        local d = string.byte(v, 4) + 256 * (string.byte(v, 5) + 256 * (string.byte(v, 6) + 256 * string.byte(v, 7)))
        doomed = today - d > max_age
      end
    end
    examined = examined + 1
    if doomed then
      removed = removed + redis.call('HDEL', key, all[k])
      if kind == 't' and string.byte(all[k], 1) == 0 then redis.call('HDEL', xkey, all[k]) end
    end
  end
end
if removed > 0 then redis.call('HINCRBY', KEYS[1], 'n' .. kind, -removed) end
return {examined, removed, #keys}
