# Sourced by scripts/demo and scripts/test: installs whatever is missing, then puts the
# project's virtual environment first on PATH. Safe to run again: each step checks first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '\033[1m[bento setup]\033[0m %s\n' "$*" >&2; }

# 1. System packages: Debian's tor (the network) and bubblewrap (the sandbox).
missing=()
command -v tor >/dev/null 2>&1 || missing+=(tor)
command -v tor-gencert >/dev/null 2>&1 || missing+=(tor)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
# The testnet's tests capture the non-loopback interfaces to prove nothing leaves the machine.
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
# Latency emulation for the testnet (netem in a network namespace).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# Functions run on the system's Python inside the sandbox (standard library only).
[[ -x /usr/bin/python3 ]] || missing+=(python3)
# The Browser tests open fetched pages in a real browser: Debian's chromium, driven by Playwright.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # wireshark-common asks whether non-root users may capture; the default (no) is fine.
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian's package starts a system tor where an init system exists; Bento
        # starts its own tor processes and needs none of it.
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q tor 2>/dev/null; then
            systemctl stop tor || true
        fi
    else
        say "missing system packages: ${missing[*]}"
        say "install them with:  sudo apt-get install ${missing[*]}"
        exit 1
    fi
fi

# 2. Python >= 3.11 for the virtual environment.
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PY="$candidate"
        break
    fi
done
if [[ -z "$PY" ]]; then
    say "Bento needs Python >= 3.11 with venv (Debian: sudo apt-get install python3 python3-venv)"
    exit 1
fi

# 3. The virtual environment, refreshed whenever pyproject.toml changes.
stamp="$VENV/.bento-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating a virtual environment in .venv"
    "$PY" -m venv "$VENV"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "installing Python packages into .venv (first run takes a minute)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev,eval]"
    echo "$want" >"$stamp"
fi

export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
