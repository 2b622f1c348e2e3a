# Sourced by scripts/test.sh and scripts/test-slow.sh: the set-up both tiers share.
#   install_system_packages PKG...   apt-get install what is missing (as root; a warning otherwise)
#   install_venv EXTRAS              ./.venv with sysctl-doctor installed editable, with EXTRAS ("test,lab")

# retry N CMD...: run CMD up to N times (a registry hiccup is common); the last failure says so in one line
retry() {
  local tries=$1 n=1; shift
  until "$@"; do
    if [ "$n" -ge "$tries" ]; then
      echo "== error: '$*' failed $tries times (package registry unreachable?)" >&2
      return 1
    fi
    echo "== '$1 …' failed (try $n of $tries); retrying in $((n * 5)) s" >&2
    sleep $((n * 5)); n=$((n + 1))
  done
}

install_system_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: ${missing[*]}"
    retry 3 apt-get update -qq --error-on=any
    # services in these packages (prometheus, node_exporter) must not start and listen on all addresses:
    # the tests start their own on 127.0.0.1. policy-rc.d forbids starting them during the install.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
    fi
    retry 3 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; return 1; }
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
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
  # constraints.txt: the versions the suite was last green with, so a new release cannot break CI
  retry 3 .venv/bin/python -m pip install -q --upgrade pip -c constraints.txt >/dev/null
  retry 3 .venv/bin/python -m pip install -q -e ".[$1]" -c constraints.txt
}

# The SARIF multitool (npm) for the SARIF tests, into .cache/npm; a missing npm is a loud skip in those tests.
install_npm_tools() {
  local dir=.cache/npm
  [ -x "$dir/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool" ] && return 0
  if ! command -v npm >/dev/null; then
    echo "== warning: npm missing: the SARIF multitool tests are skipped" >&2
    return 0
  fi
  echo "== installing the SARIF multitool (npm) into $dir"
  mkdir -p "$dir"
  retry 3 npm install --silent --no-audit --no-fund --prefix "$dir" @microsoft/sarif-multitool@5.7.0 >/dev/null
}

