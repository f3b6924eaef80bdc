-- wrk request generator: browser-like listeners. Each request comes from one of CLIENTS
-- listeners (a different address through the trusted loopback proxy, each in its own /24
-- of 100.64.0.0/10, outside every hosting provider's ranges), with a Chrome User-Agent and
-- the session cookie that listener got from its first page load (COOKIES: a file, one
-- "guard_session=..." per line, listener 0 first). Each listener goes round: the track
-- page (a navigation), its JSON, two Range requests of its audio, then the next track.
-- Every request is allowed: the guard evaluates the shipped limits against real
-- per-listener state on the path every real listener takes.
local clients = tonumber(os.getenv("CLIENTS") or "2000")
local cookies = {}
local file = os.getenv("COOKIES") and io.open(os.getenv("COOKIES"), "r")
if file then
  for line in file:lines() do
    cookies[#cookies + 1] = line
  end
  file:close()
end
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local n = 0
local rounds = {}

function request()
  local c = n % clients
  n = n + 1
  local r = rounds[c] or 0
  rounds[c] = r + 1
  local address = string.format("100.%d.%d.%d", c % 50 + 64, math.floor(c / 50) % 250 + 1, math.floor(c / 12500) % 250 + 1)
  local track = (c * 50 + math.floor(r / 4)) % 100000 + 1
  local headers = {["User-Agent"] = ua, ["X-Forwarded-For"] = address, ["Cookie"] = cookies[c + 1]}
  local step = r % 4
  local path
  if step == 0 then
    path = string.format("/tracks/%d", track)
    headers["Sec-Fetch-Mode"] = "navigate"
    headers["Sec-Fetch-Dest"] = "document"
    headers["Accept"] = "text/html"
  elseif step == 1 then
    path = string.format("/api/tracks/%d", track)
    headers["Sec-Fetch-Mode"] = "cors"
    headers["Sec-Fetch-Dest"] = "empty"
    headers["Accept"] = "application/json"
  else
    path = string.format("/tracks/%d/stream", track)
    headers["Sec-Fetch-Mode"] = "no-cors"
    headers["Sec-Fetch-Dest"] = "audio"
    headers["Range"] = "bytes=0-4095"
  end
  return wrk.format("GET", path, headers)
end
