#!/usr/bin/env bash
# Validate infra/template.yaml, offline: cfn-lint, sam validate --lint, a local SAM translation,
# checkov (SAM template and its translation), Rotor's own cfn-guard rules (infra/rules/), and
# that a deliberately broken copy of the template fails each rule. Exits non-zero on any error.
# Tools: cfn-lint + samtranslator (ensure_python_tools), sam + checkov + cfn-guard
# (ensure_infra_tools in scripts/lib.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="${1:-$here/template.yaml}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0
export PYTHONDONTWRITEBYTECODE=1 # translate.py is imported: no __pycache__ in the tree
work=$(mktemp -d -t rotor-infra.XXXXXX)
trap 'rm -rf "$work"' EXIT

step_start=0
step() {
  printf '==> %s\n' "$*"
  step_start=${EPOCHREALTIME/./}
}
took() {
  local us=$((${EPOCHREALTIME/./} - step_start))
  printf '    (%d.%d s)\n' $((us / 1000000)) $((us / 100000 % 10))
}

step "cfn-lint $template"
cfn-lint "$template"
took

step "sam validate --lint"
sam validate --lint --template-file "$template"
took

step "samtranslator transform (infra/translate.py)"
python3 "$here/translate.py" "$template" >"$work/template.json"
python3 - "$template" "$work/template.json" <<'PY'
import collections, sys
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
import json, translate

sam = translate.load(sys.argv[1])
out = json.load(open(sys.argv[2]))
res = out["Resources"]
types = collections.Counter(r["Type"] for r in res.values())
errors = []
left = sorted(t for t in types if t.startswith("AWS::Serverless::"))
if left:
    errors.append(f"untranslated resources: {left}")
expect = {
    "AWS::Lambda::Function": 7,
    "AWS::StepFunctions::StateMachine": 1,
    "AWS::Scheduler::Schedule": 1,
    "AWS::DynamoDB::Table": 2,
    "AWS::KMS::Key": 3,
    "AWS::SNS::Topic": 1,
    "AWS::Lambda::Permission": 1,
    "AWS::CloudWatch::Dashboard": 1,
}
for t, n in expect.items():
    if types[t] != n:
        errors.append(f"expected {n} {t}, got {types[t]}")
if types["AWS::CloudWatch::Alarm"] < 2:
    errors.append("expected the failed-rotation and overdue alarms")
exclude = sam["Globals"]["Function"]["Environment"]["Variables"]["ROTOR_EXCLUDE_CHARACTERS"]
if exclude != ":/@\"'\\":
    errors.append(f"ROTOR_EXCLUDE_CHARACTERS parsed as {exclude!r}")
for e in errors:
    print(f"error: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"ok: {len(res)} resources after transform: " + ", ".join(f"{n} {t}" for t, n in sorted(types.items())))
PY
took

# checkov reads SAM (AWS::Serverless::*) itself; the translation is checked too, because only
# there are the state machine, the roles SAM would generate and the functions plain resources.
# Skips are in the template, each with its reason (Metadata: checkov: skip).
for f in "$template" "$work/template.json"; do
  step "checkov $(basename "$f")"
  rc=0
  checkov -f "$f" --framework cloudformation --skip-download --compact >"$work/checkov.out" 2>&1 || rc=$?
  grep -E '^Passed checks' "$work/checkov.out" | sed 's/^/    /' || true
  if [ "$rc" -ne 0 ]; then
    grep -B1 -A1 'FAILED for' "$work/checkov.out" >&2 || cat "$work/checkov.out" >&2
    echo "error: checkov failed on $f (exit $rc)" >&2
    exit 1
  fi
  took
done

# Rotor's own rules: on the translation (what CloudFormation deploys) and on the SAM template
# (iam.guard also covers SAM `Policies` statements there).
step "cfn-guard validate -r infra/rules"
for f in "$work/template.json" "$template"; do
  cfn-guard validate -r "$here/rules" -d "$f" --show-summary pass,fail |
    grep -E 'Status|PASS|FAIL' | sed 's/^/    /'
done
took

step "broken copies fail their rule (infra/broken.py)"
python3 "$here/broken.py" "$work/broken" "$template"
bad=0
for f in "$work"/broken/*.json; do
  name=$(basename "$f" .json)
  rule="$here/rules/${name%%--*}.guard"
  rc=0
  cfn-guard validate -r "$rule" -d "$f" >"$work/guard.out" 2>&1 || rc=$?
  if [ "$rc" -eq 19 ]; then # 19: the data does not comply (5: the rules or data are invalid)
    printf '    rejected by %s: %s\n' "$(basename "$rule")" "$name"
  else
    printf '    NOT rejected by %s (exit %s): %s\n' "$(basename "$rule")" "$rc" "$name" >&2
    cat "$work/guard.out" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] || { echo "error: a broken template passed a rule" >&2; exit 1; }
took

echo "==> all checks passed"
