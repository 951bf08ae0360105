"""`rdbench images`: build the sandbox images (offline: the host downloads what they hold)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from .cli_support import console, err, fail

images_app = typer.Typer(help="Build sandbox images (offline).", no_args_is_help=True)
TORCH_HELP = ("torch in the base image: cpu, cuda (with its nvidia-* libraries) or auto (cuda where this host has an "
              "NVIDIA GPU); sets RDBENCH_TORCH for this command, and later commands need the same to find the image")
TORCH_INDEX_HELP = ("the index torch comes from (default for cpu: https://download.pytorch.org/whl/cpu; for cuda: "
                    "pip's own); recorded in the image's labels")


@images_app.command("build")
def images_build(
    tasks: list[str] = typer.Argument(None, help="tasks whose images to build (default: the base image)"),
    force: bool = typer.Option(False, help="rebuild the base image even if it exists"),
    agents: bool = typer.Option(False, "--agents", help="also the installed agents' image over each (Claude Code "
                                "and Codex CLI, pinned, from npm)"),
    torch: Optional[str] = typer.Option(None, envvar="RDBENCH_TORCH", help=TORCH_HELP),
    torch_index: Optional[str] = typer.Option(None, envvar="RDBENCH_TORCH_INDEX", help=TORCH_INDEX_HELP),
):
    """Build the base image offline (debootstrap + host-downloaded wheels) and task images."""
    from sandbox import SandboxError
    from sandbox.images import base_image_tag, build_base_image

    from .cli_support import docker_client, ensure_images, load_tasks

    for var, value in (("RDBENCH_TORCH", torch), ("RDBENCH_TORCH_INDEX", torch_index)):
        if value:  # every image of this command (task images, agents images) sits on the same base
            os.environ[var] = value
    try:
        if force:
            build_base_image(docker_client(), log=lambda m: err.print(f"[dim]{m}[/]"), force=True)
        images = ensure_images(load_tasks(tasks or []), "docker")
        console.print(base_image_tag())
        for name, tag in images.items():
            console.print(f"{name}: {tag}")
        if agents:
            from sandbox.images import build_agents_image

            for tag in sorted({base_image_tag(), *images.values()}):
                built = build_agents_image(docker_client(), tag, log=lambda m: err.print(f"[dim]{m}[/]"))
                console.print(f"agents: {built}")
    except SandboxError as e:
        fail(str(e), 1)
