-- wrk script for every load-test run: answers counted by status, and the latency of the
-- expected ones. BULWARK_EXPECT lists the statuses the scenario expects ("200" or "200,503").
local expected = {}
for code in string.gmatch(os.getenv("BULWARK_EXPECT") or "200", "%d+") do
  expected[tonumber(code)] = true
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, total, good = {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    total = total + n
    if expected[status] then
      good = good + n
    end
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  -- wrk keeps one histogram over every answer. The p-th percentile of the expected answers
  -- lies at or below the all-answer percentile of rank (p * good + other) / total: an upper
  -- bound, exact when every answer was expected.
  local function bound_ms(p)
    if total == 0 or good == 0 then
      return -1
    end
    local rank = math.min((p * good + (total - good)) / total, 1.0)
    return latency:percentile(rank * 100) / 1000
  end
  io.write(string.format(
    'BULWARK_STATUSES {"statuses": {%s}, "expected": %d, ' ..
    '"p50_ms": %.3f, "p75_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f}\n',
    table.concat(parts, ", "), good,
    bound_ms(0.50), bound_ms(0.75), bound_ms(0.90), bound_ms(0.99)))
end
