"""`vlaforge corpus build|inspect|verify` end to end, on real dataset outputs; verify also over `python -m
http.server` in a subprocess."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from vlaforge.flows.cli import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at the terminal width


@pytest.fixture
def datasets(small_corpus, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_corpus.parent, root, ignore=shutil.ignore_patterns("corpus.json"))
    return root


def build(datasets, *extra):
    corpus = datasets / "corpus.json"
    code = main(["corpus", "build", "--robot", f"left={datasets / 'arm_a'}", "--robot", str(datasets / "arm_b"),
                 "--vl", str(datasets / "vl"), "--output", str(corpus), *extra])
    return code, corpus


def test_build_writes_the_mixture_asked_for(datasets, capsys):
    code, corpus = build(datasets, "--ratio", "1:3", "--seed", "9", "--weight", "left=0.5")
    out = capsys.readouterr().out
    assert code == 0
    body = json.loads(corpus.read_text())
    assert body["ratio"] == {"vl": 1.0, "robot": 3.0} and body["seed"] == 9
    assert {c["name"]: c["weight"] for c in body["components"]} == {"left": 0.5, "arm_b": 0.5,
                                                                    "synth-vl-caption": 1.0}
    assert "left" in out and "25.00%" in out and "37.50%" in out  # VL 1/4 of draws; each arm half of 3/4


def test_inspect_prints_counts_the_run_plan_and_decoded_samples(datasets, capsys):
    _, corpus = build(datasets)
    capsys.readouterr()
    assert main(["corpus", "inspect", str(corpus), "--steps", "1000", "--batch-size", "70"]) == 0
    out = capsys.readouterr().out
    assert "VL:robot 1:6" in out and "1,000 steps x 70 = 70,000 draws" in out
    assert "10,000" in out and "156.25" in out  # VL: 1/7 of 70,000 draws over 64 samples
    assert "wrist.jpg (783 B): JPEG 16x16" in out and "state.npy (160 B): float32 (8,)" in out
    assert "instruction: put the red mug on the shelf" in out and "embodiment: arm_b" in out
    assert "user: <image> Describe the image in one sentence." in out


def test_inspect_prints_how_the_recipe_scale_corpus_is_drawn(scale_corpus, capsys):
    assert main(["corpus", "inspect", str(scale_corpus), "--samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "200,000,000" in out and "80,000,000" in out and "40,000 steps x 32,768 = 1,310,720,000 draws" in out
    assert "85.71%" in out and "14.29%" in out
    assert "teleop_towel │ robot │ 43,200,000 │ 242,670,446 │   5.62" in out
    assert "vqa          │ vl    │ 20,000,000 │  46,811,429 │   2.34" in out


def test_verify_passes_a_clean_corpus_and_names_every_bad_shard(datasets, capsys):
    _, corpus = build(datasets)
    assert main(["corpus", "verify", str(corpus), "--no-progress", "--workers", "2"]) == 0
    assert "12 of 12 shards match the manifest" in capsys.readouterr().out
    shards = sorted((datasets / "arm_b" / "train").glob("*.tar"))
    data = bytearray(shards[0].read_bytes())
    data[1000] ^= 1
    shards[0].write_bytes(bytes(data))
    shards[1].write_bytes(shards[1].read_bytes()[:4096])
    shards[2].unlink()
    assert main(["corpus", "verify", str(corpus), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "9 of 12 shards match the manifest; 3 do not" in out
    assert f"BAD arm_b: {shards[0]}: sha256" in out
    assert f"BAD arm_b: {shards[1]}: 4,096 bytes, the manifest says" in out
    assert f"BAD arm_b: {shards[2]}: unreadable" in out


def test_verify_over_http_from_a_python_http_server(datasets, capsys):
    _, corpus = build(datasets)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=datasets, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/corpus.json"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert main(["corpus", "verify", url, "--no-progress", "--split", "train"]) == 0
        assert "12 of 12 shards match" in capsys.readouterr().out
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_bad_invocations_say_what_to_fix(tmp_path, capsys):
    assert main(["corpus", "inspect", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the corpus manifest" in capsys.readouterr().out
    assert main(["corpus", "build", "--output", str(tmp_path / "c.json")]) == 2
    assert "needs at least one dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["corpus", "build", "--ratio", "one-to-six", "--output", "x"])
    assert "--ratio takes VL:ROBOT" in capsys.readouterr().err


def test_a_second_build_to_one_path_is_refused_not_last_writer_wins(datasets, capsys):
    code, corpus = build(datasets, "--ratio", "1:3")
    assert code == 0
    first = corpus.read_bytes()
    assert build(datasets, "--ratio", "1:3")[0] == 0  # the same corpus again: no change
    capsys.readouterr()

    assert build(datasets, "--ratio", "1:6", "--seed", "4")[0] == 2
    err = capsys.readouterr().err
    assert f"{corpus} already holds another corpus (components left, arm_b, synth-vl-caption, seed 0" in err
    assert "--overwrite" in err and err.count("error:") == 1
    assert corpus.read_bytes() == first

    assert build(datasets, "--ratio", "1:6", "--seed", "4", "--overwrite")[0] == 0
    assert json.loads(corpus.read_text())["seed"] == 4
    assert [p.name for p in corpus.parent.iterdir() if ".tmp-" in p.name] == []


def test_two_builds_at_once_to_one_path_one_wins_whole(datasets):
    """Two `vlaforge corpus build` processes started together with different seeds: one writes its corpus, the other
    is refused; the file is the winner's, whole."""
    vlaforge = os.path.join(os.path.dirname(sys.executable), "vlaforge")
    corpus = datasets / "corpus.json"
    commands = [[vlaforge, "corpus", "build", "--robot", str(datasets / "arm_a"), "--vl", str(datasets / "vl"),
                 "--output", str(corpus), "--seed", str(seed)] for seed in (1, 2)]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = 1 + [code for code, _ in results].index(0)
    assert json.loads(corpus.read_text())["seed"] == winner
    assert "already holds another corpus" in next(err for code, err in results if code == 2)
