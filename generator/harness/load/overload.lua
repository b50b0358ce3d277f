-- wrk script for the overload scenario: latency per answer class, timed per request.
-- Run with one connection per thread (-tN -cN): request() and response() then alternate on a
-- thread, so the time between them is that request's latency (wrk's own histogram mixes the
-- fast 503s with the slow admitted 200s, which is exactly what this scenario must separate).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bulwark_timespec;
  int clock_gettime(int clock_id, bulwark_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now = ffi.new("bulwark_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
end

-- Pause between one answer and the next request on a connection: connections x (1000 / delay)
-- caps the offered rate, so the server is offered a rate, not saturated by a closed loop (where
-- every latency is just connections / throughput, Little's law, whatever the server does).
local pause_ms = tonumber(os.getenv("BULWARK_OVERLOAD_DELAY_MS") or "0")
-- Width of the time buckets of the latency-over-time series, by when each request was sent.
local interval_ms = tonumber(os.getenv("BULWARK_OVERLOAD_INTERVAL_MS") or "1000")

local threads = {}
-- wrk opens every connection at once and pauses before each one's first request too, so with
-- the same pause everywhere all of them would send it in the same millisecond: a burst of one
-- request per connection that the server answers one after the other (the last ones several ms
-- late), replayed a pause later by the connections answered together. Real clients do not
-- start in step: connection k of n waits k/n of a pause before its first request, which offers
-- the steady rate from the start.
local connections = tonumber(os.getenv("BULWARK_OVERLOAD_CONNECTIONS") or "1")

function setup(thread)
  table.insert(threads, thread)
  thread:set("first_pause_ms", math.floor(pause_ms * (#threads - 1) / connections))
end

function init(args)
  sent_at = 0
  shed = {}
  admitted = {}
  other = 0
  -- Send times parallel to shed/admitted, and of the other answers, for the series.
  shed_at = {}
  admitted_at = {}
  other_at = {}
end

function delay()
  if first_pause_ms ~= nil then
    local pause = first_pause_ms
    first_pause_ms = nil
    return pause
  end
  return pause_ms
end

function request()
  sent_at = now_ms()
  return wrk.format()
end

function response(status, headers, body)
  local took = now_ms() - sent_at
  if status == 503 then
    shed[#shed + 1] = took
    shed_at[#shed_at + 1] = sent_at
  elseif status == 200 then
    admitted[#admitted + 1] = took
    admitted_at[#admitted_at + 1] = sent_at
  else
    other = other + 1
    other_at[#other_at + 1] = sent_at
  end
end

-- Sorts values in place.
local function percentile(values, fraction)
  if #values == 0 then
    return -1
  end
  table.sort(values)
  return values[math.max(1, math.ceil(#values * fraction))]
end

local function p99(values)
  return percentile(values, 0.99)
end

-- JSON for a latency, null when the bucket has no answer of that class.
local function ms(value)
  if value < 0 then
    return "null"
  end
  return string.format("%.3f", value)
end

-- One JSON object per interval: counts and p50/p99 of each class sent in it. The clock is
-- CLOCK_MONOTONIC, shared by every thread, so the buckets line up across threads.
local function series(samples)
  local first = math.huge
  for _, sample in ipairs(samples) do
    first = math.min(first, sample.at)
  end
  local buckets, last = {}, -1
  for _, sample in ipairs(samples) do
    local index = math.floor((sample.at - first) / interval_ms)
    last = math.max(last, index)
    local bucket = buckets[index]
    if bucket == nil then
      bucket = { shed = {}, admitted = {}, other = 0 }
      buckets[index] = bucket
    end
    if sample.class == "other" then
      bucket.other = bucket.other + 1
    else
      local values = bucket[sample.class]
      values[#values + 1] = sample.took
    end
  end
  local parts = {}
  for index = 0, last do
    local bucket = buckets[index] or { shed = {}, admitted = {}, other = 0 }
    local shed_count, admitted_count = #bucket.shed, #bucket.admitted
    parts[#parts + 1] = string.format(
      '{"t_s": %.3f, "shed": %d, "admitted": %d, "other": %d, ' ..
      '"shed_p50_ms": %s, "shed_p99_ms": %s, "admitted_p50_ms": %s, "admitted_p99_ms": %s}',
      index * interval_ms / 1000, shed_count, admitted_count, bucket.other,
      ms(percentile(bucket.shed, 0.5)), ms(p99(bucket.shed)),
      ms(percentile(bucket.admitted, 0.5)), ms(p99(bucket.admitted)))
  end
  return "[" .. table.concat(parts, ", ") .. "]"
end

function done(summary, latency, requests)
  local all_shed, all_admitted, all_other, samples = {}, {}, 0, {}
  for _, thread in ipairs(threads) do
    local thread_shed, thread_admitted = thread:get("shed"), thread:get("admitted")
    local thread_shed_at, thread_admitted_at = thread:get("shed_at"), thread:get("admitted_at")
    for i, value in ipairs(thread_shed) do
      all_shed[#all_shed + 1] = value
      samples[#samples + 1] = { at = thread_shed_at[i], took = value, class = "shed" }
    end
    for i, value in ipairs(thread_admitted) do
      all_admitted[#all_admitted + 1] = value
      samples[#samples + 1] = { at = thread_admitted_at[i], took = value, class = "admitted" }
    end
    for _, at in ipairs(thread:get("other_at")) do
      samples[#samples + 1] = { at = at, class = "other" }
    end
    all_other = all_other + thread:get("other")
  end
  local over_time = series(samples)
  io.write(string.format(
    'BULWARK_OVERLOAD {"shed": %d, "admitted": %d, "other": %d, ' ..
    '"shed_p99_ms": %.3f, "admitted_p99_ms": %.3f, "series": %s}\n',
    #all_shed, #all_admitted, all_other, p99(all_shed), p99(all_admitted),
    over_time))
end
