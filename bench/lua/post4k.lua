-- wrk script: POSTs a 4 KiB JSON body (the efficiency benchmark's write); the report is report.lua's.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- {"data":"xxxx...x"} padded to exactly 4096 bytes.
wrk.body = '{"data":"' .. string.rep("x", 4096 - 12) .. '"}'
