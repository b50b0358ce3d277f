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

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent_at = 0
  shed = {}
  admitted = {}
  other = 0
end

function delay()
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
  elseif status == 200 then
    admitted[#admitted + 1] = took
  else
    other = other + 1
  end
end

local function p99(values)
  if #values == 0 then
    return -1
  end
  table.sort(values)
  return values[math.max(1, math.ceil(#values * 0.99))]
end

function done(summary, latency, requests)
  local all_shed, all_admitted, all_other = {}, {}, 0
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get("shed")) do
      all_shed[#all_shed + 1] = value
    end
    for _, value in ipairs(thread:get("admitted")) do
      all_admitted[#all_admitted + 1] = value
    end
    all_other = all_other + thread:get("other")
  end
  io.write(string.format(
    'BULWARK_OVERLOAD {"shed": %d, "admitted": %d, "other": %d, ' ..
    '"shed_p99_ms": %.3f, "admitted_p99_ms": %.3f}\n',
    #all_shed, #all_admitted, all_other, p99(all_shed), p99(all_admitted)))
end
