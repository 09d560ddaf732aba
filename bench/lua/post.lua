-- wrk script: POSTs a ~200-byte JSON order event; the report at the end is report.lua's.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"orderId":"o-000000123456","customerId":"c-98765","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","total":45.48,"createdAt":"2024-05-01T12:00:00Z"}'
