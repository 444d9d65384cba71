-- Media downloads (GET /media/{image_id}/{variant}) made cacheable at the edge.
--
-- storage_svc picks WebP or JPEG from the Accept header when the URL names no format, and says
-- so with `vary: accept`. Envoy's HTTP cache stores nothing that varies, and keys what it
-- stores by path, so here the choice storage_svc would make is written into the path
-- (`?format=webp` or `format=jpeg`) before the cache looks: every browser asking for the same
-- rendition hits the same entry. The client still gets `vary: accept`, since its URL named no
-- format. The rule mirrors storage_svc/delivery.py's choose_format; an end-to-end test asks
-- both ways with the same Accept headers and compares.

local METADATA = "meshgram.media"

-- Whether an Accept header lists image/webp with a non-zero quality.
local function takes_webp(accept)
  for item in accept:lower():gmatch("[^,]+") do
    local name = (item:match("^[^;]*") or ""):match("^%s*(.-)%s*$")
    if name == "image/webp" then
      local quality = item:match(";%s*q%s*=%s*([0-9.]+)")
      return quality == nil or (tonumber(quality) or 0) > 0
    end
  end
  return false
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local method = headers:get(":method")
  local path = headers:get(":path") or ""
  if (method ~= "GET" and method ~= "HEAD") or path:find("^/media/") == nil then
    return
  end
  local query = path:match("%?(.*)") or ""
  for pair in query:gmatch("[^&]+") do
    if pair:find("^format=") then
      return
    end
  end
  local format = takes_webp(headers:get("accept") or "") and "webp" or "jpeg"
  local separator = path:find("?", 1, true) and "&" or "?"
  headers:replace(":path", path .. separator .. "format=" .. format)
  handle:streamInfo():dynamicMetadata():set(METADATA, "chosen", true)
end

function envoy_on_response(handle)
  local chosen = (handle:streamInfo():dynamicMetadata():get(METADATA) or {}).chosen
  if chosen then
    handle:headers():replace("vary", "accept")
  end
end
