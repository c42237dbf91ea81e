-- wrk script for the Glimpse/Glance comparison (bench/compare_glance.py).
--
-- Everything is configured through the environment, so one script serves every row:
--   BENCH_METHOD        GET | POST | PATCH
--   BENCH_PATH          request path; "{id}" is replaced by the next image id (round-robin)
--   BENCH_IDS_FILE      file with one image id per line (needed when BENCH_PATH has {id})
--   BENCH_BODY          request body; "{n}" is replaced by a per-thread request counter
--   BENCH_HEADERS       extra headers, one "Name: value" per line
--   BENCH_MAX_REQUESTS  >0: each thread stops after that many responses (tiny runs)
--   BENCH_OUT           done() writes one JSON object here
-- Non-2xx responses are counted by wrk itself (summary.errors.status counts >= 400);
-- when BENCH_MAX_REQUESTS is set we also count 3xx and the status codes seen.

local method = os.getenv("BENCH_METHOD") or "GET"
local path_template = os.getenv("BENCH_PATH") or "/"
local body_template = os.getenv("BENCH_BODY")
local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0") or 0
local out_file = os.getenv("BENCH_OUT")

local headers = {}
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end

local ids = {}
local ids_file = os.getenv("BENCH_IDS_FILE")
if ids_file and ids_file ~= "" then
  for line in io.lines(ids_file) do
    if line ~= "" then ids[#ids + 1] = line end
  end
end

local counter = 0
local responses = 0

function init(args)
  -- A different starting point per thread spreads threads over the ids.
  counter = math.random(0, 1000)
end

function request()
  counter = counter + 1
  local path = path_template
  if #ids > 0 then
    path = string.gsub(path_template, "{id}", ids[(counter % #ids) + 1])
  end
  local body = nil
  if body_template and body_template ~= "" then
    body = string.gsub(body_template, "{n}", tostring(counter))
  end
  return wrk.format(method, path, headers, body)
end

if max_requests > 0 then
  function response(status, hdrs, body)
    responses = responses + 1
    if responses >= max_requests then
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  if not out_file then return end
  local f = assert(io.open(out_file, "w"))
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
  f:close()
end
