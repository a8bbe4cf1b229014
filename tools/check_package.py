"""Check a built wheel and sdist, then install the wheel into a fresh virtual environment and use it.

    python tools/check_package.py dist/

Fails (exit 1, saying why) when the wheel lacks the package, its `py.typed`
or the license, or carries tests or examples; when the sdist lacks the
license; or when the installed wheel cannot serve an echo round trip on
loopback. Run by `make package`, and so by CI.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

SMOKE = """
import socket, threading, evio

class Echo(evio.Events):
    def serving(self, server):
        self.server = server
        ready.set()
    def data(self, conn, data):
        return data

ready = threading.Event()
events = Echo()
loop = threading.Thread(target=evio.serve, args=(events, "tcp4://127.0.0.1:0"))
loop.start()
assert ready.wait(10), "serve did not start"
with socket.create_connection(events.server.addrs[0][:2], timeout=10) as c:
    c.sendall(b"ping")
    assert c.recv(4) == b"ping"
events.server.shutdown()
loop.join(10)
assert not loop.is_alive(), "serve did not return"
print("evio", evio.__version__, "from", evio.__file__, ": echo round trip ok")
"""


def check_wheel(wheel: Path) -> list[str]:
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    for needed in ("evio/__init__.py", "evio/loop.py", "evio/py.typed"):
        if needed not in names:
            problems.append(f"{wheel.name} lacks {needed}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append(f"{wheel.name} lacks the LICENSE file")
    for name in names:
        top = name.split("/", 1)[0]
        if top in ("tests", "examples", "bench", "docs") or "/tests/" in name:
            problems.append(f"{wheel.name} carries {name}")
    return problems


def check_sdist(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    return [f"{sdist.name} lacks {n}" for n in ("LICENSE", "README.md", "src/evio/py.typed") if n not in names]


def smoke_test(wheel: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="evio-wheel-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / "bin" / "python"
        subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
        # Run from the temporary folder: `import evio` must find the installed wheel, not the checkout.
        result = subprocess.run([python, "-c", SMOKE], cwd=tmp, capture_output=True, text=True, timeout=60)
        print(result.stdout, end="")
        if result.returncode != 0 or str(env_dir) not in result.stdout:
            return [f"the installed wheel failed its smoke test:\n{result.stdout}{result.stderr}"]
    return []


def main(dist: str) -> int:
    wheels = sorted(Path(dist).glob("*.whl"))
    sdists = sorted(Path(dist).glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}", file=sys.stderr)
        return 1
    problems = check_wheel(wheels[0]) + check_sdist(sdists[0])
    if not problems:
        problems = smoke_test(wheels[0])
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist"))
