"""``virnucpro predict`` end to end on the CPU: outputs, 1 vs 2 processes, kill and resume, a second node."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLES, ROOT, run_cli
from virnucpro_kernel.outputs import read_frames_parquet

pytestmark = pytest.mark.slow  # whole runs of the command in subprocesses: `make test` only

INPUT = EXAMPLES / "viralverify_test.fa"
ROOT_DATA = ROOT / "virnucpro_kernel" / "data"


def _frames(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "prediction_results.txt", sep="\t", dtype={"score1": str, "score2": str})


def _assert_same_frames(a: Path, b: Path, tol=1e-4):
    fa, fb = _frames(a), _frames(b)
    assert fa["Sequence_ID"].tolist() == fb["Sequence_ID"].tolist()
    d = np.abs(fa["score2"].astype(float).to_numpy() - fb["score2"].astype(float).to_numpy())
    assert d.max() <= tol


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    r = run_cli("predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--unit-records", "2", "--quiet", "--save-features")
    assert r.returncode == 0, r.stderr
    return out


def test_outputs_present_and_consistent(single_run):
    out = single_run
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "sequences.tsv", "viral.fa",
                 "frames.parquet", "run.json"):
        assert (out / name).is_file(), name
    assert not (out / ".work").exists(), "work units are removed after a finished run"
    assert list((out / "logs").glob("predict_*.log"))
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t")
    assert seqs["sequence_id"].tolist() == ["NC_045512.2", "NC_001416.1", "NZ_CP021331.1", "CP045262.1",
                                            "NC_000913.3:1-30000"]
    frames = _frames(out)
    # the same frames, in the same order, as prepare (and so the original) selects them
    r = run_cli("prepare", INPUT, "--chunk-size", "300", "--out", out.parent / "prep")
    assert r.returncode == 0
    ids = [line[1:].strip() for line in open(out.parent / "prep" / "identified_protein.faa") if line.startswith(">")]
    assert frames["Sequence_ID"].tolist() == ids
    assert seqs["frames"].sum() == len(frames)
    run = json.loads((out / "run.json").read_text())
    assert run["profile"]["name"] == "demo" and run["warnings"], "the demo warning is recorded"
    assert run["counts"]["frames"] == len(frames)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: run.json names the commit of the code that made it
        assert run["git_commit"] == head.stdout.strip() and isinstance(run["git_dirty"], bool)
        from virnucpro_kernel import load_run
        from virnucpro_kernel.reports.tables import provenance

        facts = dict(zip(*provenance(load_run(out)).T.values))
        assert facts["commit"].startswith(head.stdout.strip()[:12])
    table, features = read_frames_parquet(out / "frames.parquet")
    assert features.shape == (len(frames), 160) and np.isfinite(features).all()
    viral = [line[1:].split()[0] for line in open(out / "viral.fa") if line.startswith(">")]
    assert viral == seqs.loc[seqs["call"] == "virus", "sequence_id"].tolist()


def test_units_do_not_change_results(single_run, tmp_path):
    out = tmp_path / "out"
    r = run_cli("predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--unit-records", "4096", "--token-budget", "1000", "--quiet")
    assert r.returncode == 0, r.stderr
    _assert_same_frames(single_run, out)


def _torchrun(args, nproc=2, extra=(), env=None, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, f"--nproc-per-node={nproc}", "-m",
           "virnucpro_kernel", *map(str, args)]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.distributed
def test_two_processes_give_the_same_files(tmp_path):
    """One process and two (torchrun) on the same input and settings: every output file byte for byte the same,
    except run.json (timings, world size) and logs/."""
    args = [INPUT, "--chunk-size", "300", "--profile", "demo", "--gpus", "0", "--unit-records", "1", "--quiet",
            "--save-features"]
    one = tmp_path / "one"
    r = run_cli("predict", args[0], "--out", one, *args[1:])
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two"
    p = _torchrun(["predict", args[0], "--out", two, *args[1:]], extra=["--standalone"])
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    names = sorted(x.name for x in one.iterdir() if x.is_file() and x.name != "run.json")
    assert names == ["frames.parquet", "prediction_results.txt", "prediction_results_highestscore.csv",
                     "sequences.tsv", "viral.fa"]
    assert names == sorted(x.name for x in two.iterdir() if x.is_file() and x.name != "run.json")
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert json.loads((two / "run.json").read_text())["parameters"]["world_size"] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_second_node_on_localhost_joins(single_run, tmp_path):
    out = tmp_path / "out_nodes"
    port = _free_port()
    args = ["predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
            "--unit-records", "1", "--quiet"]
    nodes = [_torchrun(args, nproc=1, extra=["--nnodes=2", f"--node-rank={r}", "--master-addr=127.0.0.1",
                                             f"--master-port={port}"]) for r in (0, 1)]
    results = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], results[0][1] + results[1][1]
    _assert_same_frames(single_run, out)
    logs = "".join(p.read_text() for p in (out / "logs").glob("predict_*.log"))
    assert "rank1" in logs and "rank0" in logs, "both nodes worked on the run"


@pytest.mark.distributed
def test_kill_and_resume_with_other_process_count(single_run, tmp_path):
    out = tmp_path / "out_kill"
    args = ["predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
            "--unit-records", "1", "--token-budget", "1", "--quiet"]
    p = subprocess.Popen([sys.executable, "-m", "virnucpro_kernel", *map(str, args)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    units = out / ".work" / "units"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(units.glob("unit_*.npz"))) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done_before = sorted(x.name for x in units.glob("unit_*.npz"))
    assert 2 <= len(done_before) < 5, "killed in the middle of the run"
    first_logs = set((out / "logs").glob("predict_*.log"))
    assert not (out / "run.json").exists()
    # resume with two processes and another token budget: only the missing units are computed
    q = _torchrun([*args[:-3], "--token-budget", "5000", "--quiet", "--resume"], extra=["--standalone"])
    _, stderr = q.communicate(timeout=300)
    assert q.returncode == 0, stderr
    _assert_same_frames(single_run, out)
    resumed_logs = sorted(set((out / "logs").glob("predict_*.log")) - first_logs)
    assert len(resumed_logs) == 1, "the resumed run's own log (both processes write to it)"
    assert f"resuming: {len(done_before)} finished unit(s) kept" in "".join(p.read_text() for p in resumed_logs)
    computed = _units_computed(resumed_logs)
    assert sorted(computed) == sorted(set(range(5)) - {int(n[5:13]) for n in done_before}), \
        "each missing unit computed once, by one of the two processes; no kept unit again"


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "o"
    work = out / ".work" / "units"
    work.mkdir(parents=True)
    (out / ".work" / "manifest.json").write_text(json.dumps({"chunk_size": 500}))
    r = run_cli("predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--resume", "--quiet")
    assert r.returncode == 2
    assert "cannot resume" in r.stderr and "chunk size" in r.stderr and r.stderr.count("\n") == 1


def test_bad_input_leaves_nothing(tmp_path):
    bad = tmp_path / "dup.fa"
    bad.write_text(">a\nACGTACGTAC\n>a\nACGTAAAAAA\n")
    out = tmp_path / "out"
    r = run_cli("predict", bad, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("virnucpro: error:")
    assert "'a'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


NO_MODELS = {"VIRNUCPRO_HOME": "{tmp}/nothing", "HF_HUB_OFFLINE": "1", "HF_HOME": "{tmp}/hf"}


def _no_models(tmp_path):
    return {k: v.format(tmp=tmp_path) for k, v in NO_MODELS.items()}


def test_auto_profile_without_real_models_refuses(tmp_path):
    """No silent toy models: without the real files, the default profile stops and says what is missing."""
    out = tmp_path / "out"
    r = run_cli("predict", EXAMPLES / "jaeger_short.fa", "--chunk-size", "300", "--out", out, "--gpus", "0",
                "--quiet", env=_no_models(tmp_path))
    _assert_clean_failure(r, out, "DNABERT-S", "ESM-2", "classifier 300_model.pth", "virnucpro models download",
                          "--profile demo")
    r = run_cli("train", "--virus", EXAMPLES / "jaeger_short.fa", "--host", EXAMPLES / "jaeger_short.fa",
                "--chunk-size", "300", "--out", tmp_path / "m.safetensors", env=_no_models(tmp_path))
    assert r.returncode == 2 and "virnucpro models download" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.safetensors").exists()
    r = run_cli("models", "verify", env=_no_models(tmp_path))
    assert r.returncode == 2 and "MISSING" in r.stdout


def test_demo_run_says_so_where_users_read(single_run):
    seqs = pd.read_csv(single_run / "sequences.tsv", sep="\t")
    assert list(seqs.columns)[-1] == "profile" and set(seqs["profile"]) == {"demo"}
    headers = [line for line in open(single_run / "viral.fa") if line.startswith(">")]
    assert headers and all(h.rstrip("\n").endswith(" [demo profile: not biologically meaningful]") for h in headers)


def _assert_clean_failure(r, out, *needles):
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("virnucpro: error:") and "Traceback" not in r.stderr
    for n in needles:
        assert n in last
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_bad_models_and_settings_leave_nothing(tmp_path):
    from conftest import FIXTURES

    out = tmp_path / "out"
    base = ["predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0", "--quiet"]
    _assert_clean_failure(run_cli(*base, "--classifier", FIXTURES / "classifier" / "hostile_model.pth"), out,
                          "refusing")
    _assert_clean_failure(run_cli(*base, "--classifier", FIXTURES / "classifier" / "500_model.pth"), out,
                          "features")
    _assert_clean_failure(run_cli(*base, "--classifier", tmp_path / "nope.pth"), out, "no such file")
    _assert_clean_failure(run_cli(*base, "--token-budget", "0"), out, "--token-budget")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    r = run_cli(*base[:4], blocker / "sub", *base[6:])
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_input_must_be_a_regular_file(tmp_path):
    out = tmp_path / "out"
    fifo = tmp_path / "pipe.fa"
    os.mkfifo(fifo)
    r = run_cli("predict", fifo, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0")
    _assert_clean_failure(r, out, "regular file")


@pytest.mark.distributed
def test_bad_input_under_manual_torchrun_leaves_nothing(tmp_path):
    bad = tmp_path / "dup.fa"
    bad.write_text(">a\nACGTACGTAC\n>a\nACGTAAAAAA\n")
    out = tmp_path / "out"
    p = _torchrun(["predict", bad, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0"],
                  extra=["--standalone"])
    _, stderr = p.communicate(timeout=300)
    assert p.returncode != 0
    assert "virnucpro: error:" in stderr and "'a'" in stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed after two of its five work units: (input copy, output folder)."""
    base = tmp_path_factory.mktemp("interrupted")
    src = base / "input.fa"
    src.write_bytes(INPUT.read_bytes())
    out = base / "out"
    args = ["predict", src, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
            "--unit-records", "1", "--token-budget", "1", "--quiet"]
    p = subprocess.Popen([sys.executable, "-m", "virnucpro_kernel", *map(str, args)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    units = out / ".work" / "units"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(units.glob("unit_*.npz"))) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert 2 <= len(list(units.glob("unit_*.npz"))) < 5 and not (out / "run.json").exists()
    return src, out


def _copy_run(interrupted, tmp_path):
    import shutil

    src, out = interrupted
    shutil.copy2(src, tmp_path / "input.fa")
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "input.fa", tmp_path / "out"


def test_resume_refuses_an_input_edited_in_the_middle(interrupted, tmp_path):
    """Same size, same modification time, one base changed in the middle: the SHA-256 tells."""
    src, out = _copy_run(interrupted, tmp_path)
    st = src.stat()
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    while data[middle] not in b"ACGT":
        middle += 1
    data[middle] = ord("A") if data[middle] != ord("A") else ord("C")
    src.write_bytes(bytes(data))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    kept = sorted(p.name for p in (out / ".work" / "units").glob("*.npz"))
    r = run_cli("predict", src, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--quiet", "--resume")
    assert r.returncode == 2 and "SHA-256" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert sorted(p.name for p in (out / ".work" / "units").glob("*.npz")) == kept
    assert not (out / "run.json").exists()


def _units_computed(log_files) -> list[int]:
    """The units these log files say were computed ("unit N: ..."), one entry per computation."""
    return [int(line.split(" unit ")[1].split(":")[0]) for p in log_files for line in p.read_text().splitlines()
            if " INFO unit " in line]


def test_resume_recomputes_a_unit_file_cut_short(interrupted, tmp_path, single_run):
    """The cut unit and the missing ones are computed; the readable ones are kept as they are: a score planted
    in a kept unit file reaches the outputs (a recomputed unit would have the model's score)."""
    from virnucpro_kernel.units import read_unit

    src, out = _copy_run(interrupted, tmp_path)
    units = sorted((out / ".work" / "units").glob("unit_*.npz"))
    data = units[0].read_bytes()
    units[0].write_bytes(data[: len(data) // 2])
    kept = [p for p in units[1:] if len(read_unit(p)["probs"])]
    assert kept, "a kept unit with frames"
    planted = read_unit(kept[0])
    planted["probs"][0] = [0.123456, 0.876544]
    with open(kept[0], "wb") as fh:
        np.savez(fh, **planted)
    first_logs = set((out / "logs").glob("predict_*.log"))
    r = run_cli("predict", src, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    assert "unreadable" in r.stderr and units[0].name in r.stderr
    computed = _units_computed(sorted(set((out / "logs").glob("predict_*.log")) - first_logs))
    kept_units = {int(p.name[5:13]) for p in units[1:]}
    assert sorted(computed) == sorted(set(range(5)) - kept_units), "exactly the missing units (and the cut one) ran"
    frames, ref = _frames(out), _frames(single_run)
    hit = frames["score2"].astype(float).sub(0.876544).abs() < 1e-6
    assert hit.sum() == 1, "the planted score of the kept unit is in the outputs"
    row = frames.index[hit][0]
    assert abs(float(frames.loc[row, "score1"]) - 0.123456) < 1e-6
    others = frames.drop(index=row)  # every other frame as in the uninterrupted run
    d = np.abs(others["score2"].astype(float).to_numpy() - ref.drop(index=row)["score2"].astype(float).to_numpy())
    assert d.max() <= 1e-6


def test_options_that_would_be_ignored_are_refused(tmp_path):
    out = tmp_path / "out"
    base = ["predict", INPUT, "--chunk-size", "300", "--out", out, "--gpus", "0", "--quiet"]
    _assert_clean_failure(run_cli(*base, "--profile", "demo", "--esm", tmp_path), out, "--esm/--dnabert",
                          "--profile demo")
    _assert_clean_failure(run_cli(*base, "--profile", "random", "--dnabert", tmp_path), out, "--profile random")
    _assert_clean_failure(run_cli(*base, "--profile", "random", "--classifier", INPUT), out, "--classifier")


def test_classifier_made_for_another_chunk_size_is_refused(tmp_path):
    demo500 = ROOT_DATA / "demo" / "demo_classifier_500.safetensors"
    out = tmp_path / "out"
    r = run_cli("predict", INPUT, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0",
                "--classifier", demo500, "--quiet")
    _assert_clean_failure(r, out, "--chunk-size 500", "not 300")


def test_threads_and_umask(tmp_path):
    out = tmp_path / "deep" / "out"
    cmd = [sys.executable, "-m", "virnucpro_kernel", "predict", str(INPUT), "--chunk-size", "300", "--out",
           str(out), "--profile", "demo", "--gpus", "0", "--quiet", "--threads", "1"]
    r = subprocess.run(["sh", "-c", 'umask 002 && exec "$@"', "sh", *cmd], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["threads"] == 1
    for p in (out.parent, out, out / "logs", out / "sequences.tsv", out / "run.json"):
        assert p.stat().st_mode & 0o020, f"{p} is not group-writable under umask 002"
    out2 = tmp_path / "out2"
    r = run_cli("predict", INPUT, "--chunk-size", "300", "--out", out2, "--profile", "demo", "--gpus", "0",
                "--quiet", env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert json.loads((out2 / "run.json").read_text())["parameters"]["threads"] == 2


def test_empty_records_are_named_in_the_log_and_run_json(tmp_path):
    """Length-0 records have no chunks, so no row anywhere: the run says which, where it is kept."""
    src = tmp_path / "with_empty.fa"
    src.write_bytes(b">nothing_here\n" + INPUT.read_bytes() + b">also_empty\n\n")
    out = tmp_path / "out"
    r = run_cli("predict", src, "--chunk-size", "300", "--out", out, "--profile", "demo", "--gpus", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    said = "skipped 2 record(s) of length 0 (nothing_here, also_empty); they are in no output file"
    assert said in r.stderr  # a warning: shown even under --quiet
    info = json.loads((out / "run.json").read_text())
    assert any(said in w for w in info["warnings"])
    assert info["input_summary"]["empty_records"] == 2 and info["input_summary"]["records"] == 7
    assert any(said in p.read_text() for p in (out / "logs").glob("*.log"))
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t")
    assert len(seqs) == 5 and not {"nothing_here", "also_empty"} & set(seqs["sequence_id"])
