#!/usr/bin/env bash
# Create the Python 3.10 environment that runs Lava (lava-nc 0.10.0 installs only on Python 3.10, numpy < 2).
# Usage: scripts/lava_env.sh DEST    (a no-op when DEST is already complete)
# The interpreter is taken from $SNNKIT_LAVA_PYTHON, else python3.10 on PATH, else pyenv's 3.10.x.
# Exits 0 with one clear line when no Python 3.10 exists: the Lava target is then unavailable, nothing else is.
set -euo pipefail
dest=${1:-.venv-lava}
stamp="$dest/.snnkit-lava-complete"
[ -f "$stamp" ] && exit 0

find_python310() {
    if [ -n "${SNNKIT_LAVA_PYTHON:-}" ]; then
        if "$SNNKIT_LAVA_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            echo "$SNNKIT_LAVA_PYTHON"; return 0
        fi
        echo "snnkit: SNNKIT_LAVA_PYTHON=$SNNKIT_LAVA_PYTHON is not a Python 3.10 interpreter" >&2
        return 1
    fi
    if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys' 2>/dev/null; then
        command -v python3.10; return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local root; root=$(pyenv root)
        for p in "$root"/versions/3.10*/bin/python3.10; do
            [ -x "$p" ] && { echo "$p"; return 0; }
        done
    fi
    return 1
}

if ! py=$(find_python310); then
    echo "snnkit: no Python 3.10 found (set SNNKIT_LAVA_PYTHON=/path/to/python3.10); the lava target is unavailable" >&2
    exit 0
fi
rm -rf "$dest"
"$py" -m venv "$dest"
"$dest/bin/python" -m pip install -q "lava-nc==0.10.0" "numpy<2" "nir>=1.0.8" 2>&1 | grep -v '^WARNING: Location' || true
"$dest/bin/python" -c 'import lava.magma, nir, numpy' 
touch "$stamp"
echo "snnkit: Lava environment ready in $dest ($("$dest/bin/python" --version))"
