-- wrk script of `make bench` (tests/bench/gateway.py): a fixed number of async submits.
--   BENCH_KEY      the bearer key          BENCH_BODY  the JSON body of POST /api/v2/generate
--   BENCH_TOTAL    submits over all threads (each thread sends its share, then idles)
--   BENCH_THREADS  wrk's -t                BENCH_OUT   folder for one record file per thread
-- Each thread writes `START <ms>` when it sends its first submit, then one line per answer,
-- `<status> <ms> <generation id or ->`, and `DONE <ms>` once all its submits are answered
-- (times from CLOCK_MONOTONIC, as Python's time.monotonic()). A connection whose share is
-- used up waits an hour (delay()), so no request beyond the total is sent; the harness
-- interrupts wrk (SIGINT) when every thread is DONE, and wrk prints its latency table.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long sec; long nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
   ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
   return tonumber(ts.sec) * 1000 + tonumber(ts.nsec) / 1e6
end

wrk.method = "POST"
wrk.path = "/api/v2/generate"
wrk.body = os.getenv("BENCH_BODY") or '{"model":"dall-e-3","prompt":"a lighthouse at dusk","size":"1024x1024"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
-- Submits answered at once (the call would otherwise wait for fast models' results).
wrk.headers["Prefer"] = "respond-async"

local total = tonumber(os.getenv("BENCH_TOTAL") or "10000")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local out_dir = os.getenv("BENCH_OUT") or "/tmp"
local created = 0

function setup(thread)
   local share = math.floor(total / nthreads)
   if created < total % nthreads then
      share = share + 1
   end
   thread:set("tid", created)
   thread:set("limit", share)
   created = created + 1
end

-- Counted in delay(), which wrk calls right before each real request: request() itself is
-- also called once by wrk (on thread 0) to check the script before the run starts.
local reserved, answered, finished = 0, 0, false
local out = nil
local request_bytes = nil

function init(args)
   out = io.open(string.format("%s/submits-%d.txt", out_dir, tid), "w")
   request_bytes = wrk.format()
end

function delay()
   if reserved < limit then
      if reserved == 0 then
         out:write(string.format("START %.3f\n", now_ms()))
      end
      reserved = reserved + 1
      return 0
   end
   return 3600000
end

function request()
   return request_bytes
end

function response(status, headers, body)
   answered = answered + 1
   local id = body:match('"id"%s*:%s*"([^"]+)"') or "-"
   out:write(string.format("%d %.3f %s\n", status, now_ms(), id))
   if not finished and answered >= limit then
      finished = true
      out:write(string.format("DONE %.3f\n", now_ms()))
      out:flush()
   end
end
