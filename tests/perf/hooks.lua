-- wrk script: form hooks of new people, each with its own phone and ref, for wrk's duration.
-- Prints one line "WRK <answers> <duration us> <non-2xx> <p50 us> <p99 us>" at the end.
local counter = 0
local offset = tonumber(os.getenv("WRK_OFFSET") or "0")
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

request = function()
  counter = counter + 1
  local n = offset + counter
  local body = string.format("name=%%D0%%9A%%D0%%BB%%D0%%B8%%D0%%B5%%D0%%BD%%D1%%82+%d&phone=%%2B7915%07d&ref=b%d", n, n, n)
  return wrk.format("POST", nil, headers, body)
end

done = function(summary, latency, requests)
  io.write(string.format("WRK %d %d %d %d %d\n", summary.requests, summary.duration,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
