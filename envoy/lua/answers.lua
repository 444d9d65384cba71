-- The edge filter closest to the client: it finishes the answers the edge composes by itself,
-- and records the gRPC status the client received for the access log.
--
-- * Headers: a request whose header block is over the limit gets 431 / RESOURCE_EXHAUSTED; one
--   with a header name gRPC metadata cannot carry, or a grpc-encoding the services cannot
--   decode, gets 400 / INVALID_ARGUMENT; a REST body with a content-encoding gets 415 /
--   INVALID_ARGUMENT; gRPC's own headers from clients are dropped.
-- * Images carry X-Content-Type-Options: nosniff.
-- * Media statuses: storage_svc answers a download with a `meshgram-status` header when HTTP
--   wants another status than 200: 304 (the client's copy, named by If-None-Match, is current;
--   no bytes follow), 206 (a Range of the bytes) or 416 (a Range outside the file). REST clients
--   get that status; the header itself stays inside.
-- * gRPC-web clients of an edge answer get the same code as everyone else: Envoy's gRPC-web
--   filter derives grpc-status from the HTTP status with the gRPC spec's mapping for proxies
--   (a bad request would read INTERNAL). CODES maps the edge's HTTP statuses to gRPC codes; it
--   is generated from tools/edge.py's LOCAL_REPLIES, which also label the JSON answers.
-- * A REST path asked with a method it is not served with gets 405 and an Allow header (the
--   transcoder answers 404, as for a path that does not exist).
-- * The JSON parser's messages quote the offending input over several lines with a caret under
--   it; REST clients get the first line, which says what is wrong.
-- * The access log's grpc_status is what this client received: the service's status when the
--   call reached one (recorded by upstream.lua), else the code of the edge's own answer.

local CODES = ${CODES}

-- The REST routes: an anchored Lua pattern per path template and the verbs it is served with
-- (generated from the google.api.http rules by tools/edge.py).
local ROUTES = ${ROUTES}

local METADATA = "meshgram.edge"

-- The code of a request its Host does not serve (LocalReply NOT_ON_THIS_HOST in tools/edge.py).
local NOT_ON_THIS_HOST = "${NOT_ON_THIS_HOST}"

-- The statuses storage_svc may ask for (and nothing else: a header cannot make any answer).
local MEDIA_STATUSES = {["206"] = true, ["304"] = true, ["416"] = true}

-- The message encodings the services decode (grpcio's).
local ENCODINGS = {identity = true, gzip = true, deflate = true}

-- The header block a request may have. Envoy's codec has a higher, hard limit: past it, an
-- HTTP/2 stream is reset, which gRPC clients would read as INTERNAL; below it this filter
-- answers 431 / RESOURCE_EXHAUSTED, the same way for every protocol.
local MAX_HEADER_BYTES = ${MAX_HEADER_BYTES}

-- text as a grpc-message value: control characters, "%" and non-ASCII bytes as %XX.
local function percent_encoded(text)
  return (text:gsub("[%c\128-\255%%]", function(char)
    return string.format("%%%02X", string.byte(char))
  end))
end

-- Answer the request here with status and text: gRPC-web clients read the text as grpc-message
-- (their body holds frames), everyone else in the body (JSON for REST, by local_reply_config).
local function refuse(handle, status, text, grpc_web)
  if grpc_web then
    handle:respond({[":status"] = status, ["grpc-message"] = percent_encoded(text)}, "")
  else
    handle:respond({[":status"] = status}, text)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  local grpc_web = content_type:find("^application/grpc%-web") ~= nil
  local size = 0
  local bad_name = nil
  for key, value in pairs(headers) do
    size = size + #key + #value
    -- HTTP allows names gRPC metadata does not (a service would fail the call as INTERNAL).
    if bad_name == nil and (key == "" or key:find("[^a-z0-9_.%-]", key:sub(1, 1) == ":" and 2 or 1)) then
      bad_name = key
    end
  end
  if bad_name ~= nil then
    refuse(
      handle, "400",
      "header name " .. string.format("%q", bad_name) .. " has characters other than a-z 0-9 - _ .",
      grpc_web
    )
    return
  end
  if size > MAX_HEADER_BYTES then
    refuse(
      handle, "431",
      "the request headers are larger than " .. math.floor(MAX_HEADER_BYTES / 1024) .. " KiB",
      grpc_web
    )
    return
  end
  local grpc_client = content_type:find("^application/grpc") ~= nil
  -- A REST body is read as it comes: a compressed one would be taken for its bytes (an upload
  -- of gzip as picture data), so any coding but identity is refused.
  local body_coding = headers:get("content-encoding")
  if not grpc_client and body_coding ~= nil and body_coding:lower() ~= "identity" then
    refuse(
      handle, "415",
      "content-encoding " .. string.format("%q", body_coding) .. " is not supported: send the body as it is",
      false
    )
    return
  end
  local encoding = headers:get("grpc-encoding")
  if grpc_client and encoding ~= nil and not ENCODINGS[encoding] then
    refuse(
      handle, "400",
      "grpc-encoding " .. string.format("%q", encoding) .. " is not supported: use identity, gzip or deflate",
      grpc_web
    )
    return
  end
  -- gRPC's own headers and binary metadata are the protocol's business or ours: a client's
  -- (a -bin value that is not base64, grpc-status, grpc-previous-rpc-attempts...) made grpcio
  -- fail the call as INTERNAL. None of them means anything to the services, so they go; a gRPC
  -- client keeps only its message encoding, and REST clients (whose bodies the edge encodes)
  -- not even that. grpc-timeout is taken by the routes before the request is sent on.
  local dropped = {}
  for key, _ in pairs(headers) do
    local kept = key == "grpc-accept-encoding" or key == "grpc-timeout"
      or (grpc_client and key == "grpc-encoding")
    if not kept and (key:find("^grpc%-") or key:sub(-4) == "-bin") then
      dropped[#dropped + 1] = key
    end
  end
  for _, key in ipairs(dropped) do
    headers:remove(key)
  end
  -- grpcio resets a gRPC stream that lacks "te: trailers"; the edge speaks for the client.
  if grpc_client and content_type:find("^application/grpc%-web") == nil then
    headers:replace("te", "trailers")
  end
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set(METADATA, "method", headers:get(":method") or "")
  meta:set(METADATA, "path", (headers:get(":path") or ""):match("^[^?]*"))
  meta:set(METADATA, "grpc_web", grpc_web)
  meta:set(METADATA, "grpc", grpc_client)
end

-- The verbs a REST path is served with (none when no route has that path), sorted.
local function allowed_verbs(path)
  local seen, verbs = {}, {}
  for _, route in ipairs(ROUTES) do
    if path:find(route.pattern) then
      for _, verb in ipairs(route.verbs) do
        if not seen[verb] then
          seen[verb] = true
          verbs[#verbs + 1] = verb
        end
      end
    end
  end
  table.sort(verbs)
  return verbs
end

-- The JSON answer to a method that a REST path is not served with.
local function method_not_allowed(verbs)
  return '{"code":12,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",'
    .. '"domain":"meshgram.dev","metadata":{},"reason":"METHOD_NOT_ALLOWED"}],'
    .. '"message":"this path is served with ' .. verbs .. ' only"}'
end

-- The edge's JSON error with its message cut at the first (JSON-escaped) line break.
local function first_line(json)
  local head, message = json:match('^(.-"message":")(.*)')
  if message == nil then
    return json
  end
  -- Envoy escapes a line break as \n, or as \u000a when the text holds bytes that are not
  -- UTF-8; either way what follows it quotes the client's input (a password, say).
  local cut = message:find('[^\\]\\n') or message:find('[^\\]\\u000a')
  if cut == nil then
    return json
  end
  return head .. message:sub(1, cut) .. '"}'
end

-- The methods a REST path is served with when method is not one of them, comma-separated;
-- "" when the path is unknown or served with that method.
local function other_methods(path, method)
  local allowed = allowed_verbs(path or "")
  local listed = table.concat(allowed, ", ")
  if #allowed == 0 or (", " .. listed .. ", "):find(", " .. (method or "") .. ", ", 1, true) then
    return ""
  end
  return listed
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local request = handle:streamInfo():dynamicMetadata():get(METADATA) or {}
  local read = request.method == "GET" or request.method == "HEAD"

  local media_status = headers:get("meshgram-status")
  if media_status ~= nil and read and not request.grpc then
    -- REST: the status itself; gRPC and gRPC-web callers read the header.
    headers:remove("meshgram-status")
    if MEDIA_STATUSES[media_status] then
      headers:replace(":status", media_status)
      if media_status == "304" then
        headers:remove("content-type")
        headers:remove("content-length")
      end
    end
  end
  if not request.grpc then
    -- The services' gRPC encodings mean nothing to a REST client of the edge.
    headers:remove("grpc-accept-encoding")
  end
  -- A refusal for want of a valid access token (the edge's or a service's) names the scheme to
  -- use for REST clients (RFC 6750); gRPC clients read grpc-status instead.
  if request.grpc then
    headers:remove("www-authenticate")
    if request.grpc_web and request.grpc_status == nil and headers:get("grpc-status-details-bin") then
      -- The edge's refusal of a token carries the service's answer (tools/edge_jwt.py), and
      -- like the service's it is a trailers-only answer with HTTP 200.
      headers:replace(":status", "200")
    end
  elseif headers:get(":status") == "401" then
    headers:replace("www-authenticate", 'Bearer realm="meshgram"')
  end
  if (headers:get("content-type") or ""):find("^image/") then
    -- Images are served as what their bytes were found to be, never sniffed into HTML.
    headers:replace("x-content-type-options", "nosniff")
  end

  if request.grpc_status ~= nil then
    return
  end
  -- The call never reached a service: this is the edge's own answer.
  local http_status = headers:get(":status")
  local status = headers:get("grpc-status")
  local code = CODES[tonumber(http_status)]
  local access = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.rbac") or {}
  if access.enforced_engine_result == "denied" then
    -- A path its Host does not serve (routing by host, tools/edge_hosts.py).
    code = NOT_ON_THIS_HOST
  end
  if request.grpc_web and status ~= nil and code ~= nil then
    headers:replace("grpc-status", code)
    status = code
    if headers:get("grpc-message") == nil then
      -- The edge's text would sit in the body, where a gRPC-web client reads frames: it moves
      -- to grpc-message, as for every other client, and the body is emptied.
      local body = handle:body()
      if body ~= nil and body:length() > 0 then
        local text = body:getBytes(0, math.min(body:length(), 512))
        handle:headers():replace("grpc-message", percent_encoded(text))
        body:setBytes("")
      end
      handle:streamInfo():dynamicMetadata():set(METADATA, "grpc_status", status)
      return
    end
  end
  local is_json = (headers:get("content-type") or ""):find("^application/json") ~= nil
  if status ~= nil or not is_json or (tonumber(http_status) or 0) < 400 then
    if status ~= nil then
      handle:streamInfo():dynamicMetadata():set(METADATA, "grpc_status", status)
    end
    return
  end
  -- 404 from the transcoder; 400 (with no message) for methods the codec cannot parse.
  local verbs = ""
  if http_status == "404" or http_status == "400" then
    verbs = other_methods(request.path, request.method)
  end
  if verbs ~= "" then
    -- A known path asked with another method: 405 with Allow, as HTTP wants.
    headers:replace(":status", "405")
    headers:replace("allow", verbs)
  end
  -- body() waits for the whole (small) body; objects taken before it are stale after it.
  local body = handle:body()
  local json
  if verbs ~= "" then
    json = method_not_allowed(verbs)
  elseif body ~= nil then
    -- Refusals from the codec (broken framing, say) come without text.
    json = first_line(body:getBytes(0, body:length())):gsub(
      '"message":""', '"message":"the edge cannot read this request (HTTP ' .. http_status .. ')"'
    )
  end
  if json ~= nil then
    status = json:match('^{"code":(%d+)')
    if body ~= nil then
      body:setBytes(json)
    end
  end
  if status ~= nil then
    handle:streamInfo():dynamicMetadata():set(METADATA, "grpc_status", status)
  end
end
