-- wrk script: single publishes to the HTTP publish API (POST /api/publish).
-- wrk -t1 -c32 -d10s -s loadtest/wrk_publish.lua http://127.0.0.1:8766/api/publish
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"channel":"bench","data":{"symbol":"AAPL","price":189.25,"ts":1700000000000}}'
