"""Where the three models come from: the ``real`` and ``demo`` profiles, and ``virnucpro models ...``.

``real``: DNABERT-S (``zhihan1996/DNABERT-S``), ESM-2 3B (``facebook/esm2_t36_3B_UR50D``) and the published
classifier for the chunk size (``300_model.pth`` / ``500_model.pth`` from the root of the
``Li-Jing-1997/VirNucPro`` repository), from explicit paths, ``VIRNUCPRO_DNABERT`` / ``VIRNUCPRO_ESM`` /
``VIRNUCPRO_CLASSIFIER_DIR``, the local Hugging Face cache and ``$VIRNUCPRO_HOME`` (default
``~/.cache/virnucpro``). Nothing is downloaded at run time: ``virnucpro models download`` does that once.

``demo``: small encoders built deterministically from a seed, plus a classifier for their features trained
with ``virnucpro train`` on labelled sequences shipped in the package. It runs offline in seconds on a CPU;
its calls are not biologically meaningful.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError, VirNucProError

HUB_DNABERT = "zhihan1996/DNABERT-S"
HUB_ESM = "facebook/esm2_t36_3B_UR50D"
CLASSIFIER_REPO = "Li-Jing-1997/VirNucPro"
CLASSIFIER_URL = "https://raw.githubusercontent.com/Li-Jing-1997/VirNucPro/main/{name}"
# git blob ids (SHA-1 of b"blob <size>\0" + content) of the published classifier checkpoints
CLASSIFIER_BLOBS = {300: ("300_model.pth", "a0b5b85e7c1e44f00cde146d091beb82b2c8e855"),
                    500: ("500_model.pth", "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d")}
REAL_FEATURES = 768 + 2560
DATA = Path(__file__).resolve().parent.parent / "data"
DEMO_SEED = 20250101
DEMO_WARNING = ("demo profile: small random-weight encoders and a classifier trained on a few shipped genomes; "
                "its calls are not biologically meaningful (run `virnucpro models download` for the real models)")


RANDOM_WARNING = ("random profile: random weights of the real model shapes, for benchmarks: the compute is real, "
                  "the calls are meaningless")


def models_home() -> Path:
    return Path(os.environ.get("VIRNUCPRO_HOME", Path.home() / ".cache" / "virnucpro")).expanduser()


def git_blob_sha1(path) -> str:
    """The git blob id of a file: SHA-1 of ``blob <size>\\0`` followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ demo shapes


def demo_configs():
    from .dnabert_s import DNABERTSConfig
    from .esm2 import ESM2Config

    dnabert = DNABERTSConfig(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128)
    esm = ESM2Config(num_layers=2, hidden_size=96, num_heads=4, ffn_size=192)
    return dnabert, esm


def demo_classifier_path(chunk_size: int) -> Path:
    return DATA / "demo" / f"demo_classifier_{chunk_size}.safetensors"


def demo_training_data() -> tuple[list[Path], list[Path]]:
    """Labelled sequences shipped in the package: virus = SARS-CoV-2, phage lambda and 10 RefSeq viral
    frames; host = the E. coli segment and the two plasmids (all from ``data/examples``)."""
    return [DATA / "demo" / "virus.fa"], [DATA / "demo" / "host.fa"]


# ------------------------------------------------------------------------------------------ resolving


def _resolve_encoder(spec) -> Path | None:
    """A folder for an explicit path or a Hugging Face id found in the local cache; None when absent."""
    from .checkpoints import resolve_checkpoint

    try:
        return Path(resolve_checkpoint(spec))
    except CheckpointError:
        return None


def _classifier_candidates(chunk_size: int) -> list[Path]:
    name = CLASSIFIER_BLOBS[chunk_size][0]
    dirs = [Path(os.environ["VIRNUCPRO_CLASSIFIER_DIR"])] if os.environ.get("VIRNUCPRO_CLASSIFIER_DIR") else []
    dirs.append(models_home() / "classifiers")
    return [d / n for d in dirs for n in (name, name.replace(".pth", ".safetensors"))]


@dataclass
class Profile:
    """The three model sources of a run and how to load them."""

    name: str
    chunk_size: int
    dnabert: str | None = None  # folder or Hugging Face id (real)
    esm: str | None = None
    classifier: str | None = None
    seed: int = DEMO_SEED
    warnings: list[str] = field(default_factory=list)

    def load(self, device="cpu", dtype=None, attention="auto", compile=False):
        """(dnabert, esm, classifier) on ``device``; encoders in ``dtype``, classifier in fp32."""
        import torch

        from .classifier_files import load_classifier
        from .dnabert_s import DNABERTSEncoder
        from .esm2 import ESM2Encoder

        dtype = dtype or torch.float32
        if self.name == "random":
            from .classifier import MLPClassifier
            from .dnabert_s import DNABERTSConfig
            from .esm2 import ESM2Config

            dnabert = DNABERTSEncoder.from_config(DNABERTSConfig.dnabert_s(), seed=self.seed, device=device,
                                                  dtype=dtype, attention=attention, compile=compile,
                                                  tokenizer_path=DATA / "dnabert-s" / "tokenizer.json")
            esm = ESM2Encoder.from_config(ESM2Config.esm2_t36_3B_UR50D(), seed=self.seed + 1, device=device,
                                          dtype=dtype, attention=attention, compile=compile)
            torch.manual_seed(self.seed + 2)
            clf = MLPClassifier(REAL_FEATURES).to(device).eval()
            return dnabert, esm, clf
        if self.name == "demo" and self.dnabert is None:
            dcfg, ecfg = demo_configs()
            dnabert = DNABERTSEncoder.from_config(dcfg, seed=self.seed, device=device, dtype=dtype,
                                                  attention=attention, compile=compile,
                                                  tokenizer_path=DATA / "dnabert-s" / "tokenizer.json")
            esm = ESM2Encoder.from_config(ecfg, seed=self.seed + 1, device=device, dtype=dtype, attention=attention,
                                          compile=compile)
        else:
            dnabert = DNABERTSEncoder.from_pretrained(self.dnabert, device=device, dtype=dtype, attention=attention,
                                                      compile=compile)
            esm = ESM2Encoder.from_pretrained(self.esm, device=device, dtype=dtype, attention=attention,
                                              compile=compile)
        clf = None
        if self.classifier is not None:
            clf = load_classifier(self.classifier, device=device)
            want = dnabert.config.hidden_size + esm.config.hidden_size
            have = clf.hidden_layer.in_features
            if have != want:
                raise CheckpointError(f"{self.classifier}: classifier takes {have} features but the encoders give "
                                      f"{want} ({dnabert.config.hidden_size} + {esm.config.hidden_size})")
        return dnabert, esm, clf

    def feature_size(self) -> int:
        """DNABERT-S + ESM-2 hidden sizes, from the configs (no weights are read)."""
        if self.name == "random":
            return REAL_FEATURES
        if self.name == "demo" and self.dnabert is None:
            dcfg, ecfg = demo_configs()
            return dcfg.hidden_size + ecfg.hidden_size
        from .checkpoints import read_config, resolve_checkpoint
        from .dnabert_s import DNABERTSConfig
        from .esm2 import ESM2Config

        return (DNABERTSConfig.from_hf(read_config(resolve_checkpoint(self.dnabert))).hidden_size
                + ESM2Config.from_hf(read_config(resolve_checkpoint(self.esm))).hidden_size)

    def check(self) -> None:
        """Load the classifier (safely) and check that it takes the encoders' features and was made for this
        chunk size; encoder weights are not read."""
        if self.classifier is None:
            return
        from .classifier_files import load_classifier

        have = load_classifier(self.classifier).hidden_layer.in_features
        want = self.feature_size()
        if have != want:
            raise CheckpointError(f"{self.classifier}: classifier takes {have} features but the {self.name} "
                                  f"profile's encoders give {want}")
        trained = classifier_chunk_size(self.classifier)
        if trained is not None and trained != self.chunk_size:
            raise CheckpointError(f"{self.classifier}: classifier made for --chunk-size {trained}, not "
                                  f"{self.chunk_size}")

    def describe(self) -> dict:
        """What ``run.json`` records: names, sources and checksums."""
        out = {"name": self.name, "chunk_size": self.chunk_size, "warnings": list(self.warnings)}
        if self.name == "random":
            out["source"] = f"random weights of the real shapes (ESM-2 3B, DNABERT-S, MLP), seed {self.seed}"
            return out
        if self.name == "demo" and self.dnabert is None:
            dcfg, ecfg = demo_configs()
            out["dnabert"] = {"source": f"random weights, seed {self.seed}", "config": vars(dcfg)}
            out["esm"] = {"source": f"random weights, seed {self.seed + 1}", "config": vars(ecfg)}
        else:
            out["dnabert"] = _encoder_record(self.dnabert)
            out["esm"] = _encoder_record(self.esm)
        if self.classifier:
            out["classifier"] = {"source": str(self.classifier), "sha256": sha256(self.classifier),
                                 "git_blob_sha1": git_blob_sha1(self.classifier)}
        return out


def _encoder_record(folder) -> dict:
    """Where an encoder came from: folder, Hugging Face revision (snapshot) if cached, weight files and sizes.
    (Hashing 12 GB of ESM-2 weights on every run would cost more than it tells; ``models verify`` checks.)"""
    p = Path(folder)
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin")) if p.is_dir() else []
    return {"source": str(p), "revision": p.name if p.parent.name == "snapshots" else None,
            "weights": {f.name: f.stat().st_size for f in files}}


def missing_help(*, classifier: bool = True, flags: bool = True) -> str:
    """How to get missing real models, in the words of the command that found them missing: ``classifier`` (the
    command takes --classifier), ``flags`` (it takes --dnabert/--esm; otherwise the environment variables)."""
    if flags:
        yours = "--dnabert DIR --esm DIR" + (" --classifier FILE" if classifier else "")
    else:
        yours = (f"VIRNUCPRO_DNABERT=DIR VIRNUCPRO_ESM=DIR VIRNUCPRO_CLASSIFIER_DIR=DIR (default for the classifiers: "
                 f"{models_home() / 'classifiers'})")
    return (f"get them once with `virnucpro models download`, or give your copies with {yours}; `--profile demo` "
            "runs the small offline demo instead (its calls are not biologically meaningful)")



def resolve_profile(name: str, chunk_size: int, *, esm=None, dnabert=None, classifier=None,
                    need_classifier: bool = True) -> Profile:
    """Pick the models for a run: ``real`` (and ``auto``, its default alias) needs every real model file and says
    which are missing; ``demo`` and ``random`` are only ever used when asked for by name."""
    if chunk_size not in CLASSIFIER_BLOBS:
        raise VirNucProError(f"--chunk-size must be 300 or 500 (the published models' sizes), not {chunk_size}")
    if name not in ("auto", "real", "demo", "random"):
        raise VirNucProError(f"--profile must be auto, real, demo or random, not {name!r}")
    if name in ("demo", "random") and (esm or dnabert):
        raise VirNucProError(f"--esm/--dnabert choose real encoder weights; they cannot be used with --profile {name} "
                             "(use --profile real)")
    if name == "random" and classifier:
        raise VirNucProError("--classifier cannot be used with --profile random (its classifier is random too)")
    if classifier and not Path(classifier).is_file():
        raise VirNucProError(f"--classifier {classifier}: no such file")
    if name == "random":
        return Profile("random", chunk_size, warnings=[RANDOM_WARNING])
    if name in ("real", "auto"):
        d = dnabert or os.environ.get("VIRNUCPRO_DNABERT") or HUB_DNABERT
        e = esm or os.environ.get("VIRNUCPRO_ESM") or HUB_ESM
        d_path, e_path = _resolve_encoder(d), _resolve_encoder(e)
        c_path = Path(classifier) if classifier else next((p for p in _classifier_candidates(chunk_size)
                                                           if p.is_file()), None)
        missing = [f"DNABERT-S ({d})" if d_path is None else None, f"ESM-2 3B ({e})" if e_path is None else None]
        if need_classifier and c_path is None:
            missing.append(f"classifier {CLASSIFIER_BLOBS[chunk_size][0]} (in "
                           f"{_classifier_candidates(chunk_size)[0].parent})")
        missing = [m for m in missing if m]
        if missing:
            raise VirNucProError(f"the real models are not all here: {'; '.join(missing)} missing; "
                                 f"{missing_help(classifier=need_classifier)}")
        return Profile("real", chunk_size, str(d_path), str(e_path), str(c_path) if need_classifier else None)
    profile = Profile("demo", chunk_size, warnings=[DEMO_WARNING])
    if need_classifier:
        c = Path(classifier) if classifier else demo_classifier_path(chunk_size)
        if not c.is_file():
            raise VirNucProError(f"demo classifier {c} is missing; build it with `virnucpro train --profile demo`")
        profile.classifier = str(c)
    return profile


def classifier_chunk_size(path) -> int | None:
    """The chunk size a classifier file was trained for: a published checkpoint's (by its git blob id), or the
    ``chunk_size`` our safetensors files record; None when the file does not say."""
    blob = git_blob_sha1(path)
    for cs, (_, published) in CLASSIFIER_BLOBS.items():
        if blob == published:
            return cs
    from .classifier_files import read_classifier_metadata

    try:
        value = read_classifier_metadata(path).get("chunk_size")
    except CheckpointError:
        return None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------------ commands


def download(target: Path | None = None, only=None) -> dict:
    """Fetch the real models (needs network). Returns what was fetched, with revisions and checksums."""
    from huggingface_hub import snapshot_download

    only = set(only or ("dnabert", "esm", "classifier"))
    record = {}
    patterns = ["config.json", "*.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "*.py"]
    for key, repo in (("dnabert", HUB_DNABERT), ("esm", HUB_ESM)):
        if key not in only:
            continue
        try:
            local = snapshot_download(repo_id=repo, allow_patterns=patterns,
                                      local_dir=str(target / repo.split("/")[1]) if target else None)
        except Exception as exc:  # network, auth, disk: one line for the user
            raise VirNucProError(f"could not download {repo}: {type(exc).__name__}: {exc}") from None
        record[key] = {"repo": repo, "path": local, "revision": Path(local).name}
    if "classifier" in only:
        cdir = (target or models_home()) / "classifiers"
        cdir.mkdir(parents=True, exist_ok=True)
        for cs, (fname, blob) in CLASSIFIER_BLOBS.items():
            dst = cdir / fname
            if not (dst.is_file() and git_blob_sha1(dst) == blob):
                tmp = dst.with_suffix(".part")
                try:
                    urllib.request.urlretrieve(CLASSIFIER_URL.format(name=fname), tmp)
                except Exception as exc:
                    raise VirNucProError(f"could not download {fname} from {CLASSIFIER_REPO}: {exc}") from None
                got = git_blob_sha1(tmp)
                if got != blob:
                    tmp.unlink(missing_ok=True)
                    raise VirNucProError(f"{fname}: git blob id {got} is not the published {blob}")
                os.replace(tmp, dst)
            record[f"classifier_{cs}"] = {"path": str(dst), "git_blob_sha1": blob}
    manifest = (target or models_home()) / "models.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(record, indent=2))
    return record


def verify(profile_name="real", chunk_sizes=(300, 500)) -> list[tuple[str, str, str]]:
    """Check shapes and checksums; returns rows (model, status, detail). Loads configs and headers only."""
    from .checkpoints import read_config
    from .classifier_files import read_classifier_metadata
    from .dnabert_s import DNABERTSConfig
    from .esm2 import ESM2Config

    rows = []
    if profile_name == "demo":
        for cs in chunk_sizes:
            p = demo_classifier_path(cs)
            if not p.is_file():
                rows.append((f"demo classifier {cs}", "MISSING", str(p)))
                continue
            meta = read_classifier_metadata(p)
            dcfg, ecfg = demo_configs()
            ok = meta.get("input_dim") == dcfg.hidden_size + ecfg.hidden_size
            rows.append((f"demo classifier {cs}", "ok" if ok else "BAD SHAPE", f"input_dim {meta.get('input_dim')}"))
        return rows
    for what, spec, cfg_cls, hidden in (("DNABERT-S", os.environ.get("VIRNUCPRO_DNABERT") or HUB_DNABERT,
                                         DNABERTSConfig, 768),
                                        ("ESM-2 3B", os.environ.get("VIRNUCPRO_ESM") or HUB_ESM, ESM2Config, 2560)):
        folder = _resolve_encoder(spec)
        if folder is None:
            rows.append((what, "MISSING", spec))
            continue
        cfg = cfg_cls.from_hf(read_config(folder))
        rows.append((what, "ok" if cfg.hidden_size == hidden else "BAD SHAPE", f"{folder} hidden={cfg.hidden_size}"))
    for cs in chunk_sizes:
        fname, blob = CLASSIFIER_BLOBS[cs]
        found = next((p for p in _classifier_candidates(cs) if p.is_file()), None)
        if found is None:
            rows.append((fname, "MISSING", str(_classifier_candidates(cs)[-2])))
            continue
        if found.suffix == ".pth":
            got = git_blob_sha1(found)
            rows.append((fname, "ok" if got == blob else "CHECKSUM MISMATCH", f"{found} git blob {got}"))
        else:
            meta = read_classifier_metadata(found)
            ok = meta.get("input_dim") == REAL_FEATURES
            rows.append((fname, "ok" if ok else "BAD SHAPE", f"{found} (converted) input_dim {meta.get('input_dim')}"))
    return rows


def list_models() -> list[tuple[str, str, str]]:
    rows = []
    for what, spec in (("DNABERT-S", os.environ.get("VIRNUCPRO_DNABERT") or HUB_DNABERT),
                       ("ESM-2 3B", os.environ.get("VIRNUCPRO_ESM") or HUB_ESM)):
        folder = _resolve_encoder(spec)
        rows.append((what, "present" if folder else "absent", str(folder or spec)))
    for cs in CLASSIFIER_BLOBS:
        found = next((p for p in _classifier_candidates(cs) if p.is_file()), None)
        rows.append((f"classifier {cs}", "present" if found else "absent", str(found or models_home() / "classifiers")))
        p = demo_classifier_path(cs)
        rows.append((f"demo classifier {cs}", "present" if p.is_file() else "absent", str(p)))
    return rows


def _print_rows(rows):
    width = max(len(r[0]) for r in rows)
    for name, status, detail in rows:
        print(f"{name:<{width}}  {status:<18} {detail}")


def models_command(args) -> int:
    action = args.models_command
    if action == "convert":
        from .classifier_files import convert_checkpoint

        out = convert_checkpoint(args.src, args.dst)
        print(f"wrote {out}")
        return 0
    if action == "list":
        _print_rows(list_models())
        return 0
    if action == "verify":
        sizes = (args.chunk_size,) if args.chunk_size else (300, 500)
        rows = verify(args.profile, sizes)
        _print_rows(rows)
        bad = [r for r in rows if r[1] != "ok"]
        if bad:
            how = ("build them with `virnucpro train --profile demo`" if args.profile == "demo"
                   else missing_help(flags=False))
            raise VirNucProError(f"{len(bad)} model file(s) missing or wrong: {', '.join(r[0] for r in bad)}; {how}")
        return 0
    if action == "download":
        record = download(Path(args.dir) if args.dir else None, args.only)
        json.dump(record, sys.stdout, indent=2)
        print()
        return 0
    raise VirNucProError(f"unknown models action {action}")
