#!/usr/bin/env bash
# Runs one dashboard browser step: installs playwright-core here on first use,
# then `node dashboard.spec.mjs "$@"`. Env: ADMIN_URL (required), ADMIN_TOKEN,
# CHROMIUM (default /usr/bin/chromium). See dashboard.spec.mjs for the steps.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/playwright-core/package.json ]; then
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >&2
  else
    npm install --no-audit --no-fund --loglevel=error >&2
  fi
fi
exec node dashboard.spec.mjs "$@"
