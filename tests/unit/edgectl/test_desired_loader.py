"""edgectl.config.load_desired: a fabric file or a directory of them, read safely from disk."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from edgectl.config import DesiredDocument, load_desired, load_fabric
from netmodel.fabric_file import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_TOTAL_BYTES, FabricFileError, parse_fabric
from tests.integration.harness import REPO

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
LINES = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
MIB = 1 << 20


def example_lines(first: int, last: int) -> str:
    return "".join(LINES[first - 1 : last])


def split_example(root: Path) -> Path:
    """The example as a directory: three files, one in a subdirectory, the switches split over two."""
    (root / "sub").mkdir(parents=True)
    (root / "10-core.yaml").write_text(example_lines(1, 18))
    (root / "sub" / "20-links.yaml").write_text("switches:\n" + example_lines(19, 44))
    (root / "30-compute.yml").write_text(example_lines(46, 57))
    return root


def problems(path: Path) -> list[str]:
    with pytest.raises(FabricFileError) as info:
        load_desired(str(path))
    return str(info.value).split("\n")


def test_a_directory_gives_the_single_file_spec(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    document = load_desired(str(root))
    assert isinstance(document, DesiredDocument)
    assert document.spec == parse_fabric(EXAMPLE.read_bytes(), str(EXAMPLE)) == load_fabric(str(EXAMPLE))
    assert document.files == ("10-core.yaml", "30-compute.yml", "sub/20-links.yaml")
    assert document.sources["sub/20-links.yaml"] == (root / "sub" / "20-links.yaml").read_bytes()
    assert load_fabric(str(root)) == document.spec
    with pytest.raises(TypeError):
        document.sources["x.yaml"] = b""  # type: ignore[index]


def test_a_single_file_document(tmp_path: Path) -> None:
    document = load_desired(str(EXAMPLE))
    assert document.files == ("edge-cloud.yaml",)
    assert document.sources == {"edge-cloud.yaml": EXAMPLE.read_bytes()}
    # the same file in a directory of its own is the same document
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "edge-cloud.yaml").write_bytes(EXAMPLE.read_bytes())
    assert load_desired(str(tmp_path / "d")).revision == document.revision


def test_problems_name_the_file_under_the_directory_and_its_line(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    links = root / "sub" / "20-links.yaml"
    links.write_text(links.read_text().replace("latency_ms: 6,", "latency_ms: -6,"))
    assert problems(root) == [f"{root}/sub/20-links.yaml:12: links[3].latency_ms: must be >= 0, got -6"]


def test_the_revision_depends_on_content_not_on_times_or_place(tmp_path: Path) -> None:
    root = split_example(tmp_path / "a")
    revision = load_desired(str(root)).revision
    assert len(revision) == 64 and load_desired(str(root)).short_revision == revision[:12]
    os.utime(root / "10-core.yaml", (0, 0))
    assert load_desired(str(root)).revision == revision
    elsewhere = split_example(tmp_path / "b" / "c")
    assert load_desired(str(elsewhere)).revision == revision
    core = root / "30-compute.yml"
    core.write_text(core.read_text().replace("replicas: 1", "replicas: 2"))
    assert load_desired(str(root)).revision != revision


def test_hidden_files_and_directories_and_other_suffixes_are_skipped(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    (root / ".draft.yaml").write_text("not: [valid")
    (root / ".git").mkdir()
    (root / ".git" / "config.yaml").write_text("switches: 5\n")
    (root / "README.md").write_text("switches: 5\n")
    (root / "old.yaml.bak").write_text("switches: 5\n")
    (root / "sub" / ".swp.yml").write_bytes(b"\x00\xff")
    document = load_desired(str(root))
    assert document.files == ("10-core.yaml", "30-compute.yml", "sub/20-links.yaml")


def test_an_empty_file_in_a_directory_is_fine(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    (root / "40-policies.yaml").write_text("# nothing declared yet\n")
    assert load_desired(str(root)).spec == load_fabric(str(EXAMPLE))


def test_a_directory_without_document_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "d" / ".hidden.yaml").write_text("name: x\n")
    assert problems(tmp_path / "d") == [f"{tmp_path}/d:1: <file>: no *.yaml or *.yml files in the directory"]


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "switches.yaml").write_text("name: x\n")
    root = split_example(tmp_path / "fabric.d")
    (root / "sub" / "x.yaml").symlink_to(outside / "switches.yaml")
    (root / "more").symlink_to(outside)
    (root / "notes.txt").symlink_to("/etc/hostname")  # not part of the document: ignored
    assert problems(root) == [
        f"{root}/more:1: <file>: symlink leaves the document directory (-> {outside})",
        f"{root}/sub/x.yaml:1: <file>: symlink leaves the document directory (-> {outside / 'switches.yaml'})",
    ]


def test_symlinks_inside_the_directory_are_read_under_their_own_names(tmp_path: Path) -> None:
    root = tmp_path / "fabric.d"
    split_example(root / ".parts")  # hidden: read only through the links
    (root / "core.yaml").symlink_to(".parts/10-core.yaml")
    (root / "compute.yaml").symlink_to(root / ".parts" / "30-compute.yml")  # absolute, but inside
    (root / "links").symlink_to(".parts/sub")
    document = load_desired(str(root))
    assert document.files == ("compute.yaml", "core.yaml", "links/20-links.yaml")
    assert document.spec == load_fabric(str(EXAMPLE))


def test_a_symlink_loop_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    (root / "sub" / "again").symlink_to("..")
    assert problems(root) == [f"{root}/sub/again:1: <file>: symlink loop (-> {root})"]


def test_a_fifo_in_the_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    os.mkfifo(root / "pipe.yaml")
    (root / "dangling.yaml").symlink_to("gone.yaml")
    assert problems(root) == [
        f"{root}/dangling.yaml:1: <file>: not a regular file (or a broken symlink)",
        f"{root}/pipe.yaml:1: <file>: not a regular file (or a broken symlink)",
    ]


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def load_measured(path: Path) -> tuple[list[str], float, int]:
    """The problems of loading ``path``, the seconds taken and the peak of Python allocations."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(FabricFileError) as info:
            load_desired(str(path))
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(info.value).split("\n"), elapsed, peak


def test_a_50_mb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    big = sparse(tmp_path / "big.yaml", 50 * MIB)
    lines, elapsed, peak = load_measured(big)
    assert lines == [f"{big}:1: <file>: too large ({50 * MIB} bytes; at most 8 MiB)"]
    assert elapsed < 1.0 and peak < 1 * MIB, (elapsed, peak)  # reading it would allocate 8 MiB at least


def test_a_50_mb_file_in_a_directory_is_refused_without_being_read(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    sparse(root / "sub" / "big.yml", 50 * MIB)
    sparse(root / "limit.yaml", MAX_DOCUMENT_BYTES)  # at the limit: fine, and not read either
    lines, elapsed, peak = load_measured(root)
    assert lines == [f"{root}/sub/big.yml:1: <file>: too large ({50 * MIB} bytes; at most 8 MiB)"]
    assert elapsed < 1.0 and peak < 1 * MIB, (elapsed, peak)


def test_a_directory_over_the_total_limit_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    root = tmp_path / "fabric.d"
    root.mkdir()
    count = MAX_DOCUMENT_TOTAL_BYTES // MAX_DOCUMENT_BYTES + 1
    for i in range(count):
        sparse(root / f"{i}.yaml", MAX_DOCUMENT_BYTES)
    lines, elapsed, peak = load_measured(root)
    assert lines == [f"{root}:1: <file>: too large ({count * MAX_DOCUMENT_BYTES} bytes in all; at most 32 MiB)"]
    assert elapsed < 1.0 and peak < 1 * MIB, (elapsed, peak)


def test_an_endless_pipe_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    """`edgectl validate <(yes)`: a pipe has no size to check first; reading stops after the limit."""
    pipe = tmp_path / "endless.yaml"
    os.mkfifo(pipe)
    written = [0]

    def write_forever() -> None:
        chunk = b"# " + b"x" * 65_532 + b"\n"
        try:
            with open(pipe, "wb") as handle:
                while written[0] < 4 * MAX_DOCUMENT_BYTES:  # bounded, should the reader not stop
                    handle.write(chunk)
                    written[0] += len(chunk)
        except BrokenPipeError:
            pass  # the reader stopped reading: what the test wants

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    try:
        assert problems(pipe) == [f"{pipe}:1: <file>: too large (more than {MAX_DOCUMENT_BYTES} bytes; at most 8 MiB)"]
    finally:
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert written[0] < 2 * MAX_DOCUMENT_BYTES


def test_an_unreadable_file_in_a_directory_is_a_problem(tmp_path: Path) -> None:
    root = split_example(tmp_path / "fabric.d")
    (root / "10-core.yaml").chmod(0)
    code = (
        "import sys\n"
        "from edgectl.config import load_desired\n"
        "from netmodel.fabric_file import FabricFileError\n"
        "try:\n    load_desired(sys.argv[1])\n"
        "except FabricFileError as exc:\n    print('\\n'.join(p.format('') for p in exc.problems))\n"
    )
    # Root reads any file: the reader runs without the capabilities that let it (still root, so it reaches
    # the checkout and the venv wherever they are).
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        result = subprocess.run(
            [*drop, sys.executable, "-c", code, str(root)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        (root / "10-core.yaml").chmod(0o644)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{root}/10-core.yaml:1: <file>: cannot read: Permission denied"]
