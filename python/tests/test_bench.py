"""python -m octet.bench: runs (on NumPy arrays on the CPU here; the GPU check runs it on CUDA) and
writes rows in the format of `octet bench --json`."""
import json
import math

from octet import bench


def test_bench_rows_on_the_cpu(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--calls", "20", "--rounds", "2", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["device"] == "cpu"
    assert [r["name"] for r in doc["records"]] == ["quantize_blockwise", "percentile_clipping"]
    for r in doc["records"]:
        assert r["family"] == "python" and r["unit"] == "us" and r["target"] == "<= 5 us"
        assert {"params", "median_ms", "min_ms", "value", "ceiling", "percent_of_ceiling", "note"} <= r.keys()
        assert math.isfinite(r["value"]) and r["median_ms"] > 0
    assert "percentile_clipping" in capsys.readouterr().out
