"""`crosscam serve` in a real browser: headless Debian Chromium through Selenium, on a demo run.

Pause camera 2, click a person's box: the results panel lists exactly the cameras and times
`crosscam query --track` gives, and its seek button moves another camera's player to the
appearance's first frame. Screenshots go to the test's temp folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from pipeline.identity.store import CameraTracks, TrackStore
from serve_runs import browser, chromium_paths, cli_json, demo_run, serving

WAIT_S = 30


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A copy of the session's demo run: the live-update test rewrites its store and adds a camera."""
    chromium_paths()  # skip before making anything when there is no browser
    copy = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(demo_run(tmp_path_factory), copy)
    return copy


@pytest.fixture(scope="module")
def page(run):
    with serving(run) as url, browser() as driver:
        driver.get(url)
        wait_for(lambda: all(int(c.get_attribute("data-frame")) >= 0 for c in canvases(driver)) and len(canvases(driver)) == 3,
                 "every camera shows a frame")
        yield driver


def canvases(driver):
    return driver.find_elements("css selector", "canvas[data-camera]")


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the page is re-rendering: stale elements
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


def camera_two_person(run: Path) -> tuple[int, int, list[float]]:
    """A cam2 track of an identity seen in several cameras, and a frame where a click at its box
    centre hits it alone: (track id, frame, box xyxy)."""
    store = TrackStore.open(run / "store")
    tracks = store.tracks()
    cams: dict[int, set[str]] = {}
    for t in tracks:
        cams.setdefault(t.identity, set()).add(t.camera)
    rows = [[float(v) for v in line.split(",")[:6]] for line in (run / "cam2" / "tracks.txt").read_text().splitlines()]
    for t in sorted((t for t in tracks if t.camera == "cam2" and len(cams[t.identity]) > 1), key=lambda t: -t.num_detections):
        for frame in range(t.first_frame + 5, t.last_frame + 1):
            boxes = {int(r[1]): [r[2], r[3], r[2] + r[4], r[3] + r[5]] for r in rows if int(r[0]) - 1 == frame}
            if t.track_id not in boxes:
                continue
            x1, y1, x2, y2 = boxes[t.track_id]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            if not any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for k, b in boxes.items() if k != t.track_id):
                return t.track_id, frame, boxes[t.track_id]
    raise AssertionError("no cam2 person of a multi-camera identity to click")


def seek_with_scrubber(driver, camera: str, frame: int) -> None:
    driver.execute_script(
        "const s = document.querySelector(`.player[data-camera='${arguments[0]}'] input[type=range]`);"
        "s.value = arguments[1]; s.dispatchEvent(new Event('input'));", camera, frame)
    wait_for(lambda: driver.find_element("css selector", f"canvas[data-camera={camera}]").get_attribute("data-frame") == str(frame),
             f"{camera} shows frame {frame}")


def at_frame_pixel(driver, camera: str, x: float, y: float, frame_width: int):
    """ActionChains at frame pixel (x, y) of the camera's canvas (offsets from the element's centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("css selector", f"canvas[data-camera={camera}]")
    scale = canvas.size["width"] / frame_width
    dx, dy = x * scale - canvas.size["width"] / 2, y * scale - canvas.size["height"] / 2
    return ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)), canvas, scale


def shown_appearances(driver) -> list[dict]:
    return [
        {"camera": e.get_attribute("data-camera"), "start_s": float(e.get_attribute("data-start-s")),
         "end_s": float(e.get_attribute("data-end-s")), "start_frame": int(e.get_attribute("data-start-frame")),
         "end_frame": int(e.get_attribute("data-end-frame"))}
        for e in driver.find_elements("css selector", "#results .appearance")
    ]


def shown_identity(driver) -> int | None:
    found = driver.find_elements("css selector", "#results h2[data-identity]")
    return int(found[0].get_attribute("data-identity")) if found else None


def test_click_a_person_in_camera_two_lists_every_camera_and_seeks_another(page, run, capsys, tmp_path):
    driver = page
    driver.save_screenshot(str(tmp_path / "1-cameras.png"))
    track, frame, (x1, y1, x2, y2) = camera_two_person(run)
    play = driver.find_element("css selector", ".player[data-camera=cam2] button")
    play.click()  # play camera 2 a moment, then pause it
    wait_for(lambda: play.text == "pause", "camera 2 plays")
    time.sleep(0.5)
    play.click()
    assert play.text == "play"
    seek_with_scrubber(driver, "cam2", frame)

    chain, _, _ = at_frame_pixel(driver, "cam2", (x1 + x2) / 2, (y1 + y2) / 2, 640)
    chain.click().perform()
    expected = cli_json(capsys, "query", run, "--track", f"cam2:{track}")
    wait_for(lambda: shown_identity(driver) == expected["identity"], f"the results show identity {expected['identity']}")
    driver.save_screenshot(str(tmp_path / "2-results.png"))
    want = [{k: a[k] for k in ("camera", "start_s", "end_s", "start_frame", "end_frame")} for a in expected["appearances"]]
    key = lambda a: (a["camera"], a["start_frame"])  # noqa: E731
    assert sorted(shown_appearances(driver), key=key) == sorted(want, key=key)
    assert len({a["camera"] for a in want}) > 1
    low = driver.find_element("css selector", "#low-score")
    low.clear()
    low.send_keys("1.01\n")  # every score is below: every appearance is marked
    wait_for(lambda: len(driver.find_elements("css selector", "#results .appearance.low")) == len(want), "low scores marked")
    low.clear()
    low.send_keys("-1\n")
    wait_for(lambda: not driver.find_elements("css selector", "#results .appearance.low"), "no low scores marked")

    other = next(a for a in expected["appearances"] if a["camera"] != "cam2")
    button = driver.find_element(
        "css selector", f"#results .appearance[data-camera={other['camera']}][data-start-frame='{other['start_frame']}'] button.seek")
    button.click()
    wait_for(lambda: driver.find_element("css selector", f"canvas[data-camera={other['camera']}]").get_attribute("data-frame")
             == str(other["start_frame"]), f"{other['camera']} is sought to frame {other['start_frame']}")
    scrubber = driver.find_element("css selector", f".player[data-camera={other['camera']}] input[type=range]")
    assert scrubber.get_attribute("value") == str(other["start_frame"])
    driver.save_screenshot(str(tmp_path / "3-sought.png"))


def test_drawing_a_box_on_a_paused_frame_finds_that_person(page, run):
    driver = page
    track, frame, (x1, y1, x2, y2) = camera_two_person(run)
    seek_with_scrubber(driver, "cam2", frame)
    driver.execute_script("document.querySelector('#results').replaceChildren()")
    chain, canvas, scale = at_frame_pixel(driver, "cam2", x1, y1, 640)
    chain.click_and_hold().move_by_offset(round((x2 - x1) * scale), round((y2 - y1) * scale)).release().perform()
    identity = TrackStore.open(run / "store").track("cam2", track).identity
    wait_for(lambda: shown_identity(driver) == identity, f"a drawn box finds identity {identity}")
    assert driver.find_element("css selector", "#results .query").text.startswith("image cam2 frame")
    # a drag released outside the video still ends there, with the box clamped to the frame
    driver.execute_script("document.querySelector('#results').replaceChildren()")
    chain, canvas, scale = at_frame_pixel(driver, "cam2", x1, y1, 640)
    chain.click_and_hold().move_by_offset(round((x2 - x1) * scale), canvas.size["height"]).release().perform()
    wait_for(lambda: driver.find_element("css selector", "#results .query").text.startswith("image cam2 frame"),
             "a drag released below the video asks about its box")


def test_keys_step_frames_and_only_the_latest_question_is_answered(page, run):
    driver = page
    from pipeline.text import clock_text  # the page's times, dates and times are `crosscam query`'s

    seconds = [59.96, 119.97, 3599.96, -24.4, -0.04, 0.25, 3725.25]
    assert driver.execute_script("return arguments[0].map(fmtSeconds)", seconds) == [clock_text(s) for s in seconds]

    cases = [(22.96, "2024-05-01 08:00:00"), (22.96, "2024-05-01 08:00:00.500000+02:00"), (-0.5, "2024-05-01 00:00:00"),
             (86399.97, "2024-12-31 00:00:00-05:30"), (0.35, "2024-05-01 08:00:05"), (0.25, "2024-05-01 08:00:05")]
    assert driver.execute_script("return arguments[0].map(([s, o]) => fmtWhen(s, o))", cases) == [clock_text(s, o) for s, o in cases]
    track, frame, _ = camera_two_person(run)
    seek_with_scrubber(driver, "cam2", frame)
    canvas = driver.find_element("css selector", "canvas[data-camera=cam2]")
    canvas.send_keys("\ue014")  # arrow right: one frame on
    wait_for(lambda: canvas.get_attribute("data-frame") == str(frame + 1), "the right arrow steps one frame")
    canvas.send_keys("\ue012")
    wait_for(lambda: canvas.get_attribute("data-frame") == str(frame), "the left arrow steps back")
    # ten presses faster than frames arrive (a held key): ten frames on, not the 4 stepped from the frame shown
    driver.execute_script("for (let i = 0; i < 10; i++) arguments[0].dispatchEvent("
                          "new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}))", canvas)
    wait_for(lambda: canvas.get_attribute("data-frame") == str(frame + 10), "ten quick presses step ten frames")
    seek_with_scrubber(driver, "cam2", frame)
    # a click where nobody is tracked says so under the player
    boxes = [[float(v) for v in line.split(",")[2:6]] for line in (run / "cam2" / "tracks.txt").read_text().splitlines()
             if int(line.split(",")[0]) - 1 == frame]
    empty = next((x, y) for x, y in [(4, 4), (636, 4), (4, 356), (636, 356), (320, 4)]
                 if not any(b[0] <= x <= b[0] + b[2] and b[1] <= y <= b[1] + b[3] for b in boxes))
    at_frame_pixel(driver, "cam2", *empty, 640)[0].click().perform()
    note = driver.find_element("css selector", ".player[data-camera=cam2] .note")
    wait_for(lambda: "no tracked person there" in note.text, "a click on nobody is explained")
    # an identity question answered late (held back 1.5 s) is overtaken by a track question
    driver.execute_script("""
        const original = window.fetch;
        window.fetch = (url, options) => String(url).includes('/api/identities/')
          ? new Promise(r => setTimeout(r, 1500)).then(() => original(url, options)) : original(url, options);
        ask({kind: 'identity', identity: arguments[0]});
        ask({kind: 'track', camera: 'cam2', track: arguments[1]});""", 1, track)
    identity = TrackStore.open(run / "store").track("cam2", track).identity
    wait_for(lambda: shown_identity(driver) == identity, "the track question's answer")
    time.sleep(2.0)  # the identity answer has come back by now, and was dropped
    assert "track cam2:" in driver.find_element("css selector", "#results .query").text
    assert shown_identity(driver) == identity
    driver.execute_script("window.location.reload()")  # the page's own fetch again
    wait_for(lambda: len(canvases(driver)) == 3 and all(int(c.get_attribute("data-frame")) >= 0 for c in canvases(driver)),
             "the page is back")


def test_bad_upload_shows_its_one_line_error(page, tmp_path):
    driver = page
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    driver.find_element("css selector", "#upload").send_keys(str(notes))
    banner = driver.find_element("css selector", "#error")
    wait_for(lambda: banner.is_displayed() and "not an image" in banner.text, "the error banner shows the 415's message")


def test_an_uploaded_photo_searches_its_largest_person_then_a_boxed_one(page, run, capsys, tmp_path):
    """An upload asked about the largest person only: a photo of several people could not be pointed at,
    nor its camera given. Now the photo stays above the players: drag a box on it, pick its camera."""
    import cv2
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    driver = page
    track, frame, (x1, y1, x2, y2) = camera_two_person(run)
    capture = cv2.VideoCapture(json.loads((run / "cam2" / "run.json").read_text())["source"])
    capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
    ok, image = capture.read()
    capture.release()
    assert ok
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), image)
    driver.execute_script(  # record each image question's form fields
        "window.sent = []; const f = window.fetch; window.fetch = (url, o) => {"
        " if (o && o.body instanceof FormData) window.sent.push([...o.body.entries()].filter(([k]) => k !== 'image'));"
        " return f(url, o); };")
    driver.find_element("css selector", "#upload").send_keys(str(photo))
    whole = cli_json(capsys, "query", run, "--image", photo)
    wait_for(lambda: shown_identity(driver) == whole["identity"], "the photo's largest person is searched at once")
    assert driver.find_element("css selector", "#results .query").text.startswith("image photo.png · ")
    assert driver.execute_script("return window.sent") == [[]]
    offered = [o.get_attribute("value") for o in Select(driver.find_element("css selector", "#photo-camera")).options]
    assert offered == ["", "cam1", "cam2", "cam3"]  # the demo equalises every camera's colours (else: hidden)
    Select(driver.find_element("css selector", "#photo-camera")).select_by_value("cam2")
    wait_for(lambda: len(driver.execute_script("return window.sent")) == 2, "choosing the camera asks again")
    canvas = driver.find_element("css selector", "#photo-canvas")
    scale = canvas.size["width"] / image.shape[1]
    driver.execute_script("document.querySelector('#results').replaceChildren()")
    ActionChains(driver).move_to_element_with_offset(
        canvas, round(x1 * scale - canvas.size["width"] / 2), round(y1 * scale - canvas.size["height"] / 2)
    ).click_and_hold().move_by_offset(round((x2 - x1) * scale), round((y2 - y1) * scale)).release().perform()
    wait_for(lambda: len(driver.execute_script("return window.sent")) == 3, "the drawn box asks")
    fields = dict(driver.execute_script("return window.sent")[2])
    assert fields["camera"] == "cam2"
    box = [int(v) for v in fields["box"].split(",")]
    assert max(abs(a - b) for a, b in zip(box, (x1, y1, x2, y2))) <= 2 / scale + 1, (box, (x1, y1, x2, y2))
    boxed = cli_json(capsys, "query", run, "--image", photo, "--box", fields["box"], "--camera", "cam2")
    assert boxed["identity"] == TrackStore.open(run / "store").track("cam2", track).identity
    wait_for(lambda: shown_identity(driver) == boxed["identity"], f"the boxed person's identity {boxed['identity']}")
    driver.save_screenshot(str(tmp_path / "photo-page.png"))
    driver.find_element("css selector", "#photo-close").click()
    assert not driver.find_element("css selector", "#photo").is_displayed()
    # a photo refused after another one does not leave the other to draw on
    driver.find_element("css selector", "#upload").send_keys(str(photo))
    wait_for(lambda: driver.find_element("css selector", "#photo").is_displayed(), "the photo shows again")
    (tmp_path / "notes.txt").write_text("not an image")
    driver.find_element("css selector", "#upload").send_keys(str(tmp_path / "notes.txt"))
    wait_for(lambda: "not an image" in driver.find_element("css selector", "#error").text, "the refusal shows")
    assert not driver.find_element("css selector", "#photo").is_displayed()


def test_the_no_store_banner_goes_when_the_store_appears(page):
    """A page opened before `crosscam associate` wrote the store kept saying there was none."""
    driver = page
    # the page's own next poll sees a run without a store (a refresh called here raced that poll's:
    # hidden again before it could be seen, or shown after the poll's had ended and never hidden)
    driver.execute_script(
        "const real = window.fetch; window.fetch = async (url, options) => { const response = await real(url, options);"
        " if (!String(url).startsWith('/api/status')) return response;"
        " window.fetch = real; const status = await response.json();"
        " return new Response(JSON.stringify({...status, generation: null}), {headers: {'content-type': 'application/json'}}); };")
    banner = driver.find_element("css selector", "#error")
    wait_for(lambda: banner.is_displayed() and banner.text.startswith("no track store yet"), "the no-store banner shows")
    assert "crosscam associate" in banner.text
    wait_for(lambda: not banner.is_displayed(), "the banner goes once the next poll finds the store")


def test_identities_gallery_opens_the_results_panel(page, run, capsys, tmp_path):
    driver = page
    driver.find_element("css selector", "#tab-identities").click()
    wait_for(lambda: driver.find_elements("css selector", ".card"), "the gallery shows identities")
    cards = driver.find_elements("css selector", ".card")
    assert len(cards) == len(TrackStore.open(run / "store").identities())
    wait_for(lambda: driver.execute_script(
        "return [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"),
        "every thumbnail is served and shown")
    assert "not a person?" in cards[-1].text and "not a person?" not in cards[0].text
    driver.save_screenshot(str(tmp_path / "gallery.png"))
    identity = int(cards[0].get_attribute("data-identity"))
    cards[0].click()
    wait_for(lambda: shown_identity(driver) == identity, f"the results show identity {identity}")
    expected = cli_json(capsys, "query", run, "--identity", identity)
    assert len(shown_appearances(driver)) == len(expected["appearances"])
    selected = driver.find_elements("css selector", "#gallery .card.selected")  # the open card stands out
    assert [int(c.get_attribute("data-identity")) for c in selected] == [identity]
    driver.find_element("css selector", "#tab-cameras").click()


def test_the_question_is_kept_in_the_address(page, run):
    """Back left the page and a reload forgot the question: the address holds it now, so back and
    forward step through the questions and a reload or a shared link asks it again."""
    driver = page
    store = TrackStore.open(run / "store")
    track, frame, box = camera_two_person(run)
    identity = store.track("cam2", track).identity
    other = next(i for i in store.identities() if i != identity)
    driver.execute_script("ask({kind: 'identity', identity: arguments[0]})", other)
    wait_for(lambda: shown_identity(driver) == other, f"identity {other}")
    driver.execute_script("ask({kind: 'track', camera: 'cam2', track: arguments[0]})", track)
    wait_for(lambda: shown_identity(driver) == identity, f"track cam2:{track}")
    assert driver.execute_script("return location.hash") == f"#track=cam2:{track}"
    driver.back()
    wait_for(lambda: shown_identity(driver) == other, "back asks the question before")
    assert driver.execute_script("return location.hash") == f"#identity={other}"
    driver.forward()
    wait_for(lambda: shown_identity(driver) == identity, "forward asks the later one again")
    driver.refresh()
    wait_for(lambda: shown_identity(driver) == identity, "a reload asks it again")
    address = driver.current_url.split("#")[0] + f"#box=cam2:{frame}:" + ",".join(str(round(v)) for v in box)
    driver.get("about:blank")
    driver.get(address)  # a link someone shared
    wait_for(lambda: shown_identity(driver) == identity, "a shared link to a box asks about it")
    wait_for(lambda: len(canvases(driver)) == 3, "the page is whole")
    driver.get(address.split("#")[0] + "#identity=abc")  # a link cut short: said, not silently ignored
    wait_for(lambda: "#identity=abc: not a question the page knows" in driver.find_element("css selector", "#error").text,
             "a malformed address is said")
    driver.get(address.split("#")[0] + "#track=cam2:99999")  # a question with no answer: said once, at the top
    wait_for(lambda: "99999" in driver.find_element("css selector", "#error").text, "an unknown track is said")
    wait_for(lambda: "the message above says why" in driver.find_element("css selector", "#results").text,
             "the panel points to it")
    assert "99999" not in driver.find_element("css selector", "#results").text
    driver.execute_script("ask({kind: 'identity', identity: arguments[0]})", other)
    wait_for(lambda: shown_identity(driver) == other, f"identity {other}")
    driver.execute_script("history.pushState(null, '', location.pathname); history.pushState(null, '', '#identity=' + arguments[0]);"
                          " history.back()", other)  # back to the address without a question
    wait_for(lambda: shown_identity(driver) is None, "an address without a question clears the answer")


def test_a_question_is_asked_again_when_a_deleted_store_comes_back(page, run):
    """The page said "Pick the person again" and forgot the question: the store made again
    (`crosscam associate` after deleting store/) answered nothing until the person was picked again."""
    driver = page
    identity = TrackStore.open(run / "store").identities()[0]
    driver.execute_script("ask({kind: 'identity', identity: arguments[0]})", identity)
    wait_for(lambda: shown_identity(driver) == identity, f"identity {identity}")
    (run / "store").rename(run.parent / "store.away")
    try:
        wait_for(lambda: "no track store yet" in driver.find_element("css selector", "#error").text, "the store is said gone")
    finally:
        (run.parent / "store.away").rename(run / "store")
    wait_for(lambda: shown_identity(driver) == identity, "the question is asked again")
    # frames from annotated.mp4 of a --stride 3 run show the tracked frame at or before: so do the boxes
    _, frame, _ = camera_two_person(run)
    kept = frame - frame % 3  # a tracked frame of a --stride 3 run, and the two it stands for
    boxes = driver.execute_async_script(
        "const [kept, done] = [arguments[0], arguments[arguments.length - 1]], p = S.players.get('cam2');"
        "const camera = p.camera; p.camera = {...camera, frames_from: 'annotated.mp4', stride: 3};"
        "Promise.all([p.boxes(kept), p.boxes(kept + 1), p.boxes(kept + 2)]).then(b => { p.camera = camera; done(b); });",
        kept)
    assert boxes[0] and boxes[0] == boxes[1] == boxes[2]


def test_the_page_notices_a_reassociation_and_a_new_camera(page, run):
    """Live runs: the store is rewritten (identities renumbered) and a camera folder appears,
    with the server running; the page picks up both without a reload."""
    driver = page
    track, frame, (x1, y1, x2, y2) = camera_two_person(run)
    seek_with_scrubber(driver, "cam2", frame)
    chain, _, _ = at_frame_pixel(driver, "cam2", (x1 + x2) / 2, (y1 + y2) / 2, 640)
    chain.click().perform()
    store = TrackStore.open(run / "store")
    before = store.track("cam2", track).identity
    wait_for(lambda: shown_identity(driver) == before, "the results show the clicked person")
    driver.execute_script("document.querySelector('#camera-filter input[value=cam1]').checked = true")
    summaries, ids = store.summaries()
    records = {c.name: c for c in store.cameras()}
    store.write([CameraTracks(records[n], [s for s in summaries if s.camera == n],
                              [i + 1000 for s, i in zip(summaries, ids) if s.camera == n]) for n in records])
    wait_for(lambda: shown_identity(driver) == before + 1000, "the results follow the new identity ids")
    assert "store updated" in driver.find_element("css selector", "#live").text
    assert driver.execute_script("return [...document.querySelectorAll('#camera-filter input:checked')].map(b => b.value)") \
        == ["cam1"], "the gallery's camera filter is kept across the update"
    shutil.copytree(run / "cam3", run / "cam4", ignore=shutil.ignore_patterns("run.json"))
    whole = (run / "cam3" / "run.json").read_text()
    (run / "cam4" / "run.json").write_text("")  # caught half copied: the cameras answer 409 ...
    wait_for(lambda: driver.find_element("css selector", "#live").text.startswith("server says"), "a poll meets it")
    (run / "cam4" / "run.json").write_text(whole)  # ... and the next poll tries again (the page kept 3 players)
    wait_for(lambda: len(canvases(driver)) == 4, "a player for the new camera")
    staged = run.parent / "cam5"  # one tracked for 20 frames only (--max-frames 20): its header says so
    shutil.copytree(run / "cam3", staged)
    record = json.loads((staged / "run.json").read_text())
    (staged / "run.json").write_text(json.dumps({**record, "frames_read": 20}))
    staged.rename(run / "cam5")
    wait_for(lambda: len(canvases(driver)) == 5, "a player for the camera tracked in part")
    header = driver.find_element("css selector", ".player[data-camera=cam5] h2 small").text
    assert "tracked to frame 19" in header, header


def test_a_token_link_works_and_leaves_the_address(run):
    """The page opened from the printed `/?token=` URL takes the token out of its address (and
    history) once the cookie carries it; its frames and answers still come."""
    identity = TrackStore.open(run / "store").identities()[0]  # (the live-update test renumbers them)
    with serving(run, "--token", "s3cret", "--workers", "1") as url, browser() as driver:
        assert url.endswith("/?token=s3cret")
        driver.get(url + f"#identity={identity}")
        wait_for(lambda: shown_identity(driver) == identity, "the address's question is answered")
        assert driver.execute_script("return location.search + location.hash") == f"#identity={identity}"
        cameras = len(list(run.glob("*/run.json")))  # (the live-update test adds one)
        wait_for(lambda: len(canvases(driver)) == cameras and all(int(c.get_attribute("data-frame")) >= 0 for c in canvases(driver)),
                 "every camera shows a frame, through the cookie")
