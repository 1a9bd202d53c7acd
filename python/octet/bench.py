"""What a Python call of octet costs over the C++ call it wraps, as rows of `octet bench --json`.

usage: python -m octet.bench [--device cuda|cpu] [--calls N] [--rounds N] [--json FILE]

For quantize_blockwise (f32, 4096 elements) and percentile_clipping (f32 4x4) on small tensors
(PyTorch's on CUDA; NumPy's on the CPU), it times `calls` back-to-back calls from Python and the
same library calls from C++ in one loop (octet._octet._time_calls), each as wall time per call
with a synchronize at the end, `rounds` times; the row's value is the difference of the medians in
microseconds (target: within 5 us). Prints the table; writes JSON with --json.
"""
import argparse
import json
import statistics
import sys
import time

import octet
from octet import _octet


def _python_seconds_per_call(fn, calls, device):
    if device != "cpu":
        octet.synchronize(device)
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    if device != "cpu":
        octet.synchronize(device)
    return (time.perf_counter() - start) / calls


def _inputs(device):
    if device == "cpu":
        import numpy as np
        rng = np.random.default_rng(0)
        return "numpy", rng.standard_normal(4096).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32), \
            np.zeros(100, np.float32)
    import torch
    torch.manual_seed(0)
    dev = torch.device(device)
    return "torch", torch.randn(4096, device=dev), torch.randn(4, 4, device=dev), torch.zeros(100, device=dev)


def run(device, calls, rounds):
    library, A, grad, gnorm_vec = _inputs(device)
    cases = [
        ("quantize_blockwise", f"f32 n=4096 blocksize=4096, {library} {device}", A, None,
         lambda i: octet.quantize_blockwise(A, None, 4096)),
        ("percentile_clipping", f"f32 4x4 eager, {library} {device}", grad, gnorm_vec,
         lambda i: octet.percentile_clipping(grad, gnorm_vec, i + 1)),
    ]
    records = []
    for name, params, array, vec, fn in cases:
        fn(0)  # warm-up: first-use allocations, caches
        _octet._time_calls(name, array, vec, 10)
        py, cpp = [], []
        for _ in range(rounds):
            py.append(_python_seconds_per_call(fn, calls, device))
            cpp.append(_octet._time_calls(name, array, vec, calls))
        py_us, cpp_us = statistics.median(py) * 1e6, statistics.median(cpp) * 1e6
        records.append({
            "family": "python", "name": name, "params": params + ", Python call overhead over C++",
            "median_ms": statistics.median(py) * 1e3, "min_ms": min(py) * 1e3, "value": py_us - cpp_us, "unit": "us",
            "ceiling": 0.0, "percent_of_ceiling": 0.0, "target": "<= 5 us",
            "note": f"Python {py_us:.2f} us/call, C++ {cpp_us:.2f} us/call (median of {rounds} x {calls} calls)"})
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m octet.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if octet.cuda_available() else "cpu")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    device = octet.device(args.device)
    if device != "cpu":
        try:
            import torch  # noqa: F401
        except ImportError:
            print("octet.bench: CUDA rows need PyTorch (the CUDA arrays); --device cpu runs on NumPy")
            return 1
    records = run(device, args.calls, args.rounds)
    print(f"{'family':9} {'op':22} {'params':72} {'value':>8}  target / note")
    for r in records:
        print(f"{r['family']:9} {r['name']:22} {r['params']:72} {r['value']:6.2f} {r['unit']}  {r['target']}; {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device if device == "cpu" else _device_name(), "ceilings": {}, "runs": args.rounds,
                       "records": records}, f, indent=2)
            f.write("\n")
    return 0


def _device_name():
    import torch
    return torch.cuda.get_device_name()


if __name__ == "__main__":
    sys.exit(main())
