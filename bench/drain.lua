-- wrk script: cycle through pre-generated, pre-signed drain bodies and count what came back.
--
--   wrk -t1 -c16 -d20s --latency -s bench/drain.lua http://127.0.0.1:PORT/ -- SET_DIR [PATH]
--
-- SET_DIR holds index.tsv (file, content-type, content-encoding, signature per line) written by
-- bench/gen.py. Every request is built once at init; request() only picks the next one.
-- done() prints one line starting with "BENCHJSON " holding the status counts, how many times
-- each body was sent, and the latency percentiles, for bench/run.py to parse.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_no", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local requests = {}
local nbodies = 0
local position = 0
sent = {}
statuses = {}

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   local dir = args[1]
   local path = args[2] or "/"
   for line in io.lines(dir .. "/index.tsv") do
      local file, ctype, encoding, signature = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
      if file then
         local body = read_file(dir .. "/" .. file)
         local headers = {
            ["Content-Type"] = ctype,
            ["x-vercel-signature"] = signature,
            ["User-Agent"] = "vercel-log-drain/bench",
         }
         if encoding ~= "" then
            headers["Content-Encoding"] = encoding
         end
         nbodies = nbodies + 1
         requests[nbodies] = wrk.format("POST", path, headers, body)
         sent[nbodies] = 0
      end
   end
   assert(nbodies > 0, "no bodies in " .. dir)
   -- Each thread starts at its own offset so that threads do not send the same body in lockstep.
   position = (thread_no or 0) * 7919 % nbodies
end

function request()
   position = position % nbodies + 1
   sent[position] = sent[position] + 1
   return requests[position]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests_stats)
   local status_total = {}
   local sent_total = {}
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses")) do
         status_total[code] = (status_total[code] or 0) + n
      end
      for i, n in pairs(thread:get("sent")) do
         sent_total[i] = (sent_total[i] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(status_total) do
      table.insert(parts, string.format('"%d": %d', code, n))
   end
   local sent_parts = {}
   for i = 1, #sent_total do
      sent_parts[i] = tostring(sent_total[i])
   end
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"duration_us": %d, "requests": %d, "bytes_read": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"statuses": {%s}, "sent": [%s], ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ", "), table.concat(sent_parts, ","),
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
