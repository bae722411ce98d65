#!/usr/bin/env bash
# Writes the package's machine-readable copyright file to standard output:
# the project's own paragraphs (deploy/debian/copyright), then one
# paragraph per Go module compiled into BINARY and one for the Go runtime
# and standard library, with their licence texts from the module cache and
# GOROOT. The MIT and BSD licences require their notice in binary
# distributions, Apache-2.0 the NOTICE file: both are here.
#   deploy/debian/gen-copyright.sh BINARY >copyright
set -euo pipefail
bin=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modcache=$(go env GOMODCACHE)
goroot=$(go env GOROOT)

# licence_of FILE: Debian's short name of the licence FILE holds.
licence_of() {
	local f=$1 names=()
	if grep -q 'Redistribution and use in source and binary forms' "$f"; then
		if grep -q 'Neither the name' "$f"; then names+=(BSD-3-clause); else names+=(BSD-2-clause); fi
	fi
	grep -q 'Permission is hereby granted, free of charge' "$f" && names+=(Expat)
	grep -q 'Apache License' "$f" && names+=(Apache-2.0)
	grep -qiE 'Mozilla Public License,? version 2\.0' "$f" && names+=(MPL-2.0)
	if ((${#names[@]} == 0)); then
		echo "gen-copyright.sh: no known licence in $f" >&2
		return 1
	fi
	local IFS=' '
	local out=${names[*]}
	echo "${out// / and }"
}

# holders: the copyright statements among the lines on standard input,
# without "Copyright", "(c)" and "All rights reserved".
holders() {
	{ grep -E '^[[:space:]/#*]*Copyright[[:space:]]+(\([cC]\)[[:space:]]*|©[[:space:]]*)?[0-9]' || true; } |
		sed -E 's/^[[:space:]/#*]*Copyright[[:space:]]+(\([cC]\)[[:space:]]*|©[[:space:]]*)?//; s/[[:space:].,]*All [Rr]ights [Rr]eserved\.?//; s/[[:space:]]+$//'
}

# indent: standard input as the continuation lines of a field.
indent() { sed -E 's/[[:space:]]+$//; s/^$/./; s/^/ /'; }

# paragraph FILES DIR LICENCEFILE [FALLBACK-HOLDER [COMMENT]]
paragraph() {
	local files=$1 dir=$2 lic=$3 comment=${5:-} name copyright
	name=$(licence_of "$lic")
	copyright=$({ cat "$lic"; [[ ! -f $dir/NOTICE ]] || cat "$dir/NOTICE"; } | holders | awk '!seen[$0]++')
	if [[ -z $copyright ]]; then
		# Apache-2.0 texts name nobody: the most frequent holders in the
		# source headers.
		copyright=$({ grep -rhE --include='*.go' '^// Copyright' "$dir" || true; } | holders | sort | uniq -c | sort -rn | head -3 | sed -E 's/^ *[0-9]+ //')
	fi
	[[ -n $copyright ]] || copyright=${4:-"the authors of ${files%/\*}"}
	echo
	echo "Files: $files"
	echo "Copyright: $(head -1 <<<"$copyright")"
	tail -n +2 <<<"$copyright" | sed 's/^/ /'
	echo "License: $name"
	case $name in
	Apache-2.0 | MPL-2.0) ;; # the stand-alone paragraphs point to common-licenses
	*Apache-2.0*)
		# A licence file that holds the Apache-2.0 terms besides others
		# (klauspost/compress): the others in full, the Apache terms by
		# reference, as Debian wants them.
		awk '/TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION/ { skip = 1; print "   [The terms of the Apache License, Version 2.0: /usr/share/common-licenses/Apache-2.0]" }
			!skip { print }
			/END OF TERMS AND CONDITIONS/ { skip = 0 }' "$lic" | indent
		;;
	*) indent <"$lic" ;;
	esac
	if [[ -f $dir/NOTICE ]]; then
		echo "Comment: ${comment:+$comment }The NOTICE file:"
		indent <"$dir/NOTICE"
	elif [[ -n $comment ]]; then
		echo "Comment: $comment"
	fi
	used+=("$name")
}

# licence_file DIR: the module's licence file.
licence_file() {
	local f
	for f in LICENSE LICENSE.md LICENSE.txt COPYING; do
		if [[ -f $1/$f ]]; then
			echo "$1/$f"
			return
		fi
	done
	echo "gen-copyright.sh: no licence file in $1" >&2
	return 1
}

used=()
cat "$here/copyright"
# `go version -m`: "dep PATH VERSION SUM", followed by "=> PATH VERSION SUM"
# when go.mod replaces it.
mods=$(go version -m "$bin" | awk '$1 == "dep" { m[++n] = $2 " " $3 } $1 == "=>" { m[n] = $2 " " $3 } END { for (i = 1; i <= n; i++) print m[i] }')
while read -r path version; do
	[[ -n $path ]] || continue
	# The module cache spells upper case as ! and lower case.
	dir=$modcache/$(sed -E 's/[A-Z]/!\L&/g' <<<"$path@$version")
	lic=$(licence_file "$dir")
	paragraph "vendor/$path/*" "$dir" "$lic" "" "Go module $path $version."
done <<<"$mods"
paragraph "go/src/*" "$goroot" "$goroot/LICENSE" "The Go Authors" \
	"The Go runtime and standard library, $(go version -m "$bin" | head -1 | awk '{print $2}')."

# Stand-alone paragraphs of the licences Debian ships in full.
if [[ " ${used[*]} " == *" MPL-2.0 "* ]]; then
	cat <<'EOF'

License: MPL-2.0
 This Source Code Form is subject to the terms of the Mozilla Public
 License, v. 2.0.
 .
 On Debian systems, the complete text of the Mozilla Public License,
 version 2.0 can be found in "/usr/share/common-licenses/MPL-2.0".
EOF
fi
