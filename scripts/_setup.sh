# Setup shared by the scripts in this folder; sourced, never run. A script first
# lists the Debian packages it lacks with `have ... || need ...`, installs them with
# install_needed, then calls ensure_venv. Paths are relative to the repository root,
# where the scripts cd before sourcing this file.

needed_packages=()

# have PROBE...: true if any PROBE exists: a command on PATH, or a path (globs allowed).
# Absolute paths catch binaries in /usr/sbin, which is not on a normal user's PATH.
have() {
  local probe
  for probe in "$@"; do
    if [[ $probe == */* ]]; then
      compgen -G "$probe" >/dev/null && return 0
    else
      command -v "$probe" >/dev/null 2>&1 && return 0
    fi
  done
  return 1
}

# need PACKAGE...: add Debian packages to those install_needed will install.
need() {
  needed_packages+=("$@")
}

# The Python that builds the virtualenv's packages: the virtualenv's own once it exists.
_python() {
  if [ -x .venv/bin/python ]; then
    echo .venv/bin/python
  else
    echo python3
  fi
}

# need_python: a python3 that can create the virtualenv. Debian's python3 ships venv's
# ensurepip in a package of its own; Pythons built from source have it built in.
need_python() {
  if ! have "$(_python)"; then
    need python3 python3-venv
  elif [ ! -x .venv/bin/python ] && ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    need python3-venv
  fi
}

# need_c_build: what pip needs to build a C extension from source for this Python: the
# compiler its sysconfig names, and its headers. Debian's python3-dev provides the
# headers of Debian's python3 only; other builds carry their own.
need_c_build() {
  local python compiler include
  python=$(_python)
  if ! have "$python"; then
    need gcc python3-dev
    return
  fi
  compiler=${CC:-$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")')}
  have "${compiler%% *}" || need gcc
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  have "$include/Python.h" || need python3-dev
}

# install_needed: install the packages collected by need (as root), or fail naming them.
install_needed() {
  [ ${#needed_packages[@]} -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${needed_packages[*]}" >&2
    echo "install them as root: apt-get install ${needed_packages[*]}" >&2
    exit 1
  fi
  echo "--- installing ${needed_packages[*]}"
  if [ -z "${apt_lists_updated:-}" ]; then
    apt-get update -qq
    apt_lists_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed_packages[@]}" >/dev/null
  needed_packages=()
}

# ensure_venv EXTRAS [MODULE...]: create .venv if missing, then `pip install -e ".[EXTRAS]"`;
# with MODULEs, only when one of them fails to import (nothing to do on a warm machine).
ensure_venv() {
  local extras=$1
  shift
  if [ ! -x .venv/bin/python ]; then
    echo "--- creating .venv"
    python3 -m venv .venv
  fi
  if [ $# -gt 0 ] && .venv/bin/python -c "import $(IFS=,; echo "$*")" >/dev/null 2>&1; then
    return 0
  fi
  echo "--- installing retrying-uow with the $extras extra"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
}
