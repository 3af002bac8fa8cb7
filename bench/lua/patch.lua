-- Every request changes an integration's description: the URL's, or with POTPIE_IDS
-- (comma-separated ids) the next of those in turn.
local ids = {}
for id in string.gmatch(os.getenv("POTPIE_IDS") or "", "[^,]+") do
  ids[#ids + 1] = id
end
local counter = 0
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("POTPIE_KEY")

request = function()
  counter = counter + 1
  local path = nil
  if #ids > 0 then
    path = "/api/v2/integrations/" .. ids[counter % #ids + 1]
  end
  return wrk.format(nil, path, nil, string.format('{"metadata":{"description":"d%d"}}', counter))
end
