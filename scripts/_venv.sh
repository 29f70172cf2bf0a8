# shellcheck shell=bash
# Shared set-up for scripts/run, scripts/test and scripts/bench. Source it; do not run it.
#
#   RST_TRIAGE_VENV   where the virtualenv lives (default: .venv in the repository)
#   PYTHON            interpreter used to create it (default: python3)

RST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RST_VENV=${RST_TRIAGE_VENV:-$RST_ROOT/.venv}
RST_PYTHON=${PYTHON:-python3}

rst_say() { printf '%s: %s\n' "${RST_SCRIPT:-rst-triage}" "$*" >&2; }

rst_is_root() { [ "$(id -u)" -eq 0 ]; }

# True when $RST_PYTHON is 3.9+ and can build a venv with pip (on Debian and Ubuntu that
# needs the python3-venv package, which provides ensurepip).
rst_python_ok() {
    command -v "$RST_PYTHON" >/dev/null 2>&1 &&
        "$RST_PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' \
            >/dev/null 2>&1
}

# apt-get install the given packages without questions (root only). "a|b" installs a if the
# release has it, else b.
rst_apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        rst_say "no apt-get here; install these with your package manager: $*"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; the answer is no.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' |
        debconf-set-selections 2>/dev/null || true
    rst_say "apt-get update"
    apt-get update -q >/dev/null || return 1
    local pkgs=() want alt
    for want in "$@"; do
        if [[ $want == *"|"* ]]; then
            alt=${want#*|} want=${want%%|*}
            apt-cache policy "$want" 2>/dev/null | grep -q 'Candidate: [0-9]' || want=$alt
        fi
        pkgs+=("$want")
    done
    rst_say "installing: ${pkgs[*]}"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}"
}

# Make sure a usable python3 with venv exists, installing it when root.
rst_need_python() {
    rst_python_ok && return 0
    if rst_is_root && command -v apt-get >/dev/null 2>&1; then
        rst_apt_install python3 python3-venv python3-pip || return 1
        RST_PYTHON=python3
        rst_python_ok && return 0
    fi
    rst_say "needs Python 3.9+ with venv: run 'sudo apt-get install python3-venv' (or as root: $0) and retry"
    return 1
}

# rst_venv [EXTRA]: create or refresh the venv with the project installed editable (plus the
# optional dependency group EXTRA). Skips pip when pyproject.toml, the repository path and the
# extras are unchanged since the last successful install.
rst_venv() {
    local extra=${1:-} spec=$RST_ROOT key stamp
    [ -n "$extra" ] && spec="$RST_ROOT[$extra]"
    stamp=$RST_VENV/.rst-triage-installed
    key="$(sha256sum "$RST_ROOT/pyproject.toml" | cut -d' ' -f1) $RST_ROOT"

    if [ -x "$RST_VENV/bin/python" ] && "$RST_VENV/bin/python" -c '' 2>/dev/null; then
        if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$key" ] &&
            { [ -z "$extra" ] || grep -qxF "extra $extra" "$stamp"; }; then
            return 0
        fi
    else
        if [ -e "$RST_VENV" ] && [ ! -f "$RST_VENV/pyvenv.cfg" ]; then
            rst_say "$RST_VENV exists and is not a virtualenv; move it away or set RST_TRIAGE_VENV"
            return 1
        fi
        rst_need_python || return 1
        rm -rf "$RST_VENV"
        rst_say "creating $RST_VENV"
        if ! "$RST_PYTHON" -m venv "$RST_VENV"; then
            rm -rf "$RST_VENV"
            rst_say "could not create a virtualenv with $RST_PYTHON"
            return 1
        fi
    fi

    rst_say "installing rst-triage${extra:+ with [$extra]} into $RST_VENV"
    rm -f "$stamp"
    "$RST_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" || {
        rst_say "pip install failed"
        return 1
    }
    if [ -n "$extra" ]; then
        printf '%s\nextra %s\n' "$key" "$extra" >"$stamp"
    else
        printf '%s\n' "$key" >"$stamp"
    fi
}

# After 'sudo ./scripts/...', hand files root created in the repository (the venv, caches,
# build metadata) back to the user who owns the checkout.
rst_restore_owner() {
    [ -n "${SUDO_UID:-}" ] && rst_is_root || return 0
    [ "$(stat -c %u "$RST_ROOT")" = "$SUDO_UID" ] || return 0
    find "$RST_ROOT" -path "$RST_ROOT/.git" -prune -o -user 0 \
        -exec chown -h "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" {} + 2>/dev/null || true
}
