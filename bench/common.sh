# Shared by the bench scripts (sourced).

# Rate limits exist to stop a load test; benchmarks raise them out of the way (the limiter
# still runs and counts every request: its cost is part of every figure). A binary from
# before the limits (BINARY=…) knows no such settings, so they are set only when it does.
bench_limits_env() {
  local herald="$1"
  if "$herald" config check 2>/dev/null | grep -q '^\[limits\]'; then
    export HERALD_LIMITS__CREDENTIAL__PER_MINUTE=1000000 HERALD_LIMITS__CREDENTIAL__BURST=1000000
    export HERALD_LIMITS__ROUTES__LOOKUP__PER_MINUTE=1000000 HERALD_LIMITS__ROUTES__LOOKUP__BURST=1000000
    export HERALD_LIMITS__SOURCE_REQUESTS__PER_MINUTE=1000000 HERALD_LIMITS__SOURCE_REQUESTS__BURST=1000000
    export HERALD_LIMITS__ENUMERATION__DISTINCT_NUMBERS=100000000
    export HERALD_OAUTH__ACCESS_TOKEN_LIFETIME=15m
  fi
}

# AUTH=oauth: an OAuth client of the admin integration (client_secret_basic) and an access
# token for it, used instead of the API key; prints the token. AUTH=client: prints
# "client_id:client_secret" (the token scenario's credentials).
bench_credential() {
  local base="$1" key="$2" mode="${AUTH:-key}"
  if [ "$mode" = key ]; then echo "$key"; return; fi
  local admin client id secret
  admin="$(curl -sf "$base/v1/integrations?limit=500" -H "authorization: Bearer $key" \
    | grep -o '"id":"int_[0-9a-v]*","name":"admin"' | cut -d'"' -f4)"
  client="$(curl -sf "$base/v1/integrations/$admin/oauth-clients" -H "authorization: Bearer $key" \
    -H 'content-type: application/json' \
    -d '{"name":"bench","scopes":["messages:send","subjects:write","subjects:read","consents:write"]}')"
  id="$(grep -o '"client_id":"[^"]*"' <<<"$client" | cut -d'"' -f4)"
  secret="$(grep -o '"client_secret":"[^"]*"' <<<"$client" | cut -d'"' -f4)"
  if [ "$mode" = client ]; then echo "$id:$secret"; return; fi
  curl -sf "$base/oauth/token" -u "$id:$secret" -d grant_type=client_credentials \
    | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4
}
