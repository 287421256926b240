-- The Redis sink's guarded writes, run atomically by EVALSHA.
--
-- Versions are Position::to_hex texts (24 upper-case hex digits). A write
-- at version V is applied unless the row's stored version, or the table's
-- last truncate, is greater than V; equal versions apply again, so that a
-- replay rewrites the same data.
--
-- Row operations: KEYS = row key, version key, truncate marker, and for
-- the new row of a key change that left TOAST values unchanged, the old
-- row key and its version key (the values are copied from there);
-- ARGV = op, version, ttl in ms ("0": none; for deletes, the tombstone's).
--   hset  ARGV[4] "1" to replace the whole hash, ARGV[5] n, then n
--         field/value pairs, then the fields to remove (NULL columns)
--   hdel  (nothing more)
--   jset  ARGV[4] the row's JSON object
--   jmerge ARGV[4..] column name (as JSON text)/value (JSON text, or ""
--         for "keep the stored value") pairs
--   jdel  (nothing more)
-- Truncate: KEYS = truncate marker, then row key/version key pairs;
-- ARGV = "trunc", version, "hash" or "json".
-- Returns 1 when applied, 0 when a newer version was already there.

-- Lua numbers are doubles and string comparison follows the server's
-- locale, so versions are compared as four exact 24-bit chunks.
local function older(a, b)
  for i = 1, 24, 6 do
    local x, y = tonumber(string.sub(a, i, i + 5), 16), tonumber(string.sub(b, i, i + 5), 16)
    if x ~= y then return x < y end
  end
  return false
end

local op, v = ARGV[1], ARGV[2]

if op == 'trunc' then
  local t = redis.call('GET', KEYS[1])
  if not t or older(t, v) then redis.call('SET', KEYS[1], v) end
  for i = 2, #KEYS, 2 do
    local key, vkey = KEYS[i], KEYS[i + 1]
    local cur
    local kind = redis.call('TYPE', key)['ok']
    if ARGV[3] == 'hash' and kind == 'hash' then
      cur = redis.call('HGET', key, '_weir_version')
    elseif ARGV[3] == 'json' and kind == 'string' then
      cur = redis.call('GET', vkey)
    else
      -- Not a row this sink wrote; a truncate leaves it alone.
      cur = nil
      kind = nil
    end
    if kind and (not cur or older(cur, v)) then
      redis.call('DEL', key, vkey)
    end
  end
  return 1
end

local key, vkey, tkey = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('GET', tkey)
if t and older(v, t) then return 0 end

local cur
if op == 'hset' or op == 'hdel' then
  if redis.call('EXISTS', key) == 1 then
    cur = redis.call('HGET', key, '_weir_version')
  end
  if not cur then cur = redis.call('GET', vkey) end
else
  cur = redis.call('GET', vkey)
end
if cur and older(v, cur) then return 0 end

local ttl = tonumber(ARGV[3])

local function tombstone()
  redis.call('DEL', key)
  if ttl > 0 then
    redis.call('SET', vkey, v, 'PX', ttl)
  else
    redis.call('SET', vkey, v)
  end
  return 1
end

if op == 'hdel' or op == 'jdel' then return tombstone() end

-- The old row of a key change, when it holds the values the change left
-- unchanged: it exists as this sink wrote it and is older than the change.
-- Once it is gone (a replay, after the old key was deleted) the new row,
-- already written, keeps its own values.
local function source_row(kind)
  local src = KEYS[4]
  if not src or src == key or redis.call('TYPE', src)['ok'] ~= kind then return nil end
  local sv
  if kind == 'hash' then
    sv = redis.call('HGET', src, '_weir_version')
  else
    sv = redis.call('GET', KEYS[5])
  end
  if sv and older(sv, v) then return src end
  return nil
end

if op == 'hset' then
  local n = tonumber(ARGV[5])
  local src = source_row('hash')
  if ARGV[4] == '1' or src then redis.call('DEL', key) end
  if src then
    local old = redis.call('HGETALL', src)
    if #old > 0 then redis.call('HSET', key, unpack(old)) end
  end
  local fields = {'_weir_version', v}
  for i = 6, 5 + 2 * n do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', key, unpack(fields))
  if #ARGV > 5 + 2 * n then
    local gone = {}
    for i = 6 + 2 * n, #ARGV do gone[#gone + 1] = ARGV[i] end
    redis.call('HDEL', key, unpack(gone))
  end
  redis.call('DEL', vkey)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  return 1
end

local function set_json(text)
  if ttl > 0 then
    redis.call('SET', key, text, 'PX', ttl)
    redis.call('SET', vkey, v, 'PX', ttl)
  else
    redis.call('SET', key, text)
    redis.call('SET', vkey, v)
  end
  return 1
end

if op == 'jset' then return set_json(ARGV[4]) end

-- jmerge: the stored object is cut into its members' raw texts, never
-- decoded, so that kept values (numbers past 2^53 included) are copied
-- byte for byte.
local function ws(s, i)
  while true do
    local c = string.byte(s, i)
    if c == 32 or c == 9 or c == 10 or c == 13 then i = i + 1 else return i end
  end
end

local function skip_string(s, i)
  i = i + 1
  while true do
    local c = string.byte(s, i)
    if c == nil then return nil end
    if c == 92 then i = i + 2
    elseif c == 34 then return i + 1
    else i = i + 1 end
  end
end

local function skip_value(s, i)
  local c = string.byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c == 123 or c == 91 then
    local depth = 0
    while true do
      c = string.byte(s, i)
      if c == nil then return nil end
      if c == 34 then
        i = skip_string(s, i)
        if not i then return nil end
      else
        if c == 123 or c == 91 then
          depth = depth + 1
        elseif c == 125 or c == 93 then
          depth = depth - 1
          if depth == 0 then return i + 1 end
        end
        i = i + 1
      end
    end
  end
  local j = string.find(s, '[,}%s]', i)
  if not j or j == i then return nil end
  return j
end

local function members(s)
  local map = {}
  if string.byte(s, 1) ~= 123 then return nil end
  local i = ws(s, 2)
  if string.byte(s, i) == 125 then return map end
  while true do
    i = ws(s, i)
    if string.byte(s, i) ~= 34 then return nil end
    local name_end = skip_string(s, i)
    if not name_end then return nil end
    local name = string.sub(s, i, name_end - 1)
    i = ws(s, name_end)
    if string.byte(s, i) ~= 58 then return nil end
    i = ws(s, i + 1)
    local value_end = skip_value(s, i)
    if not value_end then return nil end
    map[name] = string.sub(s, i, value_end - 1)
    i = ws(s, value_end)
    local c = string.byte(s, i)
    if c == 125 then return map end
    if c ~= 44 then return nil end
    i = i + 1
  end
end

if op == 'jmerge' then
  local stored = {}
  local text = redis.call('GET', source_row('string') or key)
  if text then
    stored = members(text)
    if not stored then
      return redis.error_reply('ERR the value at ' .. key .. ' is not a JSON object')
    end
  end
  local out = {}
  for i = 4, #ARGV, 2 do
    local value = ARGV[i + 1]
    if value == '' then value = stored[ARGV[i]] end
    -- A kept value the store never had (the row was written before this
    -- sink saw it) is left out: unknown, not NULL.
    if value then out[#out + 1] = ARGV[i] .. ':' .. value end
  end
  return set_json('{' .. table.concat(out, ',') .. '}')
end

return redis.error_reply('ERR unknown weir operation ' .. tostring(op))
