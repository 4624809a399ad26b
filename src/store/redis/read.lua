-- hamlet: a read on a Redis Cluster, where a pipeline cannot be used (see
-- `RedisStore::hmgets`): HMGET for each (key, n, n fields) of ARGV, the
-- replies in order. KEYS[1] (the model's state hash) names the slot.
local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  out[#out + 1] = redis.call('HMGET', ARGV[i], unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
return out
