#!/usr/bin/env bash
# Prints the mirror URL this machine's apt sources use for the Debian release CODENAME,
# so ci/deps.sh can add a backports line on the same mirror without naming an archive
# host (a machine behind a local mirror keeps using it). Reads the one-line format
# (sources.list, sources.list.d/*.list) and deb822 (sources.list.d/*.sources, `URIs:`),
# like harness/aptsources.py. Exit 1, printing nothing, when no entry serves CODENAME.
#   usage: ci/apt-mirror.sh CODENAME [APT_ETC_DIR (default /etc/apt)]
set -euo pipefail
codename=${1:?usage: $0 CODENAME [APT_ETC_DIR]}
etc=${2:-/etc/apt}

one_line() {
    # deb [options] URI suite components...; the options group may hold spaces.
    awk -v want="$codename" '
        { sub(/#.*/, "") }
        $1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == want) { print $i; exit }
        }' "$1"
}

deb822() {
    # Stanzas separated by blank lines; Types must list deb, Suites the codename.
    awk -v want="$codename" '
        BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uris = ""; suites = ""; enabled = "yes"
            for (n = 1; n <= NF; n++) {
                line = $n
                if (line ~ /^#/ || index(line, ":") == 0) continue
                key = tolower(substr(line, 1, index(line, ":") - 1))
                value = substr(line, index(line, ":") + 1)
                if (key == "types") types = " " value " "
                else if (key == "uris") uris = value
                else if (key == "suites") suites = " " value " "
                else if (key == "enabled") enabled = tolower(value)
            }
            gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
            if (enabled ~ /no/ || index(types, " deb ") == 0) next
            if (index(suites, " " want " ") == 0) next
            split(uris, list, /[ \t]+/)
            for (u = 1; u in list; u++) if (list[u] != "") { print list[u]; exit }
        }' "$1"
}

# apt's reading order: sources.list, then sources.list.d/ by name (both formats).
export LC_ALL=C
for f in "$etc/sources.list" "$etc"/sources.list.d/*; do
    [ -f "$f" ] || continue
    case "$f" in
        */sources.list | *.list) uri=$(one_line "$f") ;;
        *.sources) uri=$(deb822 "$f") ;;
        *) continue ;;
    esac
    # Same rule as the lab's (harness/aptsources.py MIRROR): plain http(s) or file URLs.
    if [ -n "$uri" ] && [[ "$uri" =~ ^(https?|file):// ]] && [[ ! "$uri" =~ [][[:space:]] ]]; then
        echo "${uri%/}"
        exit 0
    fi
done
exit 1
