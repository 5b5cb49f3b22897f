"""Downloads from a local HTTP server on 127.0.0.1: layout, resume after an interruption, checksums.

The real dataset classes are used; only their URLs (through ``CLIP_ADAPTER_DATA_MIRROR``) and
checksums (the fake archives differ from the real ones) are changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import clip_adapter.datasets  # noqa: F401
from clip_adapter.config import get_cfg_default
from clip_adapter.app.download import main as download_main
from clip_adapter.data import download as dl
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS
from fake_datasets import WNIDS, class_folders, imagenet_classnames


class Server:
    """Serves ``files`` (name -> bytes) with HTTP Range support; ``truncate`` names files whose
    next response stops halfway (the connection drops), ``requests`` records (name, Range header)."""

    def __init__(self):
        self.files, self.truncate, self.requests = {}, set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if name in server.truncate:
                    server.truncate.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    with Server() as s:
        monkeypatch.setenv(dl.MIRROR_ENV, s.url)
        yield s


def tar_gz(tree) -> bytes:
    """A .tar.gz holding the folder ``tree`` (its contents at the archive's top level)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(os.listdir(tree)):
            tar.add(os.path.join(tree, name), arcname=name)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_checksums(cls, monkeypatch, **sha_by_filename):
    """The class's real resources, pinned to the fake files' sha256 instead of the real md5."""
    resources = tuple(dataclasses.replace(r, md5="", sha256=sha_by_filename.get(r.filename, "")) for r in cls.resources)
    monkeypatch.setattr(cls, "resources", resources)


def fake_dtd_archive(tmp_path, per_class=10) -> bytes:
    src = tmp_path / "src"
    class_folders(str(src / "dtd" / "images"), ["banded", "blotchy"], per_class=per_class)
    (src / "dtd" / "labels").mkdir()
    (src / "dtd" / "labels" / "labels_joint_anno.txt").write_text("banded/banded_0001.jpg banded\n")
    (src / "dtd" / "imdb").mkdir()
    (src / "dtd" / "imdb" / "imdb.mat").write_bytes(b"x")
    return tar_gz(str(src))


def dtd_split() -> bytes:
    train = [[f"banded/banded_{i:04d}.jpg", 0, "banded"] for i in range(3)] + [[f"blotchy/blotchy_{i:04d}.jpg", 1, "blotchy"] for i in (2, 3)]
    val = [[f"blotchy/blotchy_{i:04d}.jpg", 1, "blotchy"] for i in range(2)]
    test = [[f"blotchy/blotchy_{i:04d}.jpg", 1, "blotchy"] for i in range(5, 8)]
    return json.dumps({"train": train, "val": val, "test": test}).encode()


def dataset_cfg(root, name, **dataset):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(root), name
    for k, v in dataset.items():
        cfg.DATASET[k] = v
    return cfg


def test_download_through_the_config_flag_builds_coops_layout(tmp_path, server, monkeypatch):
    cls = DATASETS.get("DescribableTextures")
    archive, split = fake_dtd_archive(tmp_path), dtd_split()
    server.files = {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": split}
    with_checksums(cls, monkeypatch, **{"dtd-r1.0.1.tar.gz": sha256(archive), "split_zhou_DescribableTextures.json": sha256(split)})
    root = tmp_path / "data"
    random.seed(1)
    ds = cls(dataset_cfg(root, "DescribableTextures", DOWNLOAD=True))
    base = root / "dtd"
    assert sorted(n for n in os.listdir(base) if not n.startswith(".")) == ["images", "imdb", "labels", "split_zhou_DescribableTextures.json"]
    assert not any(n.startswith(".extract-") for n in os.listdir(base))
    assert not (base / ".downloads").exists()  # archives are removed once extracted
    assert len(ds.train_x) == 5 and ds.classnames == ["banded", "blotchy"]
    # A second run with the flag touches nothing and asks the server for nothing.
    server.requests.clear()
    cls(dataset_cfg(root, "DescribableTextures", DOWNLOAD=True))
    assert server.requests == []


def test_download_fetches_coops_split_when_only_a_built_one_exists(tmp_path, server, monkeypatch):
    """A split built here (CoOp's file was missing) does not stand in for CoOp's: the download still
    fetches it, and from then on CoOp's is the one read."""
    cls = DATASETS.get("DescribableTextures")
    archive, split = fake_dtd_archive(tmp_path), dtd_split()
    server.files = {"dtd-r1.0.1.tar.gz": archive}  # no split served: the first run builds one
    with_checksums(cls, monkeypatch, **{"dtd-r1.0.1.tar.gz": sha256(archive), "split_zhou_DescribableTextures.json": sha256(split)})
    root = tmp_path / "data"
    with pytest.raises(DatasetError):
        dl.download_dataset(cls, str(root))  # the split's 404: the images are in place, the split is not
    random.seed(1)
    built = cls(dataset_cfg(root, "DescribableTextures"))
    assert built.split_provenance["source"] == "built here" and (root / "dtd" / "split_built_DescribableTextures.json").is_file()
    server.files["split_zhou_DescribableTextures.json"] = split
    server.requests.clear()
    report = dl.download_dataset(cls, str(root))
    assert [r[0] for r in server.requests] == ["split_zhou_DescribableTextures.json"] and report.fetched == ["split_zhou_DescribableTextures.json"]
    ds = cls(dataset_cfg(root, "DescribableTextures"))
    assert ds.split_provenance["source"] == "coop" and ds.split_provenance["sha256"] == sha256(split)
    assert len(ds.train_x) == 5


def test_interrupted_download_resumes_with_range_and_never_leaves_a_half_tree(tmp_path, server, monkeypatch):
    cls = DATASETS.get("DescribableTextures")
    archive, split = fake_dtd_archive(tmp_path, per_class=40), dtd_split()
    server.files = {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": split}
    server.truncate = {"dtd-r1.0.1.tar.gz"}
    with_checksums(cls, monkeypatch, **{"dtd-r1.0.1.tar.gz": sha256(archive)})
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="interrupted .* run the same command again to resume"):
        dl.download_dataset(cls, str(root))
    part = root / "dtd" / ".downloads" / "dtd-r1.0.1.tar.gz.part"
    assert part.is_file() and 0 < part.stat().st_size < len(archive)
    have = part.stat().st_size
    assert not (root / "dtd" / "images").exists()  # nothing that looks complete

    report = dl.download_dataset(cls, str(root))
    assert ("dtd-r1.0.1.tar.gz", f"bytes={have}-") in server.requests
    assert not part.exists() and report.manual_missing == []
    assert len(os.listdir(root / "dtd" / "images" / "banded")) == 40
    assert (root / "dtd" / "split_zhou_DescribableTextures.json").read_bytes() == split


def test_checksum_mismatch_deletes_the_file_and_says_so(tmp_path, server, monkeypatch):
    cls = DATASETS.get("DescribableTextures")
    archive = fake_dtd_archive(tmp_path)
    server.files = {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": dtd_split()}
    with_checksums(cls, monkeypatch, **{"dtd-r1.0.1.tar.gz": "0" * 64})
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        dl.download_dataset(cls, str(root))
    msg = str(err.value)
    assert "checksum mismatch for dtd-r1.0.1.tar.gz" in msg and sha256(archive) in msg and "deleted" in msg
    assert not os.path.exists(root / "dtd" / ".downloads" / "dtd-r1.0.1.tar.gz")
    assert not (root / "dtd" / "images").exists()


def test_md5_checksum_through_torchvision(tmp_path, server, monkeypatch):
    cls = DATASETS.get("OxfordFlowers")
    payload = b"fake labels"
    server.files = {"imagelabels.mat": payload}
    monkeypatch.setattr(cls, "resources", (dataclasses.replace(cls.resources[1], md5=hashlib.md5(payload).hexdigest()),))
    dl.download_dataset(cls, str(tmp_path))
    assert (tmp_path / "oxford_flowers" / "imagelabels.mat").read_bytes() == payload
    monkeypatch.setattr(cls, "resources", (dataclasses.replace(cls.resources[0], md5="f" * 32, dest="other.mat"),))
    with pytest.raises(DatasetError, match="md5 .* != expected f{32}"):
        dl.download_dataset(cls, str(tmp_path))


def test_crash_during_extraction_leaves_no_complete_looking_folder(tmp_path, server, monkeypatch):
    cls = DATASETS.get("DescribableTextures")
    archive = fake_dtd_archive(tmp_path)
    server.files = {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": dtd_split()}
    with_checksums(cls, monkeypatch)
    real_extract = dl.extract

    def crash(archive_path, to_dir):
        real_extract(archive_path, to_dir)
        raise KeyboardInterrupt  # the user hits Ctrl-C once everything is unpacked but not yet moved

    monkeypatch.setattr(dl, "extract", crash)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        dl.download_dataset(cls, str(root), keep_archives=True)
    assert not (root / "dtd" / "images").exists()
    assert not [n for n in os.listdir(root / "dtd") if n.startswith(".extract-")]
    assert (root / "dtd" / ".downloads" / "dtd-r1.0.1.tar.gz").is_file()  # kept: no second download
    monkeypatch.setattr(dl, "extract", real_extract)
    (root / "dtd" / ".extract-stale").mkdir()  # as after a kill -9
    server.requests.clear()
    dl.download_dataset(cls, str(root))
    assert (root / "dtd" / "images" / "banded").is_dir() and not (root / "dtd" / ".extract-stale").exists()
    assert [r for r in server.requests if r[0] == "dtd-r1.0.1.tar.gz"] == []


def test_nested_archive_and_wrapping_folder(tmp_path, server, monkeypatch):
    """Caltech101's zip holds ``caltech-101/101_ObjectCategories.tar.gz``."""
    cls = DATASETS.get("Caltech101")
    inner_src = tmp_path / "inner"
    class_folders(str(inner_src / "101_ObjectCategories"), ["accordion", "airplanes", "BACKGROUND_Google", "Faces"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("caltech-101/101_ObjectCategories.tar.gz", tar_gz(str(inner_src)))
        z.writestr("caltech-101/show_annotation.m", "% not needed")
    server.files = {"caltech-101.zip": buf.getvalue()}
    monkeypatch.setattr(cls, "resources", (dataclasses.replace(cls.resources[0], md5=""),))
    random.seed(1)
    ds = cls(dataset_cfg(tmp_path, "Caltech101", DOWNLOAD=True))
    assert ds.classnames == ["face", "accordion", "airplane"]
    # built, as no split was served: saved under the project's name, never CoOp's
    assert (tmp_path / "caltech-101" / "split_built_Caltech101.json").is_file()
    assert not (tmp_path / "caltech-101" / "split_zhou_Caltech101.json").exists()


def test_imagenet_variant_copies_classnames_from_imagenet(tmp_path, server, monkeypatch):
    cls = DATASETS.get("ImageNetA")
    imagenet_classnames(str(tmp_path / "imagenet" / "classnames.txt"))
    src = tmp_path / "src"
    class_folders(str(src / "imagenet-a"), list(WNIDS)[:2], per_class=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(src / "imagenet-a"), arcname="imagenet-a")
    server.files = {"imagenet-a.tar": buf.getvalue()}
    dl.download_dataset(cls, str(tmp_path))
    assert (tmp_path / "imagenet-adversarial" / "classnames.txt").read_text() == (tmp_path / "imagenet" / "classnames.txt").read_text()
    assert [r[0] for r in server.requests] == ["imagenet-a.tar"]
    assert len(cls(dataset_cfg(tmp_path, "ImageNetA")).test) == 4


def test_url_overrides_take_precedence(monkeypatch):
    res = DATASETS.get("UCF101").resources[1]
    assert dl.resolve_url(res).startswith(dl.GDRIVE)
    monkeypatch.setenv(dl.MIRROR_ENV, "http://127.0.0.1:9/mirror/")
    assert dl.resolve_url(res) == "http://127.0.0.1:9/mirror/split_zhou_UCF101.json"
    monkeypatch.setitem(dl.URL_OVERRIDES, "split_zhou_UCF101.json", "http://127.0.0.1:9/x.json")
    assert dl.resolve_url(res) == "http://127.0.0.1:9/x.json"


def test_unreachable_server_and_missing_file_errors(tmp_path, server, monkeypatch):
    cls = DATASETS.get("EuroSAT")
    with pytest.raises(DatasetError, match=r"EuroSAT.zip answered HTTP 404"):
        dl.download_dataset(cls, str(tmp_path))
    monkeypatch.setenv(dl.MIRROR_ENV, "http://127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(DatasetError, match="cannot reach http://127.0.0.1:1/EuroSAT.zip"):
        dl.download_dataset(cls, str(tmp_path))


def test_google_drive_failure_names_the_page_and_destination(tmp_path, monkeypatch):
    import gdown

    def refuse(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(gdown, "download", refuse)
    with pytest.raises(DatasetError) as err:
        dl.gdrive_download("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN", str(tmp_path / "split.json"))
    msg = str(err.value)
    assert "https://drive.google.com/file/d/1hyarUivQE36mY6jSomru6Fjd-JzwcCzN/view" in msg and str(tmp_path / "split.json") in msg


def test_cli_manual_dataset_prints_instructions(tmp_path, server, capsys):
    server.files = {"classnames.txt": b"n01440764 tench\n"}
    assert download_main(["imagenet", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "ImageNet must be downloaded by hand" in err
    assert str(tmp_path / "imagenet" / "images" / "train") in err and "image-net.org" in err
    assert (tmp_path / "imagenet" / "classnames.txt").read_text() == "n01440764 tench\n"


def test_cli_downloads_by_config_name_and_reports_unknown_names(tmp_path, server, monkeypatch, capsys):
    cls = DATASETS.get("DescribableTextures")
    archive, split = fake_dtd_archive(tmp_path), dtd_split()
    server.files = {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": split}
    with_checksums(cls, monkeypatch)
    assert download_main(["dtd", "--root", str(tmp_path / "data")]) == 0
    assert "DescribableTextures: ready in" in capsys.readouterr().out
    assert download_main(["caltech10", "--root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown dataset 'caltech10'") and "Caltech101" in err and "\n" not in err


def test_cli_list(capsys):
    assert download_main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet " in out and "partly by hand" in out and "caltech-101/" in out
