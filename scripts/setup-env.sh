# Sourced by scripts/test.sh and scripts/test-slow.sh: the set-up both tiers share.
#   install_system_packages PKG...   apt-get install what is missing (as root; a warning otherwise)
#   install_venv EXTRAS              ./.venv with sysctl-doctor installed editable, with EXTRAS ("test,lab")

install_system_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== warning: missing system packages (tests that need them are skipped): ${missing[*]}" >&2
  fi
}

install_venv() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$py" -m venv .venv
  fi
  echo "== installing sysctl-doctor and test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[$1]"
}
