# Sourced by scripts/serve and scripts/test: Debian packages, then a virtualenv
# at .venv with voxline installed. Idempotent; re-running only checks.
#   VOXLINE_APT: extra Debian packages;  VOXLINE_EXTRAS: pip extras (comma list)
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

apt_install() {
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "voxline: needs Debian packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    echo "voxline: installing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Always: a C toolchain and cmake (llama.cpp builds from source), libsndfile,
# espeak-ng (the light fallback voice), venv support for Debian's python3.
apt_install ca-certificates build-essential cmake libgomp1 libsndfile1 espeak-ng python3-venv ${VOXLINE_APT:-}

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# llama.cpp compiles from source: portable flags so a wheel built here runs on any
# x86-64 machine; pip caches the built wheel, so later installs take seconds.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
.venv/bin/python -m pip install -q -e ".[${VOXLINE_EXTRAS:-fast,embedded}]"
