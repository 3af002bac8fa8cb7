-- Every request changes the description of the next of POTPIE_IDS (comma-separated ids).
local ids = {}
for id in string.gmatch(os.getenv("POTPIE_IDS"), "[^,]+") do
  ids[#ids + 1] = id
end
local counter = 0
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("POTPIE_KEY")

request = function()
  counter = counter + 1
  local path = "/api/v2/integrations/" .. ids[counter % #ids + 1]
  return wrk.format(nil, path, nil, string.format('{"metadata":{"description":"s%d"}}', counter))
end
