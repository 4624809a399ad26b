-- hamlet: shared functions of the model's scripts (prepended to each).
--
-- Buckets: linear hashing on a bucket hash BH in [0, P) of each field
-- (P = 2097143, the prime below 2^21): BH = fold of h = (h * 257 + byte + 1)
-- mod P over the field's bytes (the first 9 of a field that starts with
-- NUL), which Rust computes too. Each kind ('t' tokens, 'j' journal) has a
-- level L and a split pointer S in the state hash; at level L a field is in
-- bucket floor(BH * 2^L / P), and buckets below S have been split in two at
-- level L + 1. A bucket is <prefix>:<kind>:<L>:<n>.
--
-- The client names the buckets (from the levels it last saw) and sends the
-- levels with them; a script checks them first (`levels_moved`) and, if a
-- split moved them, answers the levels now and does nothing: building key
-- names in Lua cost ~2 µs a token, most of a check's time in Redis.
local P = 2097143

local function bh_of(field)
  local h = 0
  local n = #field
  -- A long token's field (NUL, its hash, perhaps its text): the first 9 bytes.
  if string.byte(field, 1) == 0 then n = math.min(n, 9) end
  for k = 1, n do
    h = (h * 257 + string.byte(field, k) + 1) % P
  end
  return h
end

local function levels(state, kind)
  local v = redis.call('HMGET', state, kind .. 'L', kind .. 'S')
  return tonumber(v[1] or '4'), tonumber(v[2] or '0')
end

-- The levels now {tL, tS, jL, jS} if they differ from ARGV[at .. at + 3]
-- (the ones the client named buckets by), else nil.
local function levels_moved(state, at)
  local v = redis.call('HMGET', state, 'tL', 'tS', 'jL', 'jS')
  local now = {tonumber(v[1] or '4'), tonumber(v[2] or '0'), tonumber(v[3] or '4'), tonumber(v[4] or '0')}
  for k = 1, 4 do
    if now[k] ~= tonumber(ARGV[at + k - 1]) then return now end
  end
  return nil
end

-- Every bucket of `kind`, in BH order.
local function bucket_list(base, kind, L, S)
  local keys = {}
  for b = 0, 2 ^ L - 1 do
    if b < S then
      keys[#keys + 1] = base .. ':' .. kind .. ':' .. (L + 1) .. ':' .. (2 * b)
      keys[#keys + 1] = base .. ':' .. kind .. ':' .. (L + 1) .. ':' .. (2 * b + 1)
    else
      keys[#keys + 1] = base .. ':' .. kind .. ':' .. L .. ':' .. b
    end
  end
  return keys
end

-- Splits buckets of `kind` while it holds more than 64 entries per bucket
-- on average (at most `most` splits): each split moves one bucket's entries
-- into its two halves, so buckets stay small listpacks.
local function grow(state, base, kind, count, most)
  local L, S = levels(state, kind)
  local n = tonumber(redis.call('HGET', state, count) or '0')
  local done = 0
  while n > 64 * (2 ^ L + S) and done < most and L < 24 do
    local old = base .. ':' .. kind .. ':' .. L .. ':' .. S
    local all = redis.call('HGETALL', old)
    for k = 1, #all, 2 do
      local b = math.floor(bh_of(all[k]) * 2 ^ (L + 1) / P)
      redis.call('HSET', base .. ':' .. kind .. ':' .. (L + 1) .. ':' .. b, all[k], all[k + 1])
    end
    redis.call('DEL', old)
    S = S + 1
    if S == 2 ^ L then
      L, S = L + 1, 0
    end
    done = done + 1
  end
  if done > 0 then redis.call('HSET', state, kind .. 'L', L, kind .. 'S', S) end
end

-- A token's field: its text; a long one (over 60 bytes, past the listpack
-- value limit) or one starting with a NUL byte: NUL and its 8-byte hash,
-- with the text in the model's `x` hash; a crafted second long token with
-- the same hash: NUL, the hash and the text.
local function token_field(xkey, text, h8)
  if h8 == '' then return text, false end
  local f = '\0' .. h8
  local t = redis.call('HGET', xkey, f)
  if t and t ~= text then return f .. text, true end
  return f, true
end

-- Records: weight (f32), day (u16), then spam and ham as varints.
local function varint(s, pos)
  local n, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    pos = pos + 1
    n = n + (b % 128) * mul
    if b < 128 then return n, pos end
    mul = mul * 128
  end
end

local function unpack_record(s)
  if s == '' then return 0, 0, 0, 0 end
  local w, d = struct.unpack('<fI2', s)
  local spam, pos = varint(s, 7)
  local ham = varint(s, pos)
  return spam, ham, d, w
end

local function put_varint(n)
  local t = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    t[#t + 1] = string.char(b)
  until n == 0
  return table.concat(t)
end

local function pack_record(spam, ham, day, weight)
  return struct.pack('<fI2', weight, day) .. put_varint(spam) .. put_varint(ham)
end
