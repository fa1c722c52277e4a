#!/usr/bin/env python3
"""Write deliberately broken copies of the template, one defect each, for infra/check.sh.

  broken.py OUTDIR [template.yaml]

Each file is named RULEFILE--defect.json (RULEFILE is the infra/rules/*.guard file that must
reject it). Most are the translated template (plain CloudFormation, what the rules run on)
with one thing broken; `iam--sam-policies-*` break the SAM template itself. check.sh asserts
that cfn-guard fails every one of them with its rule file, and passes the real template.
"""
import copy
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import translate  # noqa: E402


def role_statements(cfn, role):
    return cfn["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def main():
    outdir = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(translate.HERE, "template.yaml")
    sam = translate.load(path)
    cfn = translate.translate(
        sam,
        os.path.dirname(os.path.abspath(path)),
        "s3://rotor-artifacts/rotor.zip",
        "s3://rotor-artifacts/rotation.asl.json",
        False,
    )
    os.makedirs(outdir, exist_ok=True)
    variants = {}

    def variant(name, base=cfn):
        doc = copy.deepcopy(base)
        variants[name] = doc
        return doc

    # (a) iam.guard: wildcard actions on write APIs, NotAction.
    d = variant("iam--service-star-in-role")
    role_statements(d, "TestSecretRole").append(
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}
    )
    d = variant("iam--put-star-in-role")
    role_statements(d, "TestSecretRole")[0]["Action"].append("secretsmanager:Put*")
    d = variant("iam--star-in-policy")
    d["Resources"]["AuditMacPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"] = "*"
    d = variant("iam--not-action-in-role")
    role_statements(d, "PlanRotationsRole").append(
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    )
    d = variant("iam--sam-policies-star", base=sam)
    d["Resources"]["TestSecretFunction"]["Properties"]["Policies"] = [
        {"Statement": [{"Effect": "Allow", "Action": ["sns:*"], "Resource": "*"}]}
    ]

    # (b) functions.guard: a shared role, a role from outside the template.
    d = variant("functions--shared-role")
    d["Resources"]["TestSecretFunction"]["Properties"]["Role"] = {
        "Fn::GetAtt": ["CreateSecretRole", "Arn"]
    }
    d = variant("functions--literal-role-arn")
    d["Resources"]["FinishSecretFunction"]["Properties"]["Role"] = (
        "arn:aws:iam::123456789012:role/shared-lambda-role"
    )

    # (c) dynamodb.guard: PITR off, SSE off, the AWS managed key.
    d = variant("dynamodb--no-pitr")
    del d["Resources"]["AuditTable"]["Properties"]["PointInTimeRecoverySpecification"]
    d = variant("dynamodb--sse-disabled")
    d["Resources"]["InventoryTable"]["Properties"]["SSESpecification"] = {"SSEEnabled": False}
    d = variant("dynamodb--aws-managed-key")
    d["Resources"]["InventoryTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"] = (
        "alias/aws/dynamodb"
    )

    # (d) kms.guard: no rotation and no reason; a symmetric key "exempted".
    d = variant("kms--cmk-rotation-off")
    del d["Resources"]["RotorKey"]["Properties"]["EnableKeyRotation"]
    d = variant("kms--ca-key-no-reason")
    del d["Resources"]["CaSigningKey"]["Metadata"]["rotor"]
    d = variant("kms--symmetric-key-exempted")
    key = d["Resources"]["RotorKey"]
    key["Properties"]["EnableKeyRotation"] = False
    key["Metadata"] = {"rotor": {"rotation-exempt-reason": "we would rather not rotate it"}}

    for name, doc in variants.items():
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
    print(f"{len(variants)} broken variants in {outdir}")


if __name__ == "__main__":
    main()
