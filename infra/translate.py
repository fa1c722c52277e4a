#!/usr/bin/env python3
"""Translate infra/template.yaml (AWS SAM) to plain CloudFormation JSON on stdout, offline.

`sam build`/`sam package` resolve the local CodeUri (`..`) and DefinitionUri
(`statemachine/rotation.asl.json`) to S3 objects; here they are replaced by S3 URIs given on
the command line (placeholders by default), so the transform runs without AWS. Used by
infra/check.sh (cfn-guard, checks), infra/broken.py and tests/infra.rs (deploy on moto).

  translate.py [--code-uri s3://b/k.zip] [--definition-uri s3://b/k.json]
               [--inline-definition] [--drop TYPE ...] [template.yaml]

--inline-definition  put the state machine definition in DefinitionString instead of
                     DefinitionS3Location: the ASL file's text with its ${Name} placeholders
                     joined to the DefinitionSubstitutions values (Fn::Join), which is what
                     Step Functions does with DefinitionSubstitutions (moto reads only
                     DefinitionString, and its Fn::Sub turns the ASL's `$$.` into `$.`).
--drop TYPE          remove every resource of TYPE, and the outputs, DependsOn entries and
                     Fn::Sub/Ref/GetAtt uses that refer to a removed resource (for moto, whose
                     CloudFormation lacks some types).
"""
import argparse
import copy
import json
import os
import re
import sys

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

HERE = os.path.dirname(os.path.abspath(__file__))
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
SUB_REF = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")


def load(path):
    with open(path) as f:
        return yaml_parse(f.read())


def translate(template, template_dir, code_uri, definition_uri, inline_definition):
    doc = copy.deepcopy(template)
    definitions = {}
    for name, res in doc.get("Resources", {}).items():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Serverless::Function":
            props["CodeUri"] = code_uri
        elif res.get("Type") == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
            local = props["DefinitionUri"]
            if isinstance(local, str) and not local.startswith("s3://"):
                with open(os.path.join(template_dir, local)) as f:
                    definitions[name] = f.read()
            props["DefinitionUri"] = definition_uri
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        out = transform(doc, {}, None)
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"error: {cause.message}", file=sys.stderr)
        sys.exit(1)
    if inline_definition:
        for name, text in definitions.items():
            props = out["Resources"][name]["Properties"]
            subs = props.pop("DefinitionSubstitutions", {})
            props.pop("DefinitionS3Location", None)
            parts, last = [], 0
            for m in PLACEHOLDER.finditer(text):
                if m.group(1) not in subs:
                    print(f"error: {name}: no substitution for ${{{m.group(1)}}}", file=sys.stderr)
                    sys.exit(1)
                parts += [text[last : m.start()], subs[m.group(1)]]
                last = m.end()
            parts.append(text[last:])
            props["DefinitionString"] = {"Fn::Join": ["", parts]}
    return out


def refers_to(value, names):
    """Whether a CloudFormation value uses (Ref, GetAtt, Sub) one of `names`."""
    if isinstance(value, dict):
        if value.get("Ref") in names:
            return True
        att = value.get("Fn::GetAtt")
        if att is not None:
            target = att[0] if isinstance(att, list) else str(att).split(".")[0]
            if target in names:
                return True
        sub = value.get("Fn::Sub")
        if sub is not None:
            text = sub if isinstance(sub, str) else sub[0]
            for m in SUB_REF.finditer(text):
                if m.group(1).split(".")[0] in names:
                    return True
        return any(refers_to(v, names) for v in value.values())
    if isinstance(value, list):
        return any(refers_to(v, names) for v in value)
    return False


def drop(out, types):
    res = out["Resources"]
    gone = {n for n, r in res.items() if r["Type"] in types}
    # Resources that only make sense with a dropped one (e.g. a dashboard listing alarms).
    while True:
        more = {n for n, r in res.items() if n not in gone and refers_to(r.get("Properties", {}), gone)}
        if not more:
            break
        gone |= more
    for n in gone:
        print(f"dropped {n} ({res[n]['Type']})", file=sys.stderr)
        del res[n]
    for r in res.values():
        dep = r.get("DependsOn")
        if isinstance(dep, list):
            r["DependsOn"] = [d for d in dep if d not in gone]
        elif dep in gone:
            del r["DependsOn"]
    outputs = out.get("Outputs", {})
    for k in [k for k, v in outputs.items() if refers_to(v, gone)]:
        del outputs[k]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template", nargs="?", default=os.path.join(HERE, "template.yaml"))
    ap.add_argument("--code-uri", default="s3://rotor-artifacts/rotor.zip")
    ap.add_argument("--definition-uri", default="s3://rotor-artifacts/rotation.asl.json")
    ap.add_argument("--inline-definition", action="store_true")
    ap.add_argument("--drop", action="append", default=[])
    a = ap.parse_args()
    template = load(a.template)
    out = translate(
        template,
        os.path.dirname(os.path.abspath(a.template)),
        a.code_uri,
        a.definition_uri,
        a.inline_definition,
    )
    if a.drop:
        out = drop(out, set(a.drop))
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
