"""Python counterpart of bench:open's measuring process (bench/_open_child.ts).

Opens each component of a model folder with the onnxruntime Python package
(the exporter's .venv: onnxruntime 1.32) under the same options as the
parastep child, and prints the same JSON (see bench/_open_spec.ts). With
several workers, one thread per worker creates its session at the same
moment (ORT releases the GIL while it loads a session). Run by bench/open.ts;
by hand: .venv/bin/python bench/open.py '<ChildSpec JSON>'.
"""

import ctypes
import json
import os
import sys
import threading
import time

import onnxruntime as ort

LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def rss_mib():
    # Freed heap back to the system first, as the parastep child does.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:
        return float("nan")


def session_options(spec):
    so = ort.SessionOptions()
    cores = os.cpu_count() or 1
    so.intra_op_num_threads = spec["threads"] or max(1, cores // spec["workers"])
    so.graph_optimization_level = LEVELS[spec["level"]]
    so.log_severity_level = 0 if spec["phases"] else 3
    if spec["workers"] > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not spec["prepacking"]:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return so


def model_dir(name):
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = (name, os.path.join(here, "..", "models", name), os.path.join(here, "..", ".cache", "models", name))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "manifest.json")):
            return candidate
    sys.exit(f"bench/open.py: cannot find model '{name}'")


def main():
    spec = json.loads(sys.argv[1])
    folder = model_dir(spec["model"])
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    ort.set_default_logger_severity(0 if spec["phases"] else 3)
    # The first session of the process pays ORT's one-time start; time it apart.
    tiny = os.path.join(folder, manifest["components"]["projection"]["file"])
    t = time.perf_counter()
    quiet = session_options({**spec, "phases": False})
    ort.InferenceSession(tiny, quiet, providers=["CPUExecutionProvider"])
    first_ms = (time.perf_counter() - t) * 1000
    keep = []
    components = {}
    for name in spec["components"]:
        path = os.path.join(folder, manifest["components"][name]["file"])
        by_path = spec["source"] == "path" or (spec["source"] == "auto" and os.path.isfile(path + ".data"))
        source = path if by_path else open(path, "rb").read()
        times = [0.0] * spec["workers"]
        barrier = threading.Barrier(spec["workers"])

        def open_one(k):
            so = session_options(spec)
            barrier.wait()
            t0 = time.perf_counter()
            keep.append(ort.InferenceSession(source, so, providers=["CPUExecutionProvider"]))
            times[k] = (time.perf_counter() - t0) * 1000

        rss0 = rss_mib()
        if spec["phases"]:
            print(f"@@open {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=open_one, args=(k,)) for k in range(spec["workers"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = (time.perf_counter() - t0) * 1000
        if spec["phases"]:
            print(f"@@done {name}", file=sys.stderr, flush=True)
        rss = rss_mib() - rss0
        components[name] = {"ms": times, "wallMs": wall, "ownerMs": 0, "rssMiB": rss, "cache": "off"}
    print(json.dumps({"firstSessionMs": first_ms, "components": components}))


if __name__ == "__main__":
    main()
