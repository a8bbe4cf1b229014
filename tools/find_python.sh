#!/bin/sh
# Print the path of a CPython X.Y that runs (argument: X.Y), or nothing.
# A pyenv shim answers `command -v python3.9` even when pyenv will refuse to run it,
# so every candidate is tried, not just found.
v="$1"
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for py in $(command -v "python$v" 2>/dev/null) $(ls -d "$root"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V -r); do
    if "$py" -c 'import sys, venv; sys.exit(0)' >/dev/null 2>&1; then
        echo "$py"
        exit 0
    fi
done
