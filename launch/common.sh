# Shared by the launchers in launch/ (sourced, never run). Before sourcing, set LAUNCHER (the
# script's name, for error messages) and HELP_END (the line that ends its --help header comment).
# Defines the flags every launcher takes: --dry-run, --config=, --workdir=, --help, and `--`
# followed by --config.KEY=VALUE overrides.

DRY_RUN=0
CONFIG=${CONFIG:-configs/pretrain.py}
WORKDIR=${WORKDIR:-}
OVERRIDES=()

die() { echo "$LAUNCHER: error: $*" >&2; exit 2; }

# One argument the launcher's own `case` did not take. Returns 1 at `--`: the rest of "$@" are
# overrides and the parsing loop must stop, i.e. `*) common_arg "$@" || break ;;`.
common_arg() {
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config=*) CONFIG=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --) shift; OVERRIDES=("$@"); return 1 ;;
    -h|--help) sed -n "2,/^$HELP_END/p" "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
}

check_overrides() {
  local o
  for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
    [[ $o == --config.* ]] || die "after '--' only --config.KEY=VALUE overrides are allowed, got '$o'"
  done
}

check_port() { [[ $1 =~ ^[0-9]+$ ]] || die "--port must be a number, got '$1'"; }

# The overrides as one shell-quoted string with a leading space each (for remote command lines).
quoted_overrides() {
  local o out=""
  for o in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do out+=" $(printf '%q' "$o")"; done
  printf '%s' "$out"
}

# The one-line plan: "$1; config C; workdir W[; $2][; DRY RUN]".
print_plan() {
  echo "$1; config ${CONFIG}; workdir ${WORKDIR:-<none>}${2:+; $2}$( ((DRY_RUN)) && echo '; DRY RUN')"
}
