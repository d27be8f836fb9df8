#!/usr/bin/env bash
# Fills the npm cache with what test/e2e/plugin-outside-checkout.test.ts installs with --offline: the
# registry metadata of a scaffolded plugin's tools (vitest, typescript, tsx, @types/node and theirs;
# `npm ci` caches tarballs only). Run online once after the project's install (dist/ built), e.g.
# in .ci/run after `npm ci`: bash test/harness/npm-cache-for-plugins.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
node "$root/bin/relay.js" plugin new warm --dir "$tmp" >/dev/null
cd "$tmp/relay-plugin-warm"
npm install -D "$root" --prefer-offline --no-audit --no-fund >/dev/null
echo "npm cache: a scaffolded plugin's packages are there for --offline installs"
