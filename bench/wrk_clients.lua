-- wrk request generator. Each request comes from one of CLIENTS listeners (a different
-- address through the trusted loopback proxy, spread over many /24 subnets) with a
-- browser User-Agent, and asks for a different track: the guard evaluates all limits of
-- the shipped rules against real per-client state, and allows the request.
-- CLIENTS=0 (env) makes every request a new client: the worst case for the guard.
local clients = tonumber(os.getenv("CLIENTS") or "2000")
local n = 0
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

function request()
  n = n + 1
  local c = clients > 0 and (n % clients) or n
  local address = string.format("100.%d.%d.%d", c % 50 + 1, math.floor(c / 50) % 250 + 1, math.floor(c / 12500) % 250 + 1)
  local headers = {["User-Agent"] = ua, ["X-Forwarded-For"] = address}
  return wrk.format("GET", string.format("/api/tracks/%d", n % 100000 + 1), headers)
end
