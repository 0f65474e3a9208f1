#!/bin/sh
# conf/prometheus/moletun-rules.yml: `promtool check rules` (syntax, templates) and
# `promtool test rules` (the unit tests in moletun-rules.test.yml). Exits 77 (skipped, for
# meson) with the reason when promtool is missing (Debian package prometheus).
set -eu
dir=$(cd "$(dirname "$0")/../../conf/prometheus" && pwd)
if ! command -v promtool >/dev/null 2>&1; then
	echo "SKIP: promtool not installed (apt-get install prometheus)"
	exit 77
fi
cd "$dir"
promtool check rules moletun-rules.yml
promtool test rules moletun-rules.test.yml
