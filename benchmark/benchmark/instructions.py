"""Instructions per request of the in-process pipelines (benchmark.pipelines), counted by
valgrind's callgrind: a cost that does not drift with the machine's speed, as the ms beside
it do (the same VM model has run at half speed on another day).

A process under callgrind runs pipelines one after the other: for each, one request to warm
it up (the first allocates), then REQUESTS more, with a mark before each and after the last.
Callgrind writes its counts at every mark and starts again from zero (`--dump-before`), so
a counted request is the instructions between two marks, and the start-up (the interpreter,
the imports, each model's load and graph optimisation) falls in segments of its own, never
in a request's. A pipeline's figure is the median of its counted requests: they differ by
hundredths of a percent (the allocator's and the garbage collector's work does not fall the
same in every request; now and then one runs 0.3% over), and two counts of a pipeline by
0.06% at most (tests/test_instructions.py).

NOTE: marks in one process rather than the difference between two processes running a
pipeline for N1 and N2 requests: a Python process's start-up is about a minute under
callgrind (4 billion instructions, 92% of them imports): two per variant would be twelve
such minutes, where one process counts all six variants in two and a half (PROCESSES
processes, each with its share of the variants, in a minute and a half on two cores).

NOTE: the mark is `sys.getallocatedblocks()`, whose C function (`_Py_GetAllocatedBlocks`)
nothing else calls; a mark costs 1,375 instructions (CPython 3.11), 0.002% of a request,
counted in the request it follows. Callgrind's dumps are checked against the marks made.

NOTE: valgrind shows the program a CPU of its own, with AVX2 at most (no AVX-512, whatever
the host has): ONNX Runtime, the JPEG decoder and the resizer run their AVX2 kernels under
it. The count is that code path's, comparable across x86-64 machines; on a machine with
AVX-512 the ms beside it come from other kernels.

`python -m benchmark.instructions` is the process callgrind counts (count_instructions
starts it, benchmark.fidelity calls that).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmark.pipelines import PIPELINES, LoadedPipeline, parse

# Requests counted per pipeline, after its warm-up one: a request is a second or two under
# callgrind, and three let the median set aside one that ran the garbage collector.
REQUESTS = 3
MARKED = "_Py_GetAllocatedBlocks"  # sys.getallocatedblocks()'s C function
# Processes counting at once, the pipelines dealt between them: `make bench` has two cores,
# and a count does not depend on what else the machine runs.
PROCESSES = 2
# A process takes about a minute and a half; one that takes longer than this has hung.
TIMEOUT_S = 900


def instruction_counter() -> str | None:
    """What counts ("valgrind-3.19.0 --tool=callgrind"), None when valgrind is missing.

    NOTE: not `perf stat -e instructions`: virtual machines often have no hardware counters
    (`<not supported>`), and callgrind counts the same on every machine, counters or not."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    version = subprocess.run([valgrind, "--version"], capture_output=True, text=True).stdout
    return f"{version.strip()} --tool=callgrind"


def count_instructions(
    graphs: dict[str, Path | bytes], artifacts: Path, payload: Path, requests: int = REQUESTS
) -> dict[str, dict[str, Any]]:
    """Instructions per request of each pipeline named in `graphs` (its graph: a file, or the
    bytes of the int8 graph quantised in this process) on the JSON body in `payload`, and how
    they were counted: fidelity.json's `instructions` of each variant."""
    tool = instruction_counter()
    if tool is None:
        raise RuntimeError("valgrind is not installed: it counts the instructions")
    names = list(graphs)
    groups = [names[i::PROCESSES] for i in range(PROCESSES) if names[i::PROCESSES]]
    counted = {}
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        folder = Path(tmp)
        pipelines = {name: f"{name}={graph_file(graphs[name], folder / name)}" for name in names}
        arguments = [f"--artifacts={artifacts.resolve()}", f"--payload={payload.resolve()}"]
        arguments.append(f"--requests={requests}")
        outs = [folder / f"{index}.out" for index in range(len(groups))]
        running = [
            callgrind([*(pipelines[name] for name in group), *arguments], out)
            for group, out in zip(groups, outs, strict=True)
        ]
        try:
            for group, out, child in zip(groups, outs, running, strict=True):
                finish(child)
                segments = dumped_segments(out, marks=len(group) * (requests + 1))
                for index, name in enumerate(group):
                    # A segment a request, then one from the pipeline's last mark to the next
                    # one's first (the next pipeline's load and warm-up).
                    each = segments[index * (requests + 1) :][:requests]
                    counted[name] = {
                        "per_request": round(statistics.median(each)),
                        "tool": tool,
                        "each_request": each,
                    }
        finally:  # one failed: the other's count is of no use
            for child in running:
                child.kill()
                child.wait()
    return {name: counted[name] for name in names}


def graph_file(graph: Path | bytes, stem: Path) -> Path:
    """The graph as a file the counted process can load."""
    if isinstance(graph, bytes):  # the int8 graph, quantised in this process
        stem.with_suffix(".onnx").write_bytes(graph)
        return stem.with_suffix(".onnx")
    return graph.resolve()


def callgrind(arguments: list[str], out: Path) -> subprocess.Popen[str]:
    """`python -m benchmark.instructions` with `arguments`, started under callgrind, which
    writes its counts to `out`.N at the Nth mark."""
    env = {
        **os.environ,
        # String hashes, hence dict layouts and the code that walks them, as in every count.
        "PYTHONHASHSEED": "0",
    }
    return subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"),
            *(f"--dump-before={MARKED}", "--dump-line=no"),
            *(sys.executable, "-m", "benchmark.instructions", *arguments),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(child: subprocess.Popen[str]) -> None:
    _, stderr = child.communicate(timeout=TIMEOUT_S)
    if child.returncode != 0:
        raise RuntimeError(f"{child.args!r} failed:\n{stderr[-2000:]}")


def dumped_segments(out: Path, marks: int) -> list[int]:
    """Instructions between consecutive marks: `out`.1 is up to the first, `out`.N from the
    (N-1)th to the Nth; `out` itself, from the last to the end, is left out."""
    dumps = sorted(out.parent.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:]))
    if len(dumps) != marks:
        raise RuntimeError(f"callgrind dumped {len(dumps)} times for {marks} marks")
    return [totals(dump) for dump in dumps[1:]]


def totals(dump: Path) -> int:
    """A callgrind file's instructions (its `totals:` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: callgrind wrote no totals")


def run_requests(loaded: LoadedPipeline, body: bytes, requests: int) -> None:
    """What the ceilings time (pipelines.time_stages), without the clock: a warm-up request,
    then `requests` more, marked (callgrind dumps its counts at each mark)."""

    def request() -> None:
        loaded.infer(loaded.preprocess(loaded.decode(parse(body))))

    request()
    for _ in range(requests):
        sys.getallocatedblocks()
        request()
    sys.getallocatedblocks()


def main() -> None:
    parser = argparse.ArgumentParser(description="Pipelines, marked, under callgrind")
    parser.add_argument("pipelines", nargs="+", help="NAME=GRAPH: a pipeline and its graph")
    parser.add_argument("--artifacts", type=Path, required=True, help="exported model")
    parser.add_argument("--payload", type=Path, required=True, help="a JSON body")
    parser.add_argument("--requests", type=int, required=True, help="counted per pipeline")
    args = parser.parse_args()
    body = args.payload.read_bytes()
    for pipeline in args.pipelines:
        name, graph = pipeline.split("=", 1)
        loaded = LoadedPipeline(PIPELINES[name], args.artifacts, Path(graph))
        run_requests(loaded, body, args.requests)


if __name__ == "__main__":
    main()
