import json

import torch
from PIL import Image

import argen
from argen.cli import main


def test_train_resume_sample_round_trip(tmp_path, capsys, fashion_mnist):
    torch.manual_seed(0)
    argen.save(argen.create("vq-tiny"), tmp_path / "tok")  # stands in for a trained tokenizer
    common = ["train", "--preset", "fmnist-raster-tiny", "--tokenizer", str(tmp_path / "tok"), "--data", "fashion-mnist",
              "--max-images", "64", "--batch-size", "16", "--out", str(tmp_path / "run"), "--threads", "1",
              "--set", "generator.depth=1"]
    assert main(common + ["--steps", "4", "--samples-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "pipeline saved to" in out and "bits/token" in out
    assert (tmp_path / "run" / "samples.png").is_file() and (tmp_path / "run" / "tokens" / "tokens.npy").is_file()
    assert main(common + ["--steps", "4"]) == 1  # refuses to overwrite a run without --resume
    assert main(common + ["--steps", "6", "--samples-per-class", "0", "--resume"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and "bits_per_token" in log[-1]["metrics"]
    pipe = argen.Pipeline.load(tmp_path / "run" / "pipeline")
    assert pipe.generator.config.depth == 1 and pipe.conditioner.config.class_names[7] == "Sneaker"

    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--labels", "0,sneaker,-1", "--seed", "0", "--cfg", "2", "--top-k", "10",
                 "--out", str(tmp_path / "s"), "--grid", str(tmp_path / "grid.png"), "--threads", "1"]) == 0
    assert "3 images written" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "s").glob("*.png"))
    assert files == ["0000_T-shirt-top.png", "0001_Sneaker.png", "0002_uncond.png"]
    conditions = json.loads((tmp_path / "s" / "conditions.json").read_text())
    assert conditions == {"0000_T-shirt-top.png": "T-shirt/top", "0001_Sneaker.png": "Sneaker", "0002_uncond.png": "uncond"}
    assert Image.open(tmp_path / "s" / files[1]).size == (32, 32) and (tmp_path / "grid.png").is_file()
    # same seed -> same images
    main(["sample", str(tmp_path / "run" / "pipeline"), "--labels", "0,sneaker,-1", "--seed", "0", "--cfg", "2",
          "--top-k", "10", "--out", str(tmp_path / "s2"), "--threads", "1"])
    assert (tmp_path / "s2" / files[1]).read_bytes() == (tmp_path / "s" / files[1]).read_bytes()
    assert main(["sample", str(tmp_path / "nothing")]) == 1


def test_next_scale_train_adopts_a_differently_sized_tokenizer_quantizer(tmp_path, fashion_mnist):
    torch.manual_seed(0)
    # a trained msvq tokenizer whose codebook differs from the preset's: the generator must follow it
    tok = argen.create("msvq-tiny", **{"quantizer.codebook_size": 128})
    argen.save(tok, tmp_path / "tok")
    assert main(["train", "--preset", "fmnist-var-tiny", "--tokenizer", str(tmp_path / "tok"), "--data", "fashion-mnist",
                 "--max-images", "32", "--batch-size", "16", "--steps", "2", "--samples-per-class", "0",
                 "--out", str(tmp_path / "run"), "--threads", "1", "--set", "generator.depth=1"]) == 0
    pipe = argen.Pipeline.load(tmp_path / "run" / "pipeline")
    assert pipe.generator.config.vocab_size == 128 and pipe.generator.quantizer.config == pipe.tokenizer.quantizer.config
    tq, gq = pipe.tokenizer.quantizer.state_dict(), pipe.generator.quantizer.state_dict()
    assert tq.keys() == gq.keys() and all(torch.equal(tq[k], gq[k]) for k in tq)
    # the sampler's FastVAR-style pruning is reachable from the CLI, and refused with a one-line error when too long
    out = tmp_path / "pruned"
    assert main(["sample", str(tmp_path / "run" / "pipeline"), "--labels", "0,1", "--seed", "0", "--prune", "0.5",
                 "--out", str(out)]) == 0 and len(list(out.glob("*.png"))) == 2
    assert main(["sample", str(tmp_path / "run" / "pipeline"), "--labels", "0", "--prune", "0.5", "0.5", "0.5",
                 "0.5", "--out", str(out)]) == 1
