"""report.html: its data equal the run folder's files, it is self-contained, old run folders work,
and it works in a real browser (headless Chromium driven through the DevTools protocol)."""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_browser import Browser, find_chromium

import kdcore
from kdcore.cli import main
from kdcore.errors import DataError, SpecError
from kdcore.report import data as report_data
from kdcore.report import page as report_page
from kdcore.report.panels import split_strip, strip_layout, write_strip_index


def _spec(images: dict, out: Path, seed: int) -> dict:
    return {
        "task": {"kind": "sr", "scale": 2},
        "data": {"train": str(images["train"]), "val": str(images["val"]), "patch_size": 32, "batch_size": 2},
        "teacher": {"name": "bicubic"},
        "student": {"name": "tiny-sr", "params": {"channels": 4}},
        "losses": [{"name": "l1"}, {"name": "mse", "weight": 0.5}],
        "train": {"steps": 4, "lr": 0.001, "log_every": 1, "eval_every": 2, "seed": seed},
        "output": str(out),
    }


@pytest.fixture(scope="module")
def runs(tiny_images, tmp_path_factory) -> list[Path]:
    """Two tiny distillation runs (4 steps, seeds 0 and 1); each writes its own report.html."""
    root = tmp_path_factory.mktemp("report-runs")
    folders = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        kdcore.run(_spec(tiny_images, out, seed))
        folders.append(out)
    return folders


@pytest.fixture
def run_dir(runs, tmp_path) -> Path:
    """A private copy of the first run (tests may change it)."""
    return Path(shutil.copytree(runs[0], tmp_path / "run"))


class _Rows(HTMLParser):
    """The headline table's numeric cells: model -> [data-value of PSNR, SSIM, params, latency]."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._model = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-model" in a:
            self._model = a["data-model"]
            self.rows[self._model] = []
        elif tag == "td" and self._model and "kd-num" in (a.get("class") or "") and "kd-gain" not in a["class"]:
            self.rows[self._model].append(a.get("data-value", ""))

    def handle_endtag(self, tag):
        if tag == "tr":
            self._model = None


def test_every_run_writes_its_report(runs):
    for run in runs:
        html = (run / "report.html").read_text()
        assert html.startswith("<!DOCTYPE html>") and html.count('class="kd-compare"') == 2


def test_table_equals_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = {r["key"]: r for r in report_data.headline_rows(summary)}
    assert list(rows) == ["baseline", "teacher", "student"]
    for key in rows:
        assert rows[key]["psnr"] == summary[key]["psnr"] and rows[key]["ssim"] == summary[key]["ssim"]
    assert rows["student"]["params"] == summary["student"]["params"]
    assert rows["student"]["latency_ms"] == summary["student"]["latency_ms"]
    parser = _Rows()
    parser.feed((run_dir / "report.html").read_text())
    for key in ("teacher", "student"):
        psnr, ssim, params, latency = parser.rows[key]
        assert float(psnr) == summary[key]["psnr"] and float(ssim) == summary[key]["ssim"]
        assert int(params) == summary[key]["params"] and float(latency) == summary[key]["latency_ms"]
    assert float(parser.rows["baseline"][0]) == summary["baseline"]["psnr"]


def test_alone_and_kd_gain_rows(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["alone"] = {**summary["student"], "psnr": summary["student"]["psnr"] - 0.25}
    summary["kd_gain_db"] = 0.25
    (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = report_data.headline_rows(summary)
    assert [r["key"] for r in rows] == ["baseline", "teacher", "alone", "student"]
    assert rows[2]["psnr"] == summary["alone"]["psnr"] and report_data.kd_gain(summary) == 0.25
    html = (kdcore.report(run_dir)).read_text()
    assert 'data-model="alone"' in html and 'class="kd-num kd-gain" data-value="0.25"' in html


def test_curves_equal_metrics_jsonl(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    got = report_data.curves(report_data.read_records(run_dir / "metrics.jsonl"))
    train = [r for r in lines if not r.get("eval")]
    assert set(got["loss"]) == {"loss", "loss/l1", "loss/mse"}
    for key, points in got["loss"].items():
        assert points == [(r["step"], r[key]) for r in train]
    evals = [r for r in lines if r.get("eval")]
    assert got["val"]["val/psnr"] == [(r["step"], r["val/psnr"]) for r in evals] and len(evals) == 2
    assert got["val"]["val/ssim"] == [(r["step"], r["val/ssim"]) for r in evals]


def test_per_image_psnr_from_the_strips_is_what_the_run_averaged(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    run = report_data.load_run(run_dir)
    per_image: dict[str, list[float]] = {}
    for name in summary["val_images"]:
        panels, _, _ = report_page.gather_panels([run], name)
        assert {p.kind for p in panels} == {"input", "baseline", "student", "teacher", "target"}
        for p in panels:
            if p.psnr is not None:
                per_image.setdefault(p.kind, []).append(p.psnr)
    for kind in ("student", "teacher", "baseline"):
        assert np.mean(per_image[kind]) == pytest.approx(summary[kind]["psnr"], abs=1e-9)


def test_enhance_without_targets_is_measured_against_the_teacher(tiny_images, tmp_path):
    spec = _spec(tiny_images, tmp_path / "enhance", 0)
    spec.update(task={"kind": "enhance", "scale": 1}, teacher={"name": "unsharp-mask"}, losses=[{"name": "l1"}])
    spec["train"].update(steps=2, eval_every=0)
    summary = kdcore.run(spec)
    assert summary["measured_against"] == "teacher"
    run = report_data.load_run(tmp_path / "enhance")
    student = []
    for name in summary["val_images"]:
        panels, labels, _ = report_page.gather_panels([run], name)
        assert labels == ["input", "baseline", "teacher", "student"]
        assert panels[2].psnr is None  # the reference
        student.append(panels[3].psnr)
    assert np.mean(student) == pytest.approx(summary["student"]["psnr"], abs=1e-9)
    assert "agreement with the teacher" in (tmp_path / "enhance" / "report.html").read_text()


def test_self_contained(runs, tmp_path):
    out = kdcore.report(runs, tmp_path / "compare.html", max_side=48)
    html = out.read_text()
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']?\s*([^"'\s>]*)""", html, re.IGNORECASE)
    assert attributes and all(not a.lower().startswith(("http:", "https:", "//")) for a in attributes)
    assert not re.search(r"""url\(\s*["']?\s*(https?:|//)""", html, re.IGNORECASE)
    assert not re.search(r"@import|<link\b|<iframe\b", html, re.IGNORECASE)
    assert all(a.startswith(("data:image/", "#")) for a in attributes)


def test_old_format_run_folder(run_dir, capsys):
    # what a run wrote before reports existed: no report.html, no images/strips.json, strips without
    # the label band, older summary keys
    from kdcore.report.panels import label_height

    top = label_height(run_dir)
    assert top > 0  # today's strips carry labels, and strips.json says how high
    for strip in (run_dir / "images").glob("*.png"):
        with Image.open(strip) as image:
            unlabelled = image.convert("RGB").crop((0, top, image.width, image.height))
        unlabelled.save(strip)
    for name in ("report.html", "images/strips.json"):
        (run_dir / name).unlink(missing_ok=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("val_images", "latency_input", "device", "ema"):
        summary.pop(key)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    html = (run_dir / "report.html").read_text()
    assert html.count('class="kd-compare"') == 2 and "validation PSNR" in html
    # an unfinished run (no summary.json, no images) still gets its curves and spec
    (run_dir / "summary.json").unlink()
    shutil.rmtree(run_dir / "images")
    html = kdcore.report(run_dir).read_text()
    assert "no summary.json" in html and "training loss" in html and 'class="kd-compare"' not in html


def test_strips_split_back_into_the_panels(run_dir):
    strip = run_dir / "images" / "coffee.png"
    panels = split_strip(strip, strip_layout(True, True))
    whole = np.asarray(Image.open(strip).convert("RGB"))
    assert np.array_equal(np.concatenate(list(panels.values()), axis=1), whole)
    with pytest.raises(DataError, match="not 3 panels"):
        split_strip(strip, ["input", "student", "target"])  # 320 pixels are not 3 equal panels


def test_the_recorded_layout_wins_over_inference(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["teacher"] = None  # inferred alone, the strips would have 4 panels and 320 px fail to split
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert (run_dir / "images" / "strips.json").exists()  # the engine records the layout
    (run_dir / "images" / "strips.json").unlink()  # as in a run folder made before it did
    with pytest.raises(DataError, match=re.escape("coffee.png: does not split into the panels input | baseline")):
        report_page.gather_panels([report_data.load_run(run_dir)], "coffee")
    write_strip_index(run_dir / "images", strip_layout(True, True), ["chelsea", "coffee"])
    panels, _, _ = report_page.gather_panels([report_data.load_run(run_dir)], "coffee")
    assert [p.kind for p in panels] == ["input", "baseline", "target", "teacher", "student"]


def test_bad_input_exits_2(tmp_path, capsys, runs):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "no such run folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "plain").mkdir()
    assert main(["report", str(tmp_path / "plain")]) == 2
    assert "not a kdcore run folder" in capsys.readouterr().err
    assert main(["report", str(runs[0]), str(runs[1])]) == 2  # several runs need -o
    assert "-o FILE" in capsys.readouterr().err
    assert not (tmp_path / "plain" / "report.html").exists()
    with pytest.raises(SpecError):
        kdcore.report([runs[0], runs[1]])


def test_compare_runs_side_by_side(runs, tmp_path):
    assert main(["report", str(runs[0]), str(runs[1]), "-o", str(tmp_path / "cmp.html")]) == 0
    html = (tmp_path / "cmp.html").read_text()
    assert html.count('class="kd-compare"') == 2  # one view per validation image, both runs in it
    assert ">student · seed0<" in html and ">student · seed1<" in html
    assert html.count('data-model="student"') == 2
    # the inputs, baselines and targets of both runs are the same pixels: each shown once
    view = report_page.build_view([report_data.load_run(r) for r in runs], "coffee")
    assert [p.label for p in view.panels].count("target") == 1
    assert view.panels[view.a].label == "student · seed0" and view.panels[view.b].label == "student · seed1"


def _decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_a_seeds_folder_is_its_seeds_side_by_side(runs, tmp_path):
    for i, run in enumerate(runs):
        shutil.copytree(run, tmp_path / "multi" / f"seed-{i}")
    out = kdcore.report(tmp_path / "multi")
    assert out == tmp_path / "multi" / "report.html"
    html = out.read_text()
    assert html.count('data-model="student"') == 2 and ">student · seed-1<" in html


def test_large_images_are_downscaled_with_exact_crops(run_dir):
    run = report_data.load_run(run_dir)
    view = report_page.build_view([run], "chelsea", max_side=48)
    assert view.downscaled and len(view.crops) >= 1 and view.display[0] >= 384  # shown enlarged again
    panels, _, _ = report_page.gather_panels([run], "chelsea")
    for panel, shown in zip(panels, view.panels):
        assert shown.src.startswith("data:image/jpeg;base64,")
        assert _decode(shown.src).shape == (48, 48, 3)
        for (x, y, w, h), uri in zip(view.crops, shown.crops):
            crop = _decode(uri)
            assert np.array_equal(crop, panel.pixels[y:y + h, x:x + w])


def test_report_failure_does_not_lose_the_run(tiny_spec, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_page, "render", broken)
    tiny_spec["train"]["steps"] = 2
    with pytest.warns(UserWarning, match="run is complete.*disk full"):
        summary = kdcore.run(tiny_spec)
    out = Path(tiny_spec["output"])
    assert summary["steps"] == 2 and (out / "summary.json").exists() and (out / "model.safetensors").exists()
    assert not (out / "report.html").exists() and not list(out.glob(".report.html.*"))


def test_report_is_the_package_and_the_function(run_dir):
    import kdcore.report.data

    assert "report" in kdcore.__all__
    assert kdcore.report(str(run_dir), run_dir / "again.html") == run_dir / "again.html"


# --------------------------------------------------------------------------- a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = find_chromium(install=True)
    if binary is None:
        pytest.skip("no Chromium: not installed, and `apt-get install chromium` is not possible here "
                    "(needs root and a package source); set KDCORE_CHROMIUM to a Chromium binary")
    with Browser(binary, tmp_path_factory.mktemp("chromium")) as b:
        yield b


def _drag_and_look(browser: Browser, view: str) -> None:
    """Dragging the divider of one view changes it, on the page and on the screen."""
    rect = browser.eval(f"(() => {{ const s = document.querySelector('{view} .kd-stage'); s.scrollIntoView();"
                        "const r = s.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    x, y, w, h = rect
    assert w > 100 and h > 100
    before_split = browser.eval(f"document.querySelector('{view}').getAttribute('data-split')")
    before_clip = browser.eval(f"document.querySelector('{view} .kd-img-a').style.clipPath")
    before = browser.screenshot()
    browser.drag((x + 0.8 * w, y + h / 2), (x + 0.15 * w, y + h / 2))
    after_split = browser.eval(f"document.querySelector('{view}').getAttribute('data-split')")
    width = browser.eval(f"JSON.parse(document.querySelector('{view}').getAttribute('data-view')).w")
    assert float(before_split) == pytest.approx(width / 2)
    assert float(after_split) == pytest.approx(0.15 * width, abs=0.02 * width)
    assert browser.eval(f"document.querySelector('{view} .kd-img-a').style.clipPath") != before_clip
    after = browser.screenshot()
    box = tuple(round(v) for v in (x, y, x + w, y + h))
    shown_before, shown_after = (np.asarray(s.crop(box), dtype=np.int16) for s in (before, after))
    assert np.abs(shown_before - shown_after).max() > 20  # other pixels on screen, not only a style


def _click_moves_the_zoom(browser: Browser) -> None:
    """A click without dragging moves the zoom (at 8×, a part of the image), not the divider."""
    browser.eval("(() => { const s = document.querySelector('#kd-view-0 .kd-zoom-factor'); s.value = '8';"
                 "s.dispatchEvent(new Event('change')); })()")
    x, y, w, h = browser.eval("(() => { const s = document.querySelector('#kd-view-0 .kd-stage'); s.scrollIntoView();"
                              "const r = s.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    split = browser.eval("document.querySelector('#kd-view-0').getAttribute('data-split')")
    caption = browser.eval("document.querySelector('#kd-view-0 .kd-zoom-caption').textContent")
    browser.drag((x + 0.9 * w, y + 0.9 * h), (x + 0.9 * w, y + 0.9 * h), steps=0)
    assert browser.eval("document.querySelector('#kd-view-0').getAttribute('data-split')") == split
    assert browser.eval("document.querySelector('#kd-view-0 .kd-zoom-caption').textContent") != caption


def test_in_a_real_browser(browser, runs, tmp_path):
    single = runs[0] / "report.html"
    compare = kdcore.report(runs, tmp_path / "compare.html", max_side=48)  # downscaled: the crop mode
    for page, views in ((single, 2), (compare, 2)):
        browser.open(page)
        assert browser.eval("document.querySelectorAll('table.kd-headline tbody tr[data-model]').length") == (
            3 if page == single else 6)
        assert browser.eval("document.body.getAttribute('data-kd-views')") == str(views)
        loaded = browser.eval("Array.from(document.querySelectorAll('.kd-compare img.kd-img-a, .kd-compare "
                              "img.kd-img-b, .kd-compare img.kd-zimg-a')).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True] * (3 * views)
        assert browser.eval("document.querySelectorAll('#kd-curves svg').length") == 3
        for i in range(views):
            _drag_and_look(browser, f"#kd-view-{i}")
        if page == single:
            _click_moves_the_zoom(browser)
        browser.eval("window.scrollTo(0, 0)")
        shot = np.asarray(browser.screenshot(), dtype=np.int32)  # the table and the first view
        colours = np.unique((shot[..., 0] << 16) | (shot[..., 1] << 8) | shot[..., 2])
        assert shot.std() > 20 and len(colours) > 500, "the page looks blank"
        assert browser.errors == []
        assert browser.requests and all(u.startswith(("file:", "data:")) for u in browser.requests)
