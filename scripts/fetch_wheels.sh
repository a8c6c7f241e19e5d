#!/usr/bin/env bash
# Download, where PyPI is reachable, the wheels scripts/gpu_figures.sh installs on a GPU
# machine without network: the distributions in scripts/gpu_packages.txt at the versions
# installed here (the environment the tests pass in), without their dependencies.
#   bash scripts/fetch_wheels.sh                 # -> scripts/wheels/ (git-ignored)
#   WHEEL_PYTHONS="3.10 3.12" bash scripts/fetch_wheels.sh
# Pure-Python wheels serve every Python; compiled ones are fetched for each version in
# WHEEL_PYTHONS (manylinux x86_64), since the GPU machine's Python may differ from this one.
# A distribution published only as source (antlr4-python3-runtime) is built into a wheel here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${WHEELS_DIR:-$here/wheels}
python=${PYTHON:-python}
pythons=${WHEEL_PYTHONS:-"3.10 3.11 3.12"}
max_mib=${WHEELS_MAX_MIB:-60}

mkdir -p "$dest"
# name==version of each listed distribution, as installed here.
pins=$("$python" - "$here/gpu_packages.txt" <<'EOF'
import sys
from importlib import metadata

missing = []
for line in open(sys.argv[1]):
    name = line.split("#")[0].strip()
    if not name:
        continue
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"fetch_wheels: not installed here: {', '.join(missing)}")
EOF
)
printf '%s\n' "$pins" >"$dest/requirements.txt"

for pin in $pins; do
    fetched=0
    for version in $pythons; do
        if "$python" -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --implementation cp \
            --python-version "$version" --dest "$dest" "$pin" 2>/dev/null; then
            fetched=$((fetched + 1))
        else
            echo "fetch_wheels: no wheel of $pin for Python $version"
        fi
    done
    if [ "$fetched" -eq 0 ]; then
        echo "fetch_wheels: building a wheel of $pin from its source"
        "$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "$pin"
    fi
done

size_mib=$(du -sm "$dest" | cut -f1)
echo "fetch_wheels: $(ls "$dest"/*.whl | wc -l) wheels, ${size_mib} MiB in $dest"
if [ "$size_mib" -ge "$max_mib" ]; then
    echo "fetch_wheels: ${size_mib} MiB, over the ${max_mib} MiB the GPU machine's copy allows" >&2
    exit 1
fi
