"""`soko version`, `soko info` and `soko completion bash|zsh`.

soko has no daemon, so `version` has Docker's Client block and no Server (`{{.Server.Version}}`
fails as it does when Docker's daemon is down); `info` has Docker's facts about the engine,
taken from the store and this machine.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys

import click


def version_data() -> dict:
    from ..cli import VERSION

    client = {"Platform": {"Name": "soko"}, "Version": VERSION, "ApiVersion": "", "DefaultAPIVersion": "",
              "GitCommit": "", "PythonVersion": platform.python_version(), "Os": sys.platform,
              "Arch": _arch(), "KernelVersion": platform.release(), "Context": "default", "Experimental": False}
    return {"Client": client, "Server": None}


def _arch() -> str:
    """GOARCH names, as Docker prints them."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


@click.command("version")
@click.option("-f", "--format", "fmt", default=None, help="Go template (`{{.Client.Version}}`, `{{json .}}`).")
def version_cmd(fmt: str | None) -> None:
    """Show the soko version information."""
    data = version_data()
    if fmt:
        from ..formatter import render_one

        click.echo(render_one(fmt, data), nl=False)
        return
    c = data["Client"]
    rows = [("Version", c["Version"]), ("Python version", c["PythonVersion"]), ("OS/Arch", f"{c['Os']}/{c['Arch']}"),
            ("Kernel version", c["KernelVersion"]), ("Context", c["Context"])]
    click.echo("Client: soko (daemonless: no server)")
    for k, v in rows:
        click.echo(f" {k + ':':<19}{v}")


def cgroup_version() -> str:
    """2 on a unified hierarchy, 1 otherwise (a hybrid host mounts v1 controllers)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[4] == "/sys/fs/cgroup" and fields[sep + 1] == "cgroup2":
                    return "2"
    except (OSError, ValueError, IndexError):
        pass
    return "1"


def _os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def runtimes() -> dict[str, dict]:
    """The OCI runtimes `run --runtime` can use here: soko's own, and runc/crun when installed."""
    out = {"builtin": {"path": "soko (built in)"}}
    for name in ("runc", "crun"):
        path = shutil.which(name)
        if path:
            out[name] = {"path": path}
    return out


def info_data(obj) -> dict:
    from ..image_views import overlay_available
    from ..store_usage import containers

    store = obj.image_store()
    conts = containers(obj.root)
    running = sum(c.running for c in conts)
    driver = os.environ.get("SOKO_SNAPSHOTTER") or ("overlay" if overlay_available() else "copy")
    if driver not in ("overlay", "copy"):
        driver = "overlay" if overlay_available() else "copy"
    from ..cli import VERSION

    return {
        "ID": "", "Containers": len(conts), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(conts) - running, "Images": len({e.image_id for e in store.list()}),
        "Driver": driver, "CgroupDriver": "cgroupfs", "CgroupVersion": cgroup_version(),
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(), "OSType": "linux",
        "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1, "MemTotal": _mem_total(),
        "ServerVersion": VERSION, "Runtimes": runtimes(), "DefaultRuntime": "builtin",
        "SecurityOptions": ["name=seccomp,profile=default"], "StoreRootDir": str(obj.root),
    }


def _mem_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def binary_size(n: float) -> str:
    """go-units BytesSize: binary units, `%.4g`."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


@click.command("info")
@click.option("-f", "--format", "fmt", default=None, help="Go template over the facts (`{{.Driver}}`, `{{json .}}`).")
@click.pass_context
def info_cmd(ctx: click.Context, fmt: str | None) -> None:
    """Show facts about soko, its store and this machine."""
    d = info_data(ctx.obj)
    if fmt:
        from ..formatter import render_one

        click.echo(render_one(fmt, d), nl=False)
        return
    lines = [
        f"Containers: {d['Containers']}", f" Running: {d['ContainersRunning']}", f" Paused: {d['ContainersPaused']}",
        f" Stopped: {d['ContainersStopped']}", f"Images: {d['Images']}", f"Server Version: {d['ServerVersion']}",
        f"Storage Driver: {d['Driver']}", f"Cgroup Driver: {d['CgroupDriver']}",
        f"Cgroup Version: {d['CgroupVersion']}", f"Runtimes: {' '.join(d['Runtimes'])}",
        f"Default Runtime: {d['DefaultRuntime']}", "Security Options:", " seccomp", "  Profile: default",
        f"Kernel Version: {d['KernelVersion']}", f"Operating System: {d['OperatingSystem']}",
        f"OSType: {d['OSType']}", f"Architecture: {d['Architecture']}", f"CPUs: {d['NCPU']}",
        f"Total Memory: {binary_size(d['MemTotal'])}", f"Store Root Dir: {d['StoreRootDir']}",
    ]
    click.echo("\n".join(lines))


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script (bash: `source <(soko completion bash)`)."""
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    click.echo(cls(root, {}, "soko", "_SOKO_COMPLETE").source())
