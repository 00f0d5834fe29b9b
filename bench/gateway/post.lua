-- wrk script: one OpenAI chat request per call, headers from the environment.
wrk.method = "POST"
wrk.body = '{"model":"synapsex-chat","messages":[{"role":"user","content":' ..
           '"What medications interact with aspirin?"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
for _, name in ipairs({"Authorization", "x-portkey-provider", "x-portkey-custom-host"}) do
  local v = os.getenv("H_" .. name:gsub("-", "_"):upper())
  if v and v ~= "" then wrk.headers[name] = v end
end

-- Only 200s count: a refused request must not pass for a fast one.
local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  io.write(string.format("non200 %d\n", summary.errors.status))
end
