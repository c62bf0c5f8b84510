#!/usr/bin/env bash
# `make demo`: the repository's own example migrations (migrations/) applied end to end on the
# embedded development servers — register, plan, apply all three phases, verify, status.
# Safe to run again: a second run finds nothing pending and verifies the same ledger.
set -euo pipefail
cd "$(dirname "$0")/.."
MREG="${MREG:-.venv/bin/mreg}"
PY="${PY:-.venv/bin/python}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "mreg dev up: start the development servers this machine can run"
"$MREG" dev up

step "signing key"
KEY="$("$MREG" config show --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["key"]["value"])')"
if [ ! -f "$KEY" ]; then
  "$MREG" keys generate --principal "${USER:-demo}@mreg.demo" --comment "mreg demo"
elif [ -f "$KEY.pub" ] && ! grep -qF "$(cut -d' ' -f2 "$KEY.pub")" .mreg/allowed_signers 2>/dev/null; then
  "$MREG" keys trust "$KEY.pub" --principal "${USER:-demo}@mreg.demo"
else
  echo "using $KEY"
fi

step "mreg scan: register the migrations found in Git and the working tree"
"$MREG" scan

step "mreg plan"
"$MREG" plan

step "mreg apply --phase all --confirm-contract"
"$MREG" apply --phase all --confirm-contract

step "mreg verify: ledger, mirrors, applied files"
"$MREG" verify

step "mreg status"
"$MREG" status

cat <<'MSG'

Browse the catalog and the ledger (read-only Datasette):   .venv/bin/mreg serve
Machine-readable state:                                     .venv/bin/mreg status --json
Prometheus metrics from the ledger:                         .venv/bin/mreg metrics
Roll a migration back (after the safety checks):            .venv/bin/mreg rollback --migration-id ID --dry-run
Stop the development servers:                               .venv/bin/mreg dev down
MSG
