#!/usr/bin/env bash
# What a release needs from the repository, for .github/workflows/release.yml (and to try
# before tagging):
#   scripts/release.sh check vX.Y.Z   the tag names the version the crates, the chart (version
#                                     and appVersion) and CHANGELOG.md all give; prints
#                                     version=X.Y.Z (for $GITHUB_OUTPUT)
#   scripts/release.sh notes X.Y.Z    that version's section of CHANGELOG.md, the release notes
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

notes() { # version
  # From the line after "## [X.Y.Z]" to the next "## [" heading.
  awk -v heading="## [$1]" '
    index($0, heading) == 1 { inside = 1; next }
    inside && /^## \[/ { exit }
    inside { print }
  ' "$ROOT/CHANGELOG.md" | sed -e '/./,$!d'
}

case "${1:-}" in
  check)
    tag=${2:?usage: $0 check vX.Y.Z}
    [[ $tag =~ ^v([0-9]+\.[0-9]+\.[0-9]+)$ ]] || { echo "tag $tag is not vMAJOR.MINOR.PATCH" >&2; exit 1; }
    version=${BASH_REMATCH[1]}
    crates=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
    chart=$(sed -n 's/^version: //p' "$ROOT/helm/zipkit/Chart.yaml")
    app=$(sed -n 's/^appVersion: "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/helm/zipkit/Chart.yaml")
    failed=0
    for pair in "Cargo.toml:$crates" "the chart's version:$chart" "the chart's appVersion:$app"; do
      if [ "${pair##*:}" != "$version" ]; then
        echo "$tag: ${pair%:*} says ${pair##*:}" >&2
        failed=1
      fi
    done
    if [ -z "$(notes "$version")" ]; then
      echo "$tag: CHANGELOG.md has no section \"## [$version]\"" >&2
      failed=1
    fi
    [ "$failed" = 0 ] || exit 1
    echo "version=$version"
    ;;
  notes)
    notes "${2:?usage: $0 notes X.Y.Z}"
    ;;
  *) echo "usage: $0 check vX.Y.Z | notes X.Y.Z" >&2; exit 2 ;;
esac
