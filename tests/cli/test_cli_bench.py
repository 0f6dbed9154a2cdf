import json

from argen.cli import main


def test_bench_sample_reports_speed_and_memory(tmp_path, capsys):
    out = tmp_path / "b.jsonl"
    assert main(["bench", "sample", "--preset", "llamagen-tiny,fmnist-raster-tiny", "--batch", "2", "--cfg", "2",
                 "--top-k", "5", "--no-warmup", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "llamagen-tiny batch 2" in text and "img/s" in text and "peak mem" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["preset"] for r in rows] == ["llamagen-tiny", "fmnist-raster-tiny"]
    assert all(r["images_per_s"] > 0 and r["peak_mem_mb"] > 0 and r["batch"] == 2 for r in rows)
    assert rows[0]["decode_s"] is None and rows[1]["decode_s"] > 0 and rows[1]["resolution"] == 32
    assert main(["bench", "sample", "--preset", "vq-tiny", "--threads", "1"]) == 1
