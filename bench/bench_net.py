"""Containers on a bridge network: soko beside podman and Docker Engine, in one run.

    python bench/bench_net.py [--runs 20] [--warmup 3] [--baseline REV] [--tools soko,podman,docker]

Two measurements, each tool on its own bridge with NAT and published ports:

- serve: from `run -d -p 127.0.0.1:PORT:80 IMAGE httpd -f` to the first HTTP
  200 from 127.0.0.1:PORT (polled every 5 ms); the container is removed
  afterwards, outside the timing;
- run:   `run --rm IMAGE true` start to exit, on the bridge network.

The tools, all on the busybox fixture image, serving one file from a bind mount:

- soko:   the installed `soko` command (.venv/bin/soko), built-in executor,
          its default `bridge` network (soko0, nftables);
- podman: podman 4 with `--runtime runc` (crun refuses hybrid cgroups here),
          netavark, on a network of the bench's own (own subnet and bridge,
          config dir under bench/out/), its own storage; the network and
          any namespace netavark leaves on it are removed afterwards;
- docker: a private dockerd 20.10 (own data root, exec root and socket) on a
          bridge the bench makes first (`--bridge`), iptables and its default
          userland proxy; its iptables chains are removed afterwards, as is
          the bridge.

`--baseline REV` also runs soko as of git revision REV (its source tree
extracted, run by the same interpreter and entry script, on a store of its
own): a before/after in the same run. `--tools` picks which of soko, podman
and docker run beside it (all by default; `--tools soko --baseline main` is
a quick A/B).

The commands run round-robin (a b c a b c ...), so load from elsewhere falls
on all of them alike; medians, minimums and paired ratios are reported.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out" / "net"
IMAGE = "soko-bench/busybox:latest"
PODMAN_IMAGE = "localhost/soko-bench-busybox:latest"
DOCKER_IMAGE = "soko-bench-busybox:latest"
DOCKER = "/usr/bin/docker"  # Debian's client, of the same release as its dockerd
DOCKER_BRIDGE = "sokobenchd0"
DOCKER_SUBNET = "10.231.250.1/24"
PODMAN_NET, PODMAN_SUBNET = "sokobench", "10.231.251.0/24"

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def sh(*cmd: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, env=env, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soko_binary() -> str:
    venv = REPO / ".venv" / "bin" / "soko"
    return str(venv) if venv.exists() else (shutil.which("soko") or "soko")


class Tool:
    def __init__(self, name: str, base: list[str], image: str, env: dict, run_extra: list[str] = ()):
        self.name, self.base, self.image, self.env, self.run_extra = name, base, image, env, list(run_extra)

    def serve(self, www: Path, port: int) -> list[str]:
        return [*self.base, "run", "-d", *self.run_extra, "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www:ro",
                self.image, "httpd", "-f", "-p", "80", "-h", "/www"]

    def true(self) -> list[str]:
        return [*self.base, "run", "--rm", *self.run_extra, self.image, "true"]

    def rm(self, cid: str) -> None:
        sh(*self.base, "rm", "-f", cid, env=self.env, check=False)


def prepare_soko(tar: Path, env: dict) -> Tool:
    root = OUT / "soko-store"
    shutil.rmtree(root, ignore_errors=True)
    base = [soko_binary(), "--root", str(root)]
    sh(*base, "import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE, env=env)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "runtime", "storage", "soko"], cwd=REPO,
                   stdout=subprocess.DEVNULL, check=True)
    return Tool("soko", base, IMAGE, env)


def prepare_baseline(rev: str, tar: Path, env: dict) -> Tool:
    """soko at git revision `rev`, started as the installed entry script starts this one."""
    tree = OUT / "baseline-src"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    entry = tree / "soko-entry"
    entry.write_text(Path(soko_binary()).read_text())
    entry.chmod(0o755)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "runtime", "storage", "soko"], cwd=tree,
                   stdout=subprocess.DEVNULL, check=True)
    root = OUT / "baseline-store"
    shutil.rmtree(root, ignore_errors=True)
    env = {**env, "PYTHONPATH": str(tree)}
    base = [str(entry), "--root", str(root)]
    sh(*base, "import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE, env=env)
    return Tool(f"soko@{rev}", base, IMAGE, env)


def prepare_podman(tar: Path, env: dict) -> Tool:
    netdir = OUT / "podman-networks"
    netdir.mkdir(parents=True, exist_ok=True)
    conf = OUT / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = []\n[network]\nnetwork_config_dir = "{netdir}"\n')
    env = {**env, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(OUT / "podman-root"), "--runroot", "/run/soko-bench-podman", "--runtime", "runc"]
    sh(*base, "import", "-q", "--change", 'CMD ["/bin/sh"]', str(tar), PODMAN_IMAGE, env=env)
    if sh(*base, "network", "exists", PODMAN_NET, env=env, check=False).returncode != 0:
        sh(*base, "network", "create", "--subnet", PODMAN_SUBNET, PODMAN_NET, env=env)
    return Tool("podman", base, PODMAN_IMAGE, env, ["--network", PODMAN_NET])


def cleanup_podman(tool: Tool | None) -> None:
    """Remove the bench's podman network (its bridge) and any namespace podman left on its subnet:
    under load, netavark's teardown of a detached container sometimes leaves one behind."""
    if tool is not None:
        sh(*tool.base, "rm", "-a", "-f", env=tool.env, check=False)
        sh(*tool.base, "network", "rm", "-f", PODMAN_NET, env=tool.env, check=False)
    prefix = PODMAN_SUBNET.rsplit(".", 1)[0] + "."
    # the network's own chains (NETAVARK-<id>, NETAVARK-DN-<id>), not the ones all networks share
    _remove_rules((prefix, f"name: {PODMAN_NET} "),
                  lambda chain: chain.startswith("NETAVARK-") and not chain.startswith("NETAVARK-HOSTPORT"))
    for line in sh("ip", "-o", "addr", "show", check=False).stdout.splitlines():
        if f"inet {prefix}1/" in line:  # the network's bridge, which `network rm` leaves
            sh("ip", "link", "del", line.split()[1], check=False)
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith("netns-") or sh("ip", "netns", "pids", name, check=False).stdout.strip():
            continue
        if f"inet {prefix}" in sh("ip", "-n", name, "-o", "addr", check=False).stdout:
            sh("ip", "netns", "del", name, check=False)


class Dockerd:
    """A private dockerd on a bridge of the bench's own; everything it made is removed on stop."""

    def __init__(self) -> None:
        self.dir = Path("/run/soko-bench-docker")
        self.sock = self.dir / "d.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}
        self.proc: subprocess.Popen | None = None

    def start(self, tar: Path) -> Tool:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        sh("ip", "link", "add", DOCKER_BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", DOCKER_SUBNET, "dev", DOCKER_BRIDGE)
        sh("ip", "link", "set", DOCKER_BRIDGE, "up")
        log = open(OUT / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--bridge", DOCKER_BRIDGE, "--data-root", str(OUT / "docker-root"), "--exec-root",
             str(self.dir / "exec"), "-H", f"unix://{self.sock}", "--pidfile", str(self.dir / "d.pid")],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while sh(DOCKER, "version", env=self.env, check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"dockerd did not start: see {OUT / 'dockerd.log'}")
            time.sleep(0.2)
        sh(DOCKER, "import", "--change", 'CMD ["/bin/sh"]', str(tar), DOCKER_IMAGE, env=self.env)
        return Tool("docker", [DOCKER], DOCKER_IMAGE, self.env)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sh("ip", "link", "del", DOCKER_BRIDGE, check=False)
        _remove_docker_rules()
        shutil.rmtree(self.dir, ignore_errors=True)


def _remove_docker_rules() -> None:
    """dockerd leaves its chains and jumps in iptables when it stops: remove the ones it made."""
    _remove_rules(("DOCKER", DOCKER_BRIDGE, "10.231.250."), lambda chain: chain.startswith("DOCKER"))


def _remove_rules(markers: tuple[str, ...], own_chain) -> None:
    """Delete the iptables rules that mention any of `markers`, then the chains `own_chain` accepts
    that those rules jumped to or that are named by a marker."""
    for table in ("nat", "filter"):
        rules = sh("iptables", "-w", "-t", table, "-S", check=False).stdout.splitlines()
        chains = set()
        for rule in rules:
            if rule.startswith("-A ") and any(m in rule for m in markers):
                words = shlex.split(rule)  # comments are quoted
                chains.update(w for w in words[1:] if own_chain(w))
                sh("iptables", "-w", "-t", table, "-D", *words[1:], check=False)
        chains.update(r.split()[1] for r in rules if r.startswith("-N ") and own_chain(r.split()[1])
                      and any(m in r for m in markers))
        for chain in chains:
            sh("iptables", "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            sh("iptables", "-w", "-t", table, "-X", chain, check=False)


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far (the commands, not what they left
    running: a monitor, conmon or dockerd)."""
    t = os.times()
    return t.children_user + t.children_system


def first_answer(tool: Tool, www: Path) -> tuple[float, float]:
    """Seconds from `run -d -p` to the first HTTP 200 on the published port; the command's CPU."""
    port = free_port()
    cpu = children_cpu()
    t = time.perf_counter()
    p = subprocess.run(tool.serve(www, port), env=tool.env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{tool.name}: {p.stderr.strip()}")
    deadline = t + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/index.html")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            c.close()
        if time.perf_counter() > deadline:
            raise SystemExit(f"{tool.name}: no answer on port {port}")
        time.sleep(0.005)
    elapsed = time.perf_counter() - t
    cpu = children_cpu() - cpu
    tool.rm(p.stdout.strip())
    return elapsed, cpu


def run_true(tool: Tool) -> tuple[float, float]:
    cpu = children_cpu()
    t = time.perf_counter()
    subprocess.run(tool.true(), env=tool.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t, children_cpu() - cpu


def report(title: str, times: dict[str, list[tuple[float, float]]]) -> None:
    print(f"{title}:")
    print(f"  {'':14} {'median':>9} {'min':>9} {'cmd CPU':>9}   paired: other / soko")
    soko = [w for w, _ in times["soko"]]
    for name, t in times.items():
        wall = [w for w, _ in t]
        ratio = "" if name == "soko" else f"{statistics.median(o / s for o, s in zip(wall, soko)):.2f}x"
        print(f"  {name:14} {statistics.median(wall) * 1000:6.0f} ms {min(wall) * 1000:6.0f} ms "
              f"{statistics.median(c for _, c in t) * 1000:6.0f} ms   {ratio}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--baseline", metavar="REV", help="also run soko at this git revision (before/after)")
    ap.add_argument("--tools", default="soko,podman,docker", help="which tools run (soko always does)")
    args = ap.parse_args()
    chosen = set(args.tools.split(","))
    if os.geteuid() != 0:
        print("bench_net.py needs root (bridges, namespaces, dockerd)", file=sys.stderr)
        return 2
    from bench_run import rootfs_tar

    OUT.mkdir(parents=True, exist_ok=True)
    www = OUT / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("hello\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tar = rootfs_tar()
    dockerd = Dockerd()
    podman = None
    try:
        tools = [prepare_soko(tar, env)]
        if args.baseline:
            tools.append(prepare_baseline(args.baseline, tar, env))
        if "podman" in chosen:
            podman = prepare_podman(tar, env)
            tools.append(podman)
        if "docker" in chosen:
            tools.append(dockerd.start(tar))
        for tool in tools:  # each works (and soko unpacks its snapshot) before timing
            first_answer(tool, www)
            run_true(tool)
        serve: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
        runs: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
        for i in range(args.warmup + args.runs):
            for tool in tools:
                a, b = first_answer(tool, www), run_true(tool)
                if i >= args.warmup:
                    serve[tool.name].append(a)
                    runs[tool.name].append(b)
    finally:
        if "docker" in chosen:
            dockerd.stop()
        if "podman" in chosen:
            cleanup_podman(podman)
    print(f"{args.runs} rounds after {args.warmup} warm-up rounds (load average {os.getloadavg()[0]:.2f})")
    report("run -d -p ... httpd, to the first HTTP answer", serve)
    report("run --rm ... true, on the bridge network", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
