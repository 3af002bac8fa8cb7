-- 100 identifiers saved over and over; every other request changes a field.
local key, run = os.getenv("POTPIE_KEY"), os.getenv("POTPIE_RUN")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = key

request = function()
  counter = counter + 1
  local n = counter % 100
  local body
  if counter % 2 == 0 then
    body = string.format(
      '{"name":"upsert %s %d","integration_type":"jira","unique_identifier":"up-%s-%d",' ..
      '"auth_data":{"access_token":"tok"},"metadata":{"description":"v%d"}}',
      run, n, run, n, counter)
  else
    body = string.format(
      '{"name":"upsert %s %d","integration_type":"jira","unique_identifier":"up-%s-%d"}',
      run, n, run, n)
  end
  return wrk.format(nil, nil, nil, body)
end
