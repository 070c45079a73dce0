#!/usr/bin/env python3
"""Renders and checks the parallax-persistence chart offline; tests/helm.rs drives it.

No cluster and no helm binary: helm-python-sdk bundles Helm's Go SDK (v4) and renders as `helm template` does
(an install with dry_run="client" into an in-memory release store). Bitnami's postgresql chart cannot be fetched
here, so every render uses a throwaway chart directory whose entries are symlinks to the real chart's (Helm
follows them, as it follows files/parallax-storage.rules.yml) plus charts/postgresql, a stub with the Bitnami
defaults this chart reads and no templates. The parent chart of tests/parent-chart (a control-plane Deployment
that includes the named templates) gets this chart as its charts/parallax-persistence the same way.

Commands (JSON on stdin, JSON on stdout; exit status 0 unless a tool is missing or the input is bad):
  render     {"values": {...}, "release": "rel", "parent": false, "packaged": false}
             -> {"ok": true, "manifest": "...", "documents": [{"source": "...", "object": {...}}]}
                or {"ok": false, "error": "..."} (a failed render, e.g. a values error or a `fail`)
  validate   {"cases": {"name": {...values}}, "kube_versions": ["1.30.0", "1.37.0"], "promtool": "/path"}
             renders each case (alone and through the parent) and runs, on every rendered manifest:
             kubernetes-validate --strict for each version, yamllint (deploy/helm/tests/yamllint.yaml), promtool
             check rules on the PrometheusRule's groups, and helm lint --strict with the case's values
             -> {"problems": ["..."], "checked": {...}}
  schema     {"good": ["values files"], "bad": ["values files that must be refused"]}
             check-jsonschema --check-metaschema on values.schema.json, then each file against it
             -> {"problems": ["..."], "refusals": {"file": "message"}}
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.normpath(os.path.join(HERE, "..", "parallax-persistence"))
STUB = os.path.join(HERE, "stub-postgresql")
PARENT = os.path.join(HERE, "parent-chart")
YAMLLINT_CONFIG = os.path.join(HERE, "yamllint.yaml")
REQUIREMENTS = os.path.normpath(os.path.join(HERE, "..", "requirements.txt"))
INSTALL_HINT = (
    "run ./test.sh (its install step installs them), or: "
    f"python3 -m pip install --require-hashes -r {os.path.relpath(REQUIREMENTS, os.getcwd())}"
)


def missing_packages():
    missing = []
    for module, package in [
        ("helm_python", "helm-python-sdk"),
        ("kubernetes_validate", "kubernetes-validate"),
        ("yamllint", "yamllint"),
        ("check_jsonschema", "check-jsonschema"),
        ("yaml", "PyYAML"),
    ]:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


@contextlib.contextmanager
def workspace():
    """A temporary chart tree: <tmp>/parallax-persistence (symlinks + the stub) and <tmp>/parallax (parent)."""
    tmp = tempfile.mkdtemp(prefix="parallax-helm-")
    try:
        chart = os.path.join(tmp, "parallax-persistence")
        os.mkdir(chart)
        for entry in os.listdir(CHART):
            if entry != "charts":
                os.symlink(os.path.join(CHART, entry), os.path.join(chart, entry))
        os.makedirs(os.path.join(chart, "charts"))
        shutil.copytree(STUB, os.path.join(chart, "charts", "postgresql"))
        parent = os.path.join(tmp, "parallax")
        shutil.copytree(PARENT, parent)
        os.makedirs(os.path.join(parent, "charts"))
        os.symlink(chart, os.path.join(parent, "charts", "parallax-persistence"))
        yield tmp, chart, parent
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(chart, parent, values, release="rel", via_parent=False, packaged=False):
    import helm_python as helm
    import yaml

    target = parent if via_parent else chart
    if via_parent:
        values = {"parallax-persistence": values}
    try:
        if packaged:  # as `helm package` stores it (symlinks replaced by their content), then from the .tgz
            with helm.Chart.load(chart) as loaded:
                target = loaded.save(os.path.dirname(chart))
        with helm.Config(storage_driver="memory", namespace="parallax") as cfg:
            release_info = cfg.install(target, release, values, dry_run="client")
    except helm.HelmError as e:
        return {"ok": False, "error": str(e)}
    if packaged:
        os.unlink(target)
    manifest = release_info.get("manifest", "")
    documents = []
    for text in manifest.split("\n---\n"):
        source = None
        for line in text.splitlines():
            if line.startswith("# Source: "):
                source = line[len("# Source: "):]
                break
        obj = yaml.safe_load(text)
        if obj:
            documents.append({"source": source, "object": obj, "text": text})
    return {"ok": True, "manifest": manifest, "documents": documents}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def validate(chart, parent, request, out_dir):
    import helm_python as helm
    import yaml

    problems = []
    checked = {"manifests": 0, "kubernetes_validate": 0, "yamllint": 0, "promtool": 0, "lint": 0}
    versions = request.get("kube_versions", ["1.30.0", "1.37.0"])
    promtool = request["promtool"]
    # The reason yamllint is here: a duplicate key, which YAML parsers (and so the other checks) silently resolve.
    os.makedirs(out_dir)
    duplicate = os.path.join(out_dir, "duplicate-key.yaml")
    with open(duplicate, "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n")
    p = run([sys.executable, "-m", "yamllint", "--strict", "-c", YAMLLINT_CONFIG, duplicate])
    if p.returncode == 0 or "key-duplicates" not in p.stdout:
        problems.append(f"yamllint with {YAMLLINT_CONFIG} does not catch a duplicate key: {p.stdout}{p.stderr}")
    for name, values in sorted(request["cases"].items()):
        for via_parent in (False, True):
            label = f"{name} ({'through the parent chart' if via_parent else 'alone'})"
            r = render(chart, parent, values, via_parent=via_parent)
            if not r["ok"]:
                problems.append(f"{label}: render failed: {r['error']}")
                continue
            case_dir = os.path.join(out_dir, name + ("-parent" if via_parent else ""))
            os.makedirs(case_dir)
            files, k8s_files = [], []
            for i, doc in enumerate(r["documents"]):
                obj = doc["object"]
                path = os.path.join(case_dir, f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml")
                with open(path, "w") as f:
                    f.write(doc["text"].strip("\n").removeprefix("---\n") + "\n")
                files.append(path)
                checked["manifests"] += 1
                if obj["kind"] == "PrometheusRule":
                    rules = os.path.join(case_dir, "prometheusrule-groups.yml")
                    with open(rules, "w") as f:
                        yaml.safe_dump({"groups": obj["spec"]["groups"]}, f, sort_keys=False)
                    p = run([promtool, "check", "rules", rules])
                    checked["promtool"] += 1
                    if p.returncode != 0:
                        problems.append(f"{label}: promtool check rules on the PrometheusRule's groups: "
                                        f"{p.stdout}{p.stderr}")
                else:
                    k8s_files.append(path)
            if k8s_files:
                cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
                for v in versions:
                    cmd += ["-k", v]
                p = run(cmd + k8s_files)
                checked["kubernetes_validate"] += len(k8s_files) * len(versions)
                if p.returncode != 0:
                    problems.append(f"{label}: kubernetes-validate --strict: {p.stdout}{p.stderr}")
            if files:
                p = run([sys.executable, "-m", "yamllint", "--strict", "-c", YAMLLINT_CONFIG] + files)
                checked["yamllint"] += len(files)
                if p.returncode != 0:
                    problems.append(f"{label}: yamllint: {p.stdout}{p.stderr}")
        lint_values = values
        report = helm.lint(chart, lint_values, strict=True, with_subcharts=False,
                           kube_version="v" + versions[0], namespace="parallax")
        checked["lint"] += 1
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if bad or report.get("errors"):
            problems.append(f"{name}: helm lint --strict: {json.dumps(bad + report.get('errors', []))}")
    return {"problems": problems, "checked": checked}


def schema(request):
    problems, refusals = [], {}
    schema_file = os.path.join(CHART, "values.schema.json")
    base = [sys.executable, "-m", "check_jsonschema"]
    p = run(base + ["--check-metaschema", schema_file])
    if p.returncode != 0:
        problems.append(f"check-jsonschema --check-metaschema values.schema.json: {p.stdout}{p.stderr}")
    good = [os.path.join(CHART, "values.yaml")] + request.get("good", [])
    p = run(base + ["--schemafile", schema_file] + good)
    if p.returncode != 0:
        problems.append(f"check-jsonschema: a values file is refused: {p.stdout}{p.stderr}")
    for f in request.get("bad", []):
        p = run(base + ["--schemafile", schema_file, f])
        if p.returncode == 0:
            problems.append(f"check-jsonschema accepted {f}, which must be refused")
        refusals[f] = p.stdout + p.stderr
    return {"problems": problems, "refusals": refusals}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("render", "validate", "schema"):
        print(__doc__, file=sys.stderr)
        return 2
    missing = missing_packages()
    if missing:
        print(f"error: missing Python packages for the Helm chart checks: {', '.join(missing)}; {INSTALL_HINT}",
              file=sys.stderr)
        return 3
    request = json.load(sys.stdin)
    command = sys.argv[1]
    if command == "schema":
        result = schema(request)
    else:
        with workspace() as (tmp, chart, parent):
            if command == "render":
                result = render(chart, parent, request.get("values") or {}, request.get("release", "rel"),
                                request.get("parent", False), request.get("packaged", False))
                for d in result.get("documents", []):
                    d.pop("text", None)
            else:
                out_dir = os.path.join(tmp, "rendered")
                result = validate(chart, parent, request, out_dir)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
