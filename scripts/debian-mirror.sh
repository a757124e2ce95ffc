#!/usr/bin/env bash
# Prints the Debian archive URI this machine's apt already uses for release CODENAME (default: this
# system's), read from /etc/apt/sources.list, sources.list.d/*.list and deb822 *.sources. The repository
# never names a mirror host: tests and the lab use whatever the machine is configured with.
# Usage: scripts/debian-mirror.sh [CODENAME]   (exit 1 with a message when none is configured)
set -euo pipefail
codename="${1:-$(. /etc/os-release && echo "$VERSION_CODENAME")}"
uri=$(
  {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v c="$codename" '$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /^[a-z+]+:\/\//) { if ($(i + 1) == c) print $i; break } }'
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -e "$f" ] || continue
      awk -v c="$codename" '
        BEGIN { RS = "" }
        {
          types = ""; uris = ""; suites = ""
          n = split($0, lines, "\n")
          for (i = 1; i <= n; i++) {
            line = lines[i]
            if (line ~ /^[ \t]*#/) continue
            if (line ~ /^Types:/) types = substr(line, 7)
            if (line ~ /^URIs:/) uris = substr(line, 6)
            if (line ~ /^Suites:/) suites = substr(line, 8)
          }
          split(suites, s, /[ \t]+/)
          for (j in s) if (s[j] == c && types ~ /(^|[ \t])deb([ \t]|$)/) { split(uris, u, /[ \t]+/); for (k in u) if (u[k] != "") { print u[k]; exit } }
        }' "$f"
    done
  } | head -n 1
)
if [ -z "$uri" ]; then
  echo "scripts/debian-mirror.sh: apt has no 'deb' source for ${codename}: configure a Debian mirror in /etc/apt/sources.list(.d)" >&2
  exit 1
fi
echo "${uri%/}"
