-- Every request saves a new integration: a unique name per request.
local key, run = os.getenv("POTPIE_KEY"), os.getenv("POTPIE_RUN")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = key

request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"create %s %d","integration_type":"sentry","auth_data":{"access_token":"tok-%d"},' ..
    '"scope_data":{"org_slug":"acme"},"metadata":{"created_via":"bench","tags":["a","b"]}}',
    run, counter, counter)
  return wrk.format(nil, nil, nil, body)
end
