#!/usr/bin/env bash
# Fails unless .ci/run runs exactly the README's two commands, the main job ("Run it") first and
# then the tests ("Test it"), and nothing else: CI must prove what the README promises.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=check-ci
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# The commands of the first ```sh block under a README heading.
readme_block() { # heading
  awk -v heading="$1" '
    $0 == heading { inside = 1; next }
    inside && /^## / { exit }
    inside && /^```sh$/ { block = 1; next }
    block && /^```$/ { exit }
    block && NF { print }
  ' "$ROOT/README.md"
}

run=$(readme_block "## Run it")
test=$(readme_block "## Test it")
[ -n "$run" ] || die "README.md has no sh block under '## Run it'"
[ -n "$test" ] || die "README.md has no sh block under '## Test it'"
expected=$(printf '%s\n%s' "$run" "$test")
# What .ci/run executes: its lines without comments, the shebang, `set` and its own `cd`.
actual=$(grep -vE '^\s*(#|$|set |cd )' "$ROOT/.ci/run")
if [ "$expected" != "$actual" ]; then
  printf 'README (Run it, then Test it):\n%s\n.ci/run:\n%s\n' "$expected" "$actual" >&2
  die ".ci/run does not run exactly the README's two commands in order"
fi
log "ok: .ci/run runs the README's commands: $(tr '\n' ';' <<<"$expected")"
