#!/bin/sh
# debian/changelog's newest version must be the project's version (meson.build): the
# package is native, so the two are the same string.
#   check_version.sh CHANGELOG VERSION
set -eu
changelog=$1
version=$2
first=$(head -n 1 "$changelog")
deb=$(printf '%s\n' "$first" | sed -n 's/^moletun (\([^)]*\)) .*/\1/p')
if [ -z "$deb" ]; then
	echo "FAIL: cannot read the version from the first line of $changelog: $first"
	exit 1
fi
if [ "$deb" != "$version" ]; then
	echo "FAIL: debian/changelog says $deb, meson.build says $version: add a changelog entry (dch -v $version)"
	exit 1
fi
echo "ok: debian/changelog and meson.build both say $version"
