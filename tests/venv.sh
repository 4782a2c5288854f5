# Sourced by the suites' run.sh scripts: `ensure_venv REQUIREMENTS...` creates <repo>/.venv
# when missing and installs the requirement files into it; sets $repo and $venv.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    local req
    for req in "$@"; do
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    done
}
