-- The edge filter closest to the services: after the JSON transcoder, before the router, so
-- every call looks like gRPC here, whichever protocol the client spoke.
--
-- 1. A REST query parameter may not set a field that the path or the body already binds
--    (`GET /v1/profiles/ada?username=bob` would otherwise read bob). BOUND lists, per gRPC
--    method, the top-level request fields so bound ("*" when the body binds every field); it is
--    generated from the google.api.http annotations by tools/edge.py.
-- 2. A query parameter without a value ("?a") is refused rather than ignored.
-- 3. A message flagged compressed without a grpc-encoding is refused as INVALID_ARGUMENT.
-- 4. It records the gRPC status the service answered with, for the access log: the client gets
--    that same code whether it reads it from a trailer (gRPC, gRPC-web) or from JSON (REST).

local BOUND = ${BOUND}

local METADATA = "meshgram.edge"

local function unescape(text)
  text = text:gsub("+", " ")
  return (text:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function bound_parameter(bound, query)
  for pair in query:gmatch("[^&]+") do
    local name = unescape(pair:match("^[^=]*"))
    if bound == "*" or bound[name:match("^[^.]*")] then
      return name
    end
  end
  return nil
end

-- A gRPC message flagged compressed in a request that names no compression: grpcio would fail
-- the call as INTERNAL ("Compression bit set but no encoding configured"). Only requests the
-- buffer filter holds whole are looked at (it gives them a content-length); streams pass.
local function compressed_without_encoding(handle, headers)
  local encoding = headers:get("grpc-encoding")
  if headers:get("content-length") == nil or (encoding ~= nil and encoding ~= "identity") then
    return false
  end
  local body = handle:body()
  if body == nil or body:length() == 0 then
    return false
  end
  return string.byte(body:getBytes(0, 1)) % 2 == 1
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if compressed_without_encoding(handle, headers) then
    handle:respond(
      {[":status"] = "400"},
      "the message is flagged compressed but the request names no grpc-encoding"
    )
    return
  end
  headers = handle:headers()
  local original = headers:get("x-envoy-original-path")
  if original == nil then
    return
  end
  local query = original:match("%?(.*)")
  if query == nil then
    return
  end
  -- A parameter without "=" sets nothing (the transcoder skips it): say so instead.
  for pair in query:gmatch("[^&]+") do
    if not pair:find("=", 1, true) then
      handle:respond(
        {[":status"] = "400"},
        "query parameter " .. string.format("%q", unescape(pair)) .. " has no value (name=value)"
      )
      return
    end
  end
  local bound = BOUND[headers:get(":path")]
  if bound == nil then
    return
  end
  local name = bound_parameter(bound, query)
  if name ~= nil then
    handle:respond(
      {[":status"] = "400"},
      "query parameter " .. string.format("%q", name)
        .. " cannot set a field that the path or the body already sets"
    )
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  -- Envoy runs its own answers through every filter too; only a service's answer counts here.
  if headers:get("x-envoy-upstream-service-time") == nil then
    return
  end
  local status = headers:get("grpc-status")
  if status == nil then
    -- Not trailers-only: the status comes in the trailers, after the messages.
    for _ in handle:bodyChunks() do
    end
    local trailers = handle:trailers()
    if trailers ~= nil then
      status = trailers:get("grpc-status")
    end
  end
  if status ~= nil then
    handle:streamInfo():dynamicMetadata():set(METADATA, "grpc_status", status)
  end
end
