-- wrk script of `make bench` (tests/bench/gateway.py): the same POST for every target.
--   BENCH_KEY      the bearer key (the target's own: pixelmesh dev key, LiteLLM master key)
--   BENCH_BODY     the JSON body (default: dall-e-3, 1024x1024)
--   BENCH_RAMP_MS  answers in the first RAMP ms of the run are not counted in `window`
--                  (the pipeline fills meanwhile: a slow server answers nothing at first)
-- Every response is looked at: `ok` counts 200s whose body carries an image (`"url"` or
-- `"b64_json"`), `bad` the 200s without one, `window` the `ok` ones after the ramp;
-- done() prints them as one `BENCH` line.
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
wrk.body = os.getenv("BENCH_BODY") or '{"model":"dall-e-3","prompt":"a lighthouse at dusk","size":"1024x1024"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")

local ramp_ms = tonumber(os.getenv("BENCH_RAMP_MS") or "0")
local counted_from = 0
ok, bad, window = 0, 0, 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   counted_from = now_ms() + ramp_ms
end

function response(status, headers, body)
   if status == 200 then
      if body:find('"url"', 1, true) or body:find('"b64_json"', 1, true) then
         ok = ok + 1
         if ramp_ms == 0 or now_ms() >= counted_from then
            window = window + 1
         end
      else
         bad = bad + 1
      end
   end
end

function done(summary, latency, requests)
   local total_ok, total_bad, total_window = 0, 0, 0
   for _, t in ipairs(threads) do
      total_ok = total_ok + t:get("ok")
      total_bad = total_bad + t:get("bad")
      total_window = total_window + t:get("window")
   end
   io.write(string.format("BENCH ok=%d bad=%d window=%d\n", total_ok, total_bad, total_window))
end
