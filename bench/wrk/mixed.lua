-- The mixed load: 75% pull, 25% push, by requests and by bytes.
--
-- Each wrk thread has one connection (run with -t N -c N) and repeats a
-- cycle of 8 requests:
--   GET manifest by tag, GET blob, GET manifest by digest, GET blob,
--   GET manifest by tag, GET blob                          (6 pulls)
--   POST blobs/uploads/, PUT <location>&digest= with the blob body (1 push)
-- The pulled and the pushed blobs are the same size (4 MiB by default), so
-- 3/4 of the blob bytes move out and 1/4 move in. Pushes go to their own
-- repository and repeat one blob: every push is still received, hashed and
-- made durable in full by each server before the blob is found to exist.
--
-- Arguments (after --): repo tag manifest-digest pull-blob-digest
--                       push-repo push-blob-file push-blob-digest
local src = debug.getinfo(1, "S").source:sub(2)
dofile(src:match("(.*/)") .. "report.lua")

local accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " ..
  "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

local repo, tag, mdigest, bdigest, push_repo, push_body, push_digest
local step = 0
local location = nil

function init(args)
  repo, tag, mdigest, bdigest, push_repo = args[1], args[2], args[3], args[4], args[5]
  local f = assert(io.open(args[6], "rb"))
  push_body = f:read("*a")
  f:close()
  push_digest = args[7]
end

local function relative(url)
  -- Distribution answers absolute Locations; Berth relative ones.
  return (url:gsub("^https?://[^/]+", ""))
end

function request()
  local s = step % 8
  if s == 0 or s == 4 then
    return wrk.format("GET", "/v2/" .. repo .. "/manifests/" .. tag, { ["Accept"] = accept })
  elseif s == 2 then
    return wrk.format("GET", "/v2/" .. repo .. "/manifests/" .. mdigest, { ["Accept"] = accept })
  elseif s == 1 or s == 3 or s == 5 then
    return wrk.format("GET", "/v2/" .. repo .. "/blobs/" .. bdigest)
  elseif s == 6 then
    return wrk.format("POST", "/v2/" .. push_repo .. "/blobs/uploads/", { ["Content-Length"] = "0" }, "")
  else
    local sep = location:find("?", 1, true) and "&" or "?"
    return wrk.format("PUT", location .. sep .. "digest=" .. push_digest,
      { ["Content-Type"] = "application/octet-stream" }, push_body)
  end
end

function response(status, headers, body)
  local s = step % 8
  if s == 6 then
    local loc = headers["Location"] or headers["location"]
    if status ~= 202 or not loc then
      step = 0 -- start the cycle over; wrk counts the bad status
      return
    end
    location = relative(loc)
  end
  step = step + 1
end
