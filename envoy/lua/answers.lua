-- The edge filter closest to the client: it finishes the answers the edge composes by itself,
-- and records the gRPC status the client received for the access log.
--
-- * Headers: a request whose header block is over the limit gets 431 / RESOURCE_EXHAUSTED.
-- * Not modified: a download whose ETag matches the request's If-None-Match comes back from
--   storage_svc without bytes and with a `meshgram-not-modified` header; REST clients get 304.
-- * gRPC-web clients of an edge answer get the same code as everyone else: Envoy's gRPC-web
--   filter derives grpc-status from the HTTP status with the gRPC spec's mapping for proxies
--   (a bad request would read INTERNAL). CODES maps the edge's HTTP statuses to gRPC codes; it
--   is generated from tools/edge.py's LOCAL_REPLIES, which also label the JSON answers.
-- * The JSON parser's messages quote the offending input over several lines with a caret under
--   it; REST clients get the first line, which says what is wrong.
-- * The access log's grpc_status is what this client received: the service's status when the
--   call reached one (recorded by upstream.lua), else the code of the edge's own answer.

local CODES = ${CODES}

local METADATA = "meshgram.edge"

-- The header block a request may have. Envoy's codec has a higher, hard limit: past it, an
-- HTTP/2 stream is reset, which gRPC clients would read as INTERNAL; below it this filter
-- answers 431 / RESOURCE_EXHAUSTED, the same way for every protocol.
local MAX_HEADER_BYTES = ${MAX_HEADER_BYTES}

function envoy_on_request(handle)
  local headers = handle:headers()
  local size = 0
  for key, value in pairs(headers) do
    size = size + #key + #value
  end
  if size > MAX_HEADER_BYTES then
    handle:respond(
      {[":status"] = "431"},
      "the request headers are larger than " .. math.floor(MAX_HEADER_BYTES / 1024) .. " KiB"
    )
    return
  end
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set(METADATA, "method", headers:get(":method") or "")
  local content_type = headers:get("content-type") or ""
  meta:set(METADATA, "grpc_web", content_type:find("^application/grpc%-web") ~= nil)
end

-- The edge's JSON error with its message cut at the first (JSON-escaped) line break.
local function first_line(json)
  local head, message = json:match('^(.-"message":")(.*)')
  if message == nil then
    return json
  end
  local cut = message:find('[^\\]\\n')
  if cut == nil then
    return json
  end
  return head .. message:sub(1, cut) .. '"}'
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local request = handle:streamInfo():dynamicMetadata():get(METADATA) or {}

  if headers:get("meshgram-not-modified") ~= nil then
    headers:remove("meshgram-not-modified")
    if request.method == "GET" or request.method == "HEAD" then
      headers:replace(":status", "304")
      headers:remove("content-type")
      headers:remove("content-length")
    end
  end

  if request.grpc_status ~= nil then
    return
  end
  -- The call never reached a service: this is the edge's own answer.
  local status = headers:get("grpc-status")
  local code = CODES[tonumber(headers:get(":status"))]
  if request.grpc_web and status ~= nil and code ~= nil then
    headers:replace("grpc-status", code)
    status = code
  end
  if status == nil and (headers:get("content-type") or ""):find("^application/json") then
    -- body() waits for the whole (small) body; objects taken before it are stale after it.
    local body = handle:body()
    if body ~= nil then
      local json = body:getBytes(0, body:length())
      status = json:match('^{"code":(%d+)')
      local trimmed = first_line(json)
      if trimmed ~= json then
        body:setBytes(trimmed)
      end
    end
  end
  if status ~= nil then
    handle:streamInfo():dynamicMetadata():set(METADATA, "grpc_status", status)
  end
end
