#!/usr/bin/env python3
"""Builds moletun.conf(5): the hand-written template with the key reference that
`moletun help config --man` prints from the key table in place of the @KEYS@ line.

usage: mkconfman.py MOLETUN TEMPLATE OUTPUT VERSION
"""
import subprocess
import sys


def render(moletun, template_path, version):
    keys = subprocess.run([moletun, "help", "config", "--man"], check=True, capture_output=True,
                          text=True).stdout
    with open(template_path, encoding="utf-8") as f:
        template = f.read()
    if template.count("@KEYS@\n") != 1:
        raise SystemExit(f"{template_path}: expected exactly one @KEYS@ line")
    return template.replace("@KEYS@\n", keys).replace("@VERSION@", version)


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    moletun, template_path, output, version = sys.argv[1:]
    text = render(moletun, template_path, version)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
