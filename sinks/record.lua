-- The prefix and TTLs are baked into the script text (one script per sink configuration). One
-- call records a whole chunk of pairs: ARGV[1] is the write token, ARGV[2] a JSON array with one
-- entry per pair: [trace_id, experiment, scorer, version, state, detail, minute, name, JSON,
-- code, name, JSON, code, ...] (three per assessment); experiment, scorer, version and names
-- come encoded (`sinks._keys.encode`), so the script never has to parse a key it built: it
-- keeps the parts next to each key instead. `detail` is
-- `skipped:{reason}` / `error:{code}` / ''. The code is `-` (skipped: not aggregated), `pass`,
-- `fail`, `error`, a number to add as a value, or '' (counted only). Packing a chunk into one
-- argument keeps the client's per-argument encoding cost off the hot path. Returns one
-- character per pair ('1' new, '0' replay, 'E' rejected: an error in one pair does not stop the
-- others) and the first error message.
local token = ARGV[1]
local pairs_ = cjson.decode(ARGV[2])
local out = {}
local firsterr = ''
-- Counts of the whole chunk are summed here first and written once per key at the end:
-- a chunk of 500 pairs touches a handful of aggregate and coverage keys, so this turns
-- thousands of HINCRBY calls into a few dozen.
local aggs, covs, covms = {}, {}, {}
local agg_parts, cov_parts = {}, {}
local function bump(tbl, key, field, n)
  local h = tbl[key]
  if not h then h = {}; tbl[key] = h end
  h[field] = (h[field] or 0) + n
end
local function record(k, p)
  local t = P .. 't:' .. p[1]
  local e, scorer, minute, version = p[2], p[3], p[7], p[4]
  local guard = 'done:' .. scorer .. ':' .. version
  local fresh = redis.call('HSETNX', t, guard, token) == 1
  if not fresh then
    out[k] = (redis.call('HGET', t, guard) == token) and '1' or '0'
    return
  end
  out[k] = '1'
  local first_exp = redis.call('HSETNX', t, 'exp', e) == 1
  local fields, verdicts = {}, {}
  for i = 8, #p, 3 do
    local name, code = p[i], p[i + 2]
    fields[#fields + 1] = 'a:' .. name
    fields[#fields + 1] = p[i + 1]
    if code == 'pass' or code == 'fail' then
      fields[#fields + 1] = 'o:' .. name
      fields[#fields + 1] = scorer .. US .. version .. US .. code
      verdicts[#verdicts + 1] = {name, code}
    end
  end
  redis.call('HSET', t, unpack(fields))
  redis.call('PEXPIRE', t, __TRACE_TTL__)
  join_new_verdicts(p[1], e, scorer, version, verdicts, first_exp)
  -- Only counting is left, in Lua tables: nothing below can fail halfway.
  for i = 8, #p, 3 do
    local name, code = p[i], p[i + 2]
    if code ~= '-' then
      local agg = e .. ':' .. name .. ':' .. minute
      if not agg_parts[agg] then agg_parts[agg] = {e, name} end
      bump(aggs, agg, 'count', 1)
      if code == 'pass' then
        bump(aggs, agg, 'pass', 1)
        bump(aggs, agg, 'sum', 1)
      elseif code == 'fail' or code == 'error' then
        bump(aggs, agg, code, 1)
      elseif code ~= '' then
        bump(aggs, agg, 'value', 1)
        bump(aggs, agg, 'sum', tonumber(code))
      end
    end
  end
  local state, detail = p[5], p[6]
  local cov = e .. ':' .. scorer
  if not cov_parts[cov] then cov_parts[cov] = {e, scorer} end
  bump(covs, cov, state, 1)
  bump(covms, cov .. ':' .. minute, state, 1)
  if detail ~= '' then
    bump(covs, cov, detail, 1)
    bump(covms, cov .. ':' .. minute, detail, 1)
  end
end
for k = 1, #pairs_ do
  local ok, err = pcall(record, k, pairs_[k])
  if not ok then
    out[k] = 'E'
    if firsterr == '' then firsterr = type(err) == 'table' and (err.err or 'error') or tostring(err) end
  end
end
for suffix, h in pairs(aggs) do
  local key = P .. 'agg:' .. suffix
  -- The first count of a minute sets its TTL and indexes the name; later ones need not.
  if redis.call('HINCRBY', key, 'count', h.count) == h.count then
    redis.call('PEXPIRE', key, __AGGREGATE_TTL__)
    local parts = agg_parts[suffix]
    redis.call('SADD', P .. 'names:' .. parts[1], parts[2])
  end
  for f, n in pairs(h) do
    if f == 'sum' then
      redis.call('HINCRBYFLOAT', key, 'sum', string.format('%.17g', n))
    elseif f ~= 'count' then
      redis.call('HINCRBY', key, f, n)
    end
  end
end
for suffix, h in pairs(covs) do
  local key = P .. 'cov:' .. suffix
  local new = false
  for f, n in pairs(h) do
    if redis.call('HINCRBY', key, f, n) == n and string.find(f, ':', 1, true) == nil then new = true end
  end
  -- cov never expires, nor do the index sets, so a first count is enough to index.
  if new then
    local parts = cov_parts[suffix]
    redis.call('SADD', P .. 'experiments', parts[1])
    redis.call('SADD', P .. 'scorers:' .. parts[1], parts[2])
  end
end
for suffix, h in pairs(covms) do
  local key = P .. 'covm:' .. suffix
  local new = false
  for f, n in pairs(h) do
    if redis.call('HINCRBY', key, f, n) == n then new = true end
  end
  if new then redis.call('PEXPIRE', key, __AGGREGATE_TTL__) end
end
return {table.concat(out), firsterr, table.concat(agreements, RS), table.concat(votes_counted, RS)}
