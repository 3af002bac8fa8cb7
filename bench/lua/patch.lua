-- Every request changes the integration's description.
local counter = 0
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("POTPIE_KEY")

request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format('{"metadata":{"description":"d%d"}}', counter))
end
