# Shared by the e2e tests: HYLA (the binary), SRC (the source tree), a temp dir, checks.
set -uo pipefail
HYLA=${HYLA:?set HYLA to the hyla binary}
SRC=${SRC:?set SRC to the source tree}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; failures=$((failures + 1)); }
# expect_fail "what" "message fragment" command...: non-zero exit and the fragment on stderr
expect_fail() {
  local what=$1 fragment=$2; shift 2
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$fragment" <<<"$err"; then pass "$what (exit $rc)"
  else fail "$what: exit $rc, stderr: $err"; fi
}
finish() { echo "$failures failed"; [ $failures -eq 0 ]; }
