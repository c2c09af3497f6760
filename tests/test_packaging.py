"""What `pip install` gives a user: one top-level package, importable next to their own `client.py`,
typed for `mypy --strict`.

Built for real: a wheel of this checkout (pip wheel, as a user's pip builds it), installed into a fresh venv
that sees the test environment's dependencies (grpcio, ...) through a .pth line naming this environment's
site-packages (not --system-site-packages: under a venv that would be the base interpreter's, and a .pth
line adds the directory without running the editable install's finder that lives there). The checkout
itself is never on that venv's path: the imports run from a temporary directory that holds a
user's own `client.py` and `register.py`, the names the SDK used to install at top level.
"""

from __future__ import annotations

import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site_dir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(site_dir, "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                        str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return py


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"registry"}, top
    # The SDK and its type marker are inside it, not beside it.
    for path in ("registry/register/__init__.py", "registry/client/__init__.py", "registry/py.typed",
                 "registry/__main__.py"):
        assert path in names, path
    assert wheel.name.startswith("hashring_registry-"), wheel.name
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: uhashring" not in text.split("Provides-Extra: test")[0], "uhashring is test-only"
    assert any(n.endswith((".dist-info/licenses/LICENSE", ".dist-info/LICENSE")) for n in names)


def test_installed_sdk_imports_beside_a_users_own_client_py(venv_python: Path, tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text("MINE = 'the user client'\n")
    (tmp_path / "register.py").write_text("MINE = 'the user register'\n")
    code = textwrap.dedent("""
        import client, register
        from registry.register import Register, RegisterError
        from registry.client import RpcClient, Service
        import registry
        assert client.MINE == 'the user client' and register.MINE == 'the user register'
        print(registry.__file__)
    """)
    r = subprocess.run([str(venv_python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "site-packages" in r.stdout and str(ROOT) not in r.stdout, r.stdout
    r = subprocess.run([str(venv_python), "-m", "registry", "-h"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "-registries" in r.stdout, r.stdout + r.stderr


def test_mypy_strict_sees_the_sdk_types(venv_python: Path, tmp_path: Path) -> None:
    """A user's file type-checks under --strict, and a wrong use of our API is caught: the types are
    seen, not Any (without py.typed mypy reports "missing library stubs" instead)."""
    pytest.importorskip("mypy")
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""
        from registry.client import RpcClient, Service
        from registry.register import Register

        def owner(c: RpcClient, key: str) -> str:
            s: Service = c.match("webservice", key)
            return s.addr

        reg = Register("svc-1", ":7380", "", "127.0.0.1:7370", "webservice", "127.0.0.1:8080")
    """))
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        from registry.client import RpcClient

        def owner(c: RpcClient, key: str) -> int:
            return c.match("webservice", key)
    """))
    cache = tmp_path / ".mypy_cache"
    base = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(cache),
            "--python-executable", str(venv_python)]
    r = subprocess.run([*base, str(good)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*base, str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Incompatible return value type" in r.stdout and "Service" in r.stdout, r.stdout
