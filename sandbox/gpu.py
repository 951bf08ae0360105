"""NVIDIA GPUs: which this machine has, how a container gets them, and whether the Docker
engine can give them at all (the NVIDIA container toolkit)."""

from __future__ import annotations

import os
import subprocess

#: What a container's GPU request asks the NVIDIA runtime for: the device, CUDA (compute) and
#: nvidia-smi/NVML (utility).
CAPABILITIES = [["gpu", "compute", "utility"]]
NO_TOOLKIT = ("the Docker engine cannot give containers a GPU (no NVIDIA runtime: install the NVIDIA container "
              "toolkit, `nvidia-ctk runtime configure --runtime=docker`, restart dockerd), so GPU tasks cannot time "
              "on the GPU here; use --sandbox local, or RDBENCH_GPUS= (empty) to run them without a GPU")


def detect_gpus() -> list[int]:
    """This machine's NVIDIA GPUs by device id: RDBENCH_GPUS ("0,1"; "" for none) if set,
    else what `nvidia-smi` lists; none when it is missing or fails."""
    if "RDBENCH_GPUS" in os.environ:
        return [int(g) for g in os.environ["RDBENCH_GPUS"].replace(",", " ").split()]
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if r.returncode != 0:
        return []
    return sorted(int(line) for line in r.stdout.split() if line.strip().isdigit())


def device_requests(gpus: list[int]) -> list:
    """The Docker device requests that give a container these GPUs (none: no request)."""
    import docker.types

    if not gpus:
        return []
    return [docker.types.DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=CAPABILITIES)]


def engine_gpu_problem(client, image: str, gpus: list[int]) -> str | None:
    """Why the Docker engine cannot start a container of `image` with these GPUs, or None when
    it can. An engine that lists the NVIDIA runtime passes; else a throwaway container with the
    request is started (the toolkit may be wired in as a hook only), and its error is the answer."""
    import docker.errors

    if "nvidia" in (client.info().get("Runtimes") or {}):
        return None
    container = None
    try:
        container = client.containers.create(image, ["true"], device_requests=device_requests(gpus),
                                             network_disabled=True, labels={"rdbench": "1", "rdbench.role": "gpu-probe"})
        container.start()
        return None
    except docker.errors.DockerException as e:
        detail = " ".join(str(getattr(e, "explanation", None) or e).split())
        if "device driver" in detail or "nvidia" in detail.lower():
            return f"{NO_TOOLKIT} (the engine says: {detail})"
        return f"a container with GPUs {gpus} did not start: {detail}"
    finally:
        if container is not None:
            container.remove(force=True)
