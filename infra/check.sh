#!/usr/bin/env bash
# Validate infra/template.yaml: cfn-lint, then a local SAM translation.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="${1:-$here/template.yaml}"

echo "==> cfn-lint $template"
cfn-lint "$template"

echo "==> samtranslator transform"
AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" python3 - "$template" <<'PY'
import copy, sys
from samtranslator.yaml_helper import yaml_parse
from samtranslator.translator.transform import transform
from samtranslator.model.exceptions import InvalidDocumentException

path = sys.argv[1]
with open(path) as f:
    template = yaml_parse(f.read())

# Local CodeUri ("..") is only resolved by `sam build`; translate a copy that
# points at a placeholder S3 object instead.
doc = copy.deepcopy(template)
for res in doc.get("Resources", {}).values():
    if res.get("Type") == "AWS::Serverless::Function":
        res["Properties"]["CodeUri"] = "s3://bucket/key.zip"

try:
    out = transform(doc, {}, None)
except InvalidDocumentException as e:
    for cause in e.causes:
        print(f"error: {cause.message}", file=sys.stderr)
    sys.exit(1)

res = out["Resources"]
types = [r["Type"] for r in res.values()]
errors = []
left = sorted({t for t in types if t.startswith("AWS::Serverless::")})
if left:
    errors.append(f"untranslated resources: {left}")
n = types.count("AWS::Lambda::Function")
if n != 7:
    errors.append(f"expected 7 Lambda functions, got {n}")
exclude = template["Globals"]["Function"]["Environment"]["Variables"]["ROTOR_EXCLUDE_CHARACTERS"]
if exclude != ":/@\"'\\":
    errors.append(f"ROTOR_EXCLUDE_CHARACTERS parsed as {exclude!r}")
for e in errors:
    print(f"error: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"ok: {len(res)} resources after transform ({n} Lambda functions)")
PY
echo "==> all checks passed"
