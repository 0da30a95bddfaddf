"""Tests of workbench/report: the self-contained HTML page of a run, an ensemble spec and a submission."""
from __future__ import annotations

import base64
import io
import shutil
from collections import namedtuple
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench.cli import main
from workbench.data.spec import DatasetSpec
from workbench.io import read_mask
from workbench.records.ensemble import FusionConfig, Member, parse_member
from workbench.ensemble.spec import blend_spec, equal_spec
from workbench.errors import WorkbenchError
from workbench.records import Submission
from workbench.metrics.det import ap50_per_category
from workbench.metrics.scoring import score_predictions
from workbench.metrics.seg import SegEvaluator
from workbench.predict import PredictConfig, predict_run
from workbench.records import GroundTruth, seg_logits_to_mask, to_submission
from workbench.report import (
    ReportConfig,
    build_report,
    compute_pr_curves,
    find_most_confused,
    resolve_target,
)
from workbench.report.analysis import det_image_errors, rank_cls_worst, rank_det_worst, rank_seg_worst
from workbench.report.figures import overlay_mask, pick_colors
from workbench.report.page import BOX_THRESHOLD
from workbench.score import score_submission
from workbench.submit import SubmitConfig, submit
from workbench.train.trainer import train

from tests.conftest import tiny_train_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = ("cls_top1", "det_map50", "seg_miou", "score")
SAMPLES = 2


class Page(HTMLParser):
    """What the tests read from a report: images, links, section ids and the rows of each table."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value) of every src / href
        self.tags: set[str] = set()
        self.sections: list[str] = []
        self.tables: dict[str, list[dict]] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for key in ("src", "href"):
            if key in a:
                self.urls.append((tag, key, a[key]))
        if tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a["id"])
        elif tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {"attrs": a, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"value": a.get("data-value"), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row["attrs"]:  # header rows carry no attributes
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def of_class(self, css_class: str, task: str | None = None) -> list[dict]:
        return [im for im in self.images if im.get("class") == css_class and (task is None or im.get("data-task") == task)]

    def score_rows(self) -> dict[str, dict]:
        """Score table: row label -> {metric: float, or None for '-'}."""
        out = {}
        for row in self.tables["score-table"]:
            cells = row["cells"][1:]
            out[row["attrs"]["data-row"]] = {k: (None if c["text"] == "-" else float(c["value"]))
                                             for k, c in zip(METRIC_KEYS, cells)}
        return out


def read_page(path: Path) -> Page:
    return Page(path.read_text())


def val_predictions(member: Member, data: Path):
    return predict_run(PredictConfig(member.run, str(data), "val", "cpu", tta=member.tta), progress=False)[0]


def expected_scores(preds, data: Path, tasks=("cls", "det", "seg")) -> dict:
    spec = DatasetSpec(data)
    return score_predictions(preds, spec.ground_truth("val"),
                 tasks=tasks)


def assert_row(row: dict, expected: dict) -> None:
    for key in METRIC_KEYS:
        if key in expected:
            assert row[key] == pytest.approx(expected[key], abs=1e-12), key
        else:
            assert row[key] is None, key


@pytest.fixture(scope="module")
def det_run(tiny_data, tmp_path_factory) -> Path:
    """A second run, detection only: its ensemble row scores det alone."""
    runs = tmp_path_factory.mktemp("report-runs")
    return train(tiny_train_config(tiny_data, runs, "det-only", recipe="single", tasks=("det",), seed=1),
                 progress=False)


@pytest.fixture(scope="module")
def run_page(tiny_run, tiny_data, tmp_path_factory) -> Page:
    out = tmp_path_factory.mktemp("report") / "run.html"
    written = build_report(ReportConfig(str(tiny_run), str(tiny_data), str(out), samples=SAMPLES, device="cpu"))
    assert written == out
    return read_page(out)


# -- a run -----------------------------------------------------------------------------------
def test_run_report_is_self_contained(run_page):
    assert run_page.images
    for im in run_page.images:
        prefix = "data:image/png;base64,"
        assert im["src"].startswith(prefix)
        data = base64.b64decode(im["src"][len(prefix):], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as png:
            png.load()
            assert png.format == "PNG" and png.width > 10 and png.height > 10
    for tag, attribute, value in run_page.urls:  # images embedded, links only to the page's own sections
        assert value.startswith("data:image/png;base64,") if attribute == "src" else value.startswith("#"), (tag, value)
    assert not run_page.tags & {"script", "link", "iframe", "object"}


def test_run_report_scores_the_run_as_score_does(run_page, tiny_run, tiny_data):
    rows = run_page.score_rows()
    assert list(rows) == [tiny_run.name]
    assert_row(rows[tiny_run.name], expected_scores(val_predictions(Member(str(tiny_run)), tiny_data), tiny_data))


def test_run_report_has_every_section_and_the_asked_samples(run_page, tiny_run, tiny_data):
    assert run_page.sections == ["scores", "curves", "cls", "det", "seg", "samples"]
    assert [len(run_page.of_class(c)) for c in ("curves", "confusion", "pr", "iou")] == [1, 1, 1, 1]
    spec = DatasetSpec(tiny_data)
    preds = val_predictions(Member(str(tiny_run)), tiny_data)
    # the worst first: cls by the rule written out here; det and seg by their per-image errors
    def cls_key(s):
        p = preds.cls[s.name]
        return (0, -p.max(), s.name) if int(np.argmax(p)) != s.label else (1, p[s.label], s.name)
    masks = {s.name: (seg_logits_to_mask(preds.seg[s.name], preds.sizes["seg"][s.name]), read_mask(s.mask))
             for s in spec.seg_samples("val")}
    worst = {"cls": [s.name for s in sorted(spec.cls_samples("val"), key=cls_key)][:SAMPLES],
             "det": [s.name for s in rank_det_worst(list(spec.det_samples("val")), preds, BOX_THRESHOLD)][:SAMPLES],
             "seg": [s.name for s in rank_seg_worst(list(spec.seg_samples("val")), masks, len(spec.seg_classes),
                                                    spec.ignore_index)][:SAMPLES]}
    for task, names in worst.items():
        assert [im["data-image"] for im in run_page.of_class("sample", task)] == names
    assert worst["cls"] != sorted(s.name for s in spec.cls_samples("val"))[:SAMPLES]  # not the first by name
    # each cls title states the argmax class, its probability and the truth
    truth = {s.name: s.label for s in spec.cls_samples("val")}
    for im in run_page.of_class("sample", "cls"):
        probs = preds.cls[im["data-image"]]
        k = int(np.argmax(probs))
        assert im["alt"] == (f"pred: {spec.cls_classes[k]} ({probs[k]:.2f}) / "
                             f"true: {spec.cls_classes[truth[im['data-image']]]}")


def test_run_report_tables_match_the_metric_functions(run_page, tiny_run, tiny_data):
    spec = DatasetSpec(tiny_data)
    sub = to_submission(val_predictions(Member(str(tiny_run)), tiny_data), spec.cls_classes, len(spec.seg_classes))
    gt = spec.ground_truth("val")
    ids = {im["file_name"]: im["id"] for im in gt.det["images"]}
    ap = ap50_per_category(gt.det, [{**d, "image_id": ids[d["image"]]} for d in sub.det])
    table = {int(r["attrs"]["data-category"]): r["cells"][1]["value"] for r in run_page.tables["ap-table"]}
    assert set(table) == set(spec.det_category_ids)
    for cat, value in table.items():
        assert (value is None and np.isnan(ap[cat])) or float(value) == pytest.approx(ap[cat], abs=1e-12)
    ev = SegEvaluator(len(spec.seg_classes), spec.ignore_index)
    for s in spec.seg_samples("val"):
        ev.process(sub.seg[s.name], read_mask(s.mask))
    iou = dict(zip(spec.seg_classes, ev.iou_per_class()))
    rows = run_page.tables["iou-table"]
    assert [r["attrs"]["data-class"] for r in rows] == spec.seg_classes
    for r in rows:
        value = r["cells"][1]["value"]
        expected = iou[r["attrs"]["data-class"]]
        assert (value is None and np.isnan(expected)) or float(value) == pytest.approx(expected, abs=1e-12)


# -- an ensemble spec ------------------------------------------------------------------------
def test_ensemble_report_has_each_member_then_the_blend(tiny_run, det_run, tiny_data, tmp_path):
    members = [parse_member(str(tiny_run)), parse_member(str(det_run))]
    spec = equal_spec(members)
    spec_path = tmp_path / "ensembles" / "pair.yaml"
    spec.save(spec_path)
    out = build_report(ReportConfig(str(spec_path), str(tiny_data), samples=1, device="cpu"))
    assert out == tmp_path / "ensembles" / "pair.html"
    page = read_page(out)
    rows = page.score_rows()
    assert list(rows) == [tiny_run.name, det_run.name, "blend"]
    preds = {m: val_predictions(m, tiny_data) for m in members}
    assert_row(rows[tiny_run.name], expected_scores(preds[members[0]], tiny_data))
    assert_row(rows[det_run.name], expected_scores(preds[members[1]], tiny_data, tasks=("det",)))  # cls, seg: '-'
    assert_row(rows["blend"], expected_scores(blend_spec(spec, preds), tiny_data))
    assert [im["data-run"] for im in page.of_class("curves")] == [tiny_run.name, det_run.name]
    assert [len(page.of_class("sample", t)) for t in ("cls", "det", "seg")] == [1, 1, 1]
    assert "blend" in page.sections


# -- a submission folder ---------------------------------------------------------------------
def test_submission_report_rebuilds_the_blend_and_adds_the_test_score(tiny_run, tiny_data, tmp_path):
    spec = equal_spec([Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")], (1.0, 3.0),
                              FusionConfig("wbf", 0.55))
    manifest = submit(SubmitConfig(spec, str(tiny_data), "pair", device="cpu", out_dir=str(tmp_path)), progress=False)
    folder = tmp_path / "pair"
    assert manifest.ensemble_spec().tasks == spec.tasks  # round trip
    out = build_report(ReportConfig(str(folder), str(tiny_data), samples=1, score_test=True, device="cpu"))
    assert out == folder / "report.html"
    rows = read_page(out).score_rows()
    assert list(rows) == [tiny_run.name, f"{tiny_run.name}@hflip@det+seg", "blend", "test (sealed truth)"]
    for label in manifest.val:  # the manifest's val scores, rounded to 6 decimals
        for key, value in manifest.val[label].items():
            assert rows[label][key] == pytest.approx(value, abs=1e-6)
    assert_row(rows["test (sealed truth)"], score_submission(folder, tiny_data))


def test_a_test_score_needs_a_submission(tiny_run, tiny_data, tmp_path):
    with pytest.raises(WorkbenchError, match="needs a submission folder"):
        build_report(ReportConfig(str(tiny_run), str(tiny_data), str(tmp_path / "x.html"), score_test=True,
                                  device="cpu"))
    assert not (tmp_path / "x.html").exists()


# -- the command -----------------------------------------------------------------------------
def test_command_writes_out_and_defaults_beside_the_run(tiny_run, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "pages" / "r.html"
    result = CliRunner().invoke(main, ["report", str(tiny_run), "--data", str(tiny_data), "--out", str(out),
                                                 "--samples", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.output
    assert [len(read_page(out).of_class("sample", t)) for t in ("cls", "det", "seg")] == [1, 1, 1]
    # a bare run name resolves under runs/ and the page lands in the run folder (a copy: the fixture stays clean)
    shutil.copytree(tiny_run, tmp_path / "runs" / "copy")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", "copy", "--data", str(tiny_data), "--samples", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "copy" / "report.html").is_file()
    assert "samples" not in read_page(tmp_path / "runs" / "copy" / "report.html").sections
    assert not list((tmp_path / "runs" / "copy").glob(".report.html.*"))  # no temporary file left


def test_command_names_a_missing_target_in_one_line(tiny_data, tmp_path):
    missing = str(tmp_path / "runs" / "nope")
    result = CliRunner().invoke(main, ["report", missing, "--data", str(tiny_data)])
    assert result.exit_code != 0
    assert isinstance(result.exception, WorkbenchError)  # `mtwb` prints it as one line
    message = str(result.exception)
    assert missing in message and "\n" not in message
    with pytest.raises(WorkbenchError, match="nope.yaml"):
        resolve_target(tmp_path / "nope.yaml")


# -- pure helpers ----------------------------------------------------------------------------
def test_most_confused_pairs_by_hand():
    cm = np.array([[5, 3, 0],
                   [1, 4, 3],
                   [0, 6, 2]])
    assert find_most_confused(cm, ["a", "b", "c"], top=3) == [("c", "b", 6, 6 / 8), ("a", "b", 3, 3 / 8), ("b", "c", 3, 3 / 8)]
    assert find_most_confused(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_pr_curve_of_one_hit_and_one_false_positive():
    # category 1: two true boxes, the best detection hits one, the next is a false positive
    gt = {"images": [{"id": 1, "file_name": "x.jpg", "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10]}],
          "categories": [{"id": 1, "name": "stop"}, {"id": 2, "name": "light"}]}
    sub = Submission(det=[{"image": "x.jpg", "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
                          {"image": "x.jpg", "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.8}])
    curves = compute_pr_curves(sub, GroundTruth(det=gt))
    assert curves.category_ids == [1, 2]
    # recall reaches 1/2: precision 1 at the 51 thresholds 0.00 .. 0.50, 0 beyond; no truth for category 2
    np.testing.assert_allclose(curves.precision[:, 0], np.where(curves.recall <= 0.5 + 1e-9, 1.0, 0.0))
    assert (curves.precision[:, 1] == -1).all()
    assert curves.ap50[1] == pytest.approx(51 / 101) and np.isnan(curves.ap50[2])
    assert compute_pr_curves(Submission(), GroundTruth(det=gt)) is None


def test_mask_overlay_colours_classes_and_leaves_ignored_pixels_clear():
    colors = pick_colors(3)
    mask = np.array([[0, 2], [255, 1]], np.uint8)
    overlay = overlay_mask(mask, colors, ignore_index=255, alpha=0.5)
    assert overlay.shape == (2, 2, 4)
    np.testing.assert_allclose(overlay[0, 1, :3], colors[2])
    assert overlay[1, 0, 3] == 0 and (overlay[[0, 0, 1], [0, 1, 1], 3] == 0.5).all()
    assert len({tuple(c) for c in pick_colors(43)}) == 43


def test_det_image_errors_by_hand():
    # two true boxes of class 1 (xywh) and one of class 2; predictions in xyxy pixels
    true = np.array([[0, 0, 10, 10], [20, 20, 10, 10], [50, 50, 10, 10]], np.float32)
    labels = [1, 1, 2]
    pred = np.array([[0, 0, 10, 10],      # class 1, exact: a match
                     [1, 1, 11, 11],      # class 1, IoU 81/119 = 0.68 with the first, already taken: false
                     [20, 20, 30, 30],    # class 2 on a class-1 box: false
                     [50, 50, 60, 60]],   # class 2, exact: a match
                    np.float32)
    assert det_image_errors(pred, [1, 1, 2, 2], [0.9, 0.8, 0.7, 0.6], true, labels) == (1, 2)
    # the higher score claims the box: the exact one at 0.5 loses it to the 0.68 one at 0.9 -> the exact is false
    assert det_image_errors(pred[:2], [1, 1], [0.5, 0.9], true[:1], [1]) == (0, 1)
    assert det_image_errors(np.zeros((0, 4)), [], [], true, labels) == (3, 0)
    assert det_image_errors(pred, [1, 1, 2, 2], [0.9, 0.8, 0.7, 0.6], np.zeros((0, 4)), []) == (0, 4)


def test_rank_cls_worst_by_hand():
    S = namedtuple("S", "name label")
    samples = [S("a", 0), S("b", 0), S("c", 1), S("d", 1)]
    probs = {"a": np.array([0.9, 0.1]),   # correct, sure
             "b": np.array([0.2, 0.8]),   # wrong, confident
             "c": np.array([0.6, 0.4]),   # wrong, less confident
             "d": np.array([0.45, 0.55])}  # correct, unsure
    assert [s.name for s in rank_cls_worst(samples, probs)] == ["b", "c", "d", "a"]


def test_rank_seg_worst_by_hand():
    S = namedtuple("S", "name")
    truth = np.array([[0, 0], [1, 1]])
    masks = {"perfect": (truth.copy(), truth), "half": (np.array([[0, 0], [0, 0]]), truth),  # IoU 0.5, 0 -> 0.25
             "ignored": (np.array([[1, 1], [1, 1]]), np.array([[255, 255], [1, 1]]))}  # the labelled row right: 1.0
    assert [s.name for s in rank_seg_worst([S("perfect"), S("half"), S("ignored")], masks, 2, 255)] == \
        ["half", "ignored", "perfect"]
