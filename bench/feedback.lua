-- wrk script for `POST /v1/feedback` (bench/feedback.py runs it; not a test).
-- Every request carries a fresh trace id and user, so nothing is deduplicated anywhere.
local key = os.getenv("BENCH_API_KEY") or "bench-key"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() + (seed or 0) * 7919)
end

function request()
  counter = counter + 1
  local tid = string.format("tr-%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
    math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  local value = (counter % 4 == 0) and "false" or "true"
  local body = string.format(
    '{"trace_id":"%s","name":"user_satisfaction","value":%s,"rationale":"bench","source":{"type":"HUMAN","id":"user-%d"}}',
    tid, value, counter % 5000)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
