"""The studio in headless Chromium: sign in, a dataset's error line, a fine-tune whose curve
and events update without a reload, a member key that cannot reach the keys page, answers
marked and corrected in the playground, and a citation that opens its chunk and says why it was
retrieved."""

from __future__ import annotations

import json
import re
import time

from tests.browser.conftest import shot

WAIT_S = 120


def wait(driver, what, timeout=WAIT_S, every=0.2):
    """Poll ``what(driver)`` until it is truthy; return it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = what(driver)
        except (StaleElementReferenceException, NoSuchElementException):
            got = None  # the page is being replaced: look again
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; page: {driver.current_url}\n"
                                 + driver.find_element("tag name", "main").text[:2000])
        time.sleep(every)


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def sign_in(driver, base, key):
    driver.delete_all_cookies()
    driver.get(base + "/signin")
    driver.find_element("id", "key").send_keys(key)
    driver.find_element("css selector", "#signin-form button").click()
    wait(driver, lambda d: css(d, "#signout"))


def rows(n, bad_line=None):
    out = []
    for i in range(1, n + 1):
        msgs = [{"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}: red and blue"}]
        if i == bad_line:
            msgs[1]["role"] = "robot"
        out.append(json.dumps({"messages": msgs}))
    return "\n".join(out) + "\n"


def upload(driver, base, tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    driver.get(base + "/datasets")
    driver.find_element("id", "upload-file").send_keys(str(p))
    driver.find_element("css selector", "#upload-form button").click()
    wait(driver, lambda d: "/datasets/file-" in d.current_url and css(d, "#verdict"))
    return driver.current_url.rsplit("/", 1)[-1].split("?")[0]


def test_sign_in_with_a_wrong_key_then_the_right_one(driver, studio):
    base, keys, _ = studio
    driver.delete_all_cookies()
    driver.get(base + "/")
    assert "/signin" in driver.current_url
    driver.find_element("id", "key").send_keys("sk-afinar-wrong")
    driver.find_element("css selector", "#signin-form button").click()
    assert "Incorrect API key" in wait(driver, lambda d: css(d, "#signin-error"))[0].text
    shot(driver, "signin")
    sign_in(driver, base, keys["admin"])
    assert "Overview" in driver.find_element("tag name", "h1").text
    assert "tiny" in driver.find_element("id", "models").text
    assert driver.get_cookie("afinar_studio")["httpOnly"]


def test_a_member_key_cannot_reach_the_keys_page(driver, studio):
    base, keys, _ = studio
    sign_in(driver, base, keys["support"])
    assert not css(driver, 'nav a[href="/keys"]')
    driver.get(base + "/keys")
    assert "only an admin key may list API keys" in driver.find_element("id", "page-error").text
    sign_in(driver, base, keys["admin"])
    driver.get(base + "/keys")
    assert "ann" in driver.find_element("id", "keys").text
    shot(driver, "keys")


def test_a_dataset_with_an_error_shows_its_line(driver, studio, tmp_path):
    base, keys, _ = studio
    sign_in(driver, base, keys["admin"])
    upload(driver, base, tmp_path, "support.jsonl", rows(20, bad_line=7))
    driver.get(driver.current_url.split("?")[0] + "?model=tiny")
    errors = driver.find_element("id", "errors").text
    assert "invalid_role" in errors or "role" in errors
    first = css(driver, "#errors table.issues tr")[1].text
    assert first.startswith("7 ") and "robot" in first, first
    assert not driver.find_element("id", "use-for-training").is_enabled()
    shot(driver, "dataset-errors")


def test_a_fine_tune_updates_its_curve_and_events_without_a_reload(driver, studio, tmp_path):
    base, keys, _ = studio
    sign_in(driver, base, keys["admin"])
    upload(driver, base, tmp_path, "train.jsonl", rows(24))
    driver.get(driver.current_url.split("?")[0] + "?model=tiny")
    shot(driver, "dataset")
    driver.find_element("id", "use-for-training").click()
    wait(driver, lambda d: "/fine-tune" in d.current_url and css(d, "#ft-form"))
    driver.get(driver.current_url + "&model=tiny")
    for name, value in (("n_epochs", "1"), ("batch_size", "2")):
        box = driver.find_element("name", name)
        box.clear()
        box.send_keys(value)
    auto = "epochs 1, batch 2"  # the estimate follows what was typed (auto shown resolved first)
    estimate = wait(driver, lambda d: [e.text for e in css(d, "#estimate-text")
                                       if auto in e.text])[0]
    assert "24 examples" in estimate and "12 steps" in estimate, estimate
    shot(driver, "fine-tune")
    driver.find_element("id", "ft-launch").click()
    wait(driver, lambda d: "/jobs/ftjob-" in d.current_url)
    driver.execute_script("window.__same_page = true")

    def points(d):
        lines = css(d, '#loss-chart polyline[data-name="training loss"]')
        return len(lines[0].get_attribute("points").split()) if lines else 0

    # the page as first drawn: the worker is still starting, so fewer than 12 points (a tiny
    # job's steps can then all arrive in one update, so "more than at first sight" is not asked)
    initial = points(driver)
    wait(driver, lambda d: d.find_element("id", "job-status").text == "succeeded", timeout=180)
    wait(driver, lambda d: points(d) == 12, timeout=30)
    assert initial < 12, "the job had finished before its page was drawn"
    assert driver.execute_script("return window.__same_page") is True  # never reloaded
    events = driver.find_element("id", "events").text
    assert "Step 12/12" in events, events[:500]
    wait(driver, lambda d: "The job has successfully completed" in d.find_element(
        "id", "events").text, timeout=30)
    assert css(driver, "#checkpoints tr.ck") and "chat with it" in driver.find_element(
        "id", "job-model").text
    wait(driver, lambda d: css(d, "#manifest"))
    shot(driver, "job")
    driver.get(base + "/")
    shot(driver, "overview")


def test_two_models_side_by_side_stream_the_same_prompt(driver, studio):
    base, keys, _ = studio
    sign_in(driver, base, keys["support"])
    driver.get(base + "/playground?model=tiny&model=tiny-b")
    cols = [c for c in css(driver, ".pg-col") if c.is_displayed()]
    assert len(cols) == 2
    driver.find_element("id", "pg-prompt").send_keys("Which colours?")
    box = driver.find_element("id", "pg-max")
    box.clear()
    box.send_keys("12")
    driver.find_element("id", "pg-send").click()
    wait(driver, lambda d: all(c.find_element("css selector", ".meta").text for c in cols))
    for c in cols:
        assert int(c.get_attribute("data-chunks")) > 2  # streamed in pieces, not at once
        assert "tokens in" in c.find_element("css selector", ".meta").text
        assert c.find_element("css selector", ".answer").text
    shot(driver, "playground")


def feedback_rows(request_id):
    from afinar.store.access import Caller
    from afinar.store.feedback import Feedback

    return Feedback().items(Caller(None, "test", admin=True, owner=True), request_id=request_id)


def answered(driver, cols):
    """Wait until every column has its answer and its feedback controls; their completion
    ids."""
    wait(driver, lambda d: all(c.find_element("css selector", ".meta").text
                               and c.find_element("css selector", ".fb").is_displayed()
                               for c in cols))
    return [c.get_attribute("data-completion") for c in cols]


def test_answers_are_marked_down_and_corrected_in_the_playground(driver, studio):
    from typer.testing import CliRunner

    from afinar.cli import app as cli

    base, keys, _ = studio
    sign_in(driver, base, keys["support"])
    driver.get(base + "/playground?model=tiny&model=tiny-b")
    cols = [c for c in css(driver, ".pg-col") if c.is_displayed()]
    assert not any(c.find_element("css selector", ".fb").is_displayed() for c in cols)
    driver.find_element("id", "pg-prompt").send_keys("Which colour is the sky?")
    box = driver.find_element("id", "pg-max")
    box.clear()
    box.send_keys("6")
    driver.find_element("id", "pg-send").click()
    down, fixed = answered(driver, cols)
    assert down.startswith("chatcmpl-") and fixed.startswith("chatcmpl-") and down != fixed

    cols[0].find_element("css selector", ".fb-down").click()
    wait(driver, lambda d: cols[0].get_attribute("data-feedback") == "down")
    assert "thumbs down" in cols[0].find_element("css selector", ".fb-state").text
    assert cols[0].find_element("css selector", ".fb-down").get_attribute(
        "aria-pressed") == "true"
    cols[1].find_element("css selector", ".fb-edit").click()
    text = cols[1].find_element("css selector", ".fb-correct textarea")
    assert text.get_attribute("value") == cols[1].find_element(
        "css selector", ".answer").text  # the answer, to edit
    text.clear()
    text.send_keys("Blue, on a clear day.")
    cols[1].find_element("css selector", ".fb-save").click()
    wait(driver, lambda d: cols[1].get_attribute("data-feedback") == "corrected")
    assert not cols[1].find_element("css selector", ".fb-correct").is_displayed()
    shot(driver, "playground-feedback")

    (f, req), = feedback_rows(down)
    assert (f.type, f.rating, f.correction, f.choice_index) == ("rating", -1, None, 0)
    assert (f.key_name, f.project_id, req.owner_groups, req.model) == (
        "ann", "default", ["support"], "tiny")
    (f, req), = feedback_rows(fixed)
    assert (f.type, f.rating, f.correction) == ("correction", None, "Blue, on a clear day.")
    assert (f.key_name, req.owner_groups, req.model) == ("ann", ["support"], "tiny-b")
    listed = CliRunner().invoke(cli, ["feedback", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {(x["request_id"], x["type"]) for x in json.loads(listed.output)} >= {
        (down, "rating"), (fixed, "correction")}


class Quoting:
    """Stands in for the model in grounded answers (the tiny random model cannot cite): the
    Wi-Fi sentence, citing the source number the prompt gave wifi.md."""

    def __init__(self, lm):
        pass

    def chat(self, messages, params=None):
        from afinar.models import GenerationResult

        prompt = "\n".join(m["content"] for m in messages)
        m = re.search(r"\[(\d+)\] from wifi\.md", prompt)
        text = f"Hold the reset button for ten seconds [{m.group(1)}]." if m else "No idea."
        return GenerationResult(text, "stop", 100, 9, 0)


def test_a_citation_opens_the_cited_chunk_and_why_it_was_retrieved(driver, studio, tmp_path,
                                                                   monkeypatch):
    from selenium.webdriver.support.ui import Select

    from tests.live_server import client

    base, keys, _ = studio
    ann = client(base, keys["support"])
    docs = {"wifi.md": "# Router\n\n## Wi-Fi\n\nTo reset the Wi-Fi, hold the reset button "
                       "for ten seconds.\n",
            "billing.md": "# Billing\n\n## Address\n\nTo change your billing address, open "
                          "the portal.\n"}
    ids = [ann.files.create(file=(n, t.encode()), purpose="assistants").id
           for n, t in docs.items()]
    store = ann.vector_stores.create(name="router help", file_ids=ids)
    assert store.file_counts.completed == 2
    monkeypatch.setattr("afinar.server.routes_responses.Generator", Quoting)

    sign_in(driver, base, keys["support"])
    driver.get(base + "/playground?model=tiny")
    cols = [c for c in css(driver, ".pg-col") if c.is_displayed()]
    Select(cols[0].find_element("css selector", ".pg-kb")).select_by_visible_text(
        "router help")
    driver.find_element("id", "pg-prompt").send_keys("How do I reset the Wi-Fi?")
    box = driver.find_element("id", "pg-max")
    box.clear()
    box.send_keys("6")
    driver.find_element("id", "pg-send").click()
    grounded, _ = answered(driver, cols)
    answer = cols[0].find_element("css selector", ".answer").text
    assert answer.startswith("Hold the reset button for ten seconds [")
    cite = cols[0].find_element("css selector", ".cites li a")
    assert cite.text == "wifi.md"
    cols[0].find_element("css selector", ".fb-up").click()  # a grounded answer is rated too
    wait(driver, lambda d: cols[0].get_attribute("data-feedback") == "up")
    (f, _), = feedback_rows(grounded)
    assert (f.type, f.rating, f.key_name) == ("rating", 1, "ann")

    here = driver.current_window_handle
    cite.click()  # opens in a new tab
    wait(driver, lambda d: len(d.window_handles) == 2)
    driver.switch_to.window([h for h in driver.window_handles if h != here][0])
    try:
        wait(driver, lambda d: css(d, "#chunk-text"))
        assert driver.find_element("tag name", "h1").text == "Chunk 1 of wifi.md"
        assert "hold the reset button for ten seconds" in driver.find_element(
            "id", "chunk-text").text
        why = driver.find_element("id", "why").text
        assert "How do I reset the Wi-Fi?" in why and "ranks this passage #1 of 2" in why, why
        assert "lexical (BM25)" in why and "dense (cosine)" in why
        assert "Hold the reset button for ten seconds" in why  # the sentence it was cited for
        assert re.search(r"support\s+100 % of the sentence's content words", why), why
        shot(driver, "chunk")
    finally:
        driver.close()
        driver.switch_to.window(here)


def test_a_knowledge_base_searched_as_two_groups(driver, studio, tmp_path):
    base, keys, _ = studio
    sign_in(driver, base, keys["admin"])
    driver.get(base + "/kb")
    driver.find_element("id", "kb-name").send_keys("help desk")
    driver.find_element("css selector", "#kb-create button").click()
    wait(driver, lambda d: "/kb/vs_" in d.current_url)
    store = driver.current_url
    docs = {"wifi.md": ("# Router\n\n## Wi-Fi\n\nTo reset the Wi-Fi, hold the reset button "
                        "for ten seconds.\n", "support"),
            "billing.md": ("# Billing\n\n## Address\n\nTo reset your billing address, open "
                           "the portal.\n", "billing")}
    for name, (text, group) in docs.items():
        (tmp_path / name).write_text(text)
        driver.find_element("id", "kb-files").send_keys(str(tmp_path / name))
        driver.find_element("id", "kb-groups").send_keys(group)
        driver.find_element("css selector", "#kb-upload button").click()
        wait(driver, lambda d, n=name: n in d.find_element("tag name", "main").text
             and css(d, "#docs") and n in d.find_element("id", "docs").text, timeout=180)
    assert driver.find_element("id", "docs").text.count("completed") == 2

    def search(as_group=None):
        driver.find_element("id", "kb-q").clear()
        driver.find_element("id", "kb-q").send_keys("reset")
        if as_group:
            from selenium.webdriver.support.ui import Select
            Select(driver.find_element("id", "kb-as")).select_by_visible_text(as_group)
        driver.find_element("css selector", "#kb-search button").click()
        rows = wait(driver, lambda d: css(d, "#hits tr.hit") or css(d, "#kb-hits .empty"))
        return {r.find_elements("css selector", "td")[0].text for r in rows
                if r.tag_name == "tr"}

    assert search() == {"wifi.md", "billing.md"}
    assert "Router › Wi-Fi" in driver.find_element("id", "hits").text
    shot(driver, "knowledge-base")
    assert search("billing") == {"billing.md"}
    for key, expected in (("support", {"wifi.md"}), ("billing", {"billing.md"})):
        sign_in(driver, base, keys[key])
        driver.get(store)
        assert not css(driver, "#kb-as")  # only admins search as another group
        assert search() == expected


def test_an_evaluation_report_opens(driver, studio, tmp_path):
    base, keys, _ = studio
    sign_in(driver, base, keys["admin"])
    fid = upload(driver, base, tmp_path, "held-out.jsonl", rows(4))
    driver.get(base + "/evals")
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element("name", "test_file")).select_by_value(fid)
    Select(driver.find_element("name", "model")).select_by_visible_text("tiny")
    driver.find_element("name", "name").send_keys("smoke test")
    box = driver.find_element("name", "max_tokens")
    box.clear()
    box.send_keys("4")
    driver.find_element("css selector", "#eval-form button.primary").click()
    wait(driver, lambda d: "/evals/evalrun-" in d.current_url)
    wait(driver, lambda d: d.find_element("id", "eval-status").text == "succeeded",
         timeout=180)
    assert driver.find_element("id", "eval-count").text == "4 of 4 answers"
    frame = wait(driver, lambda d: [f for f in css(d, "#report") if f.get_attribute("src")])[0]
    shot(driver, "evaluation")
    driver.switch_to.frame(frame)
    try:
        body = wait(driver, lambda d: d.find_element("tag name", "body").text)
        assert "base" in body and "normalized_exact_match" in body.replace(" ", "_") or \
            "exact" in body.lower()
    finally:
        driver.switch_to.default_content()


def test_every_page_fits_800_pixels(driver, studio):
    base, keys, _ = studio
    sign_in(driver, base, keys["admin"])
    driver.set_window_size(800, 900)
    try:
        for path in ("/", "/datasets", "/fine-tune", "/playground", "/kb", "/evals", "/keys"):
            driver.get(base + path)
            wide = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            assert wide[0] <= wide[1] + 1, f"{path} scrolls sideways at 800 px: {wide}"
    finally:
        driver.set_window_size(1280, 900)
